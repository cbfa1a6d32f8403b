"""``fence_haos_qmp`` (the console script of :mod:`haos.cluster.fencing.qmp_agent`) through
:class:`FenceAgentFencer`, unchanged, against real QEMU processes.

Each guest is a small q35 machine under TCG without a disk (its firmware finds nothing to boot
and waits): two QMP monitors, one for the agent (``<plug>.sock`` in a directory, as the agent's
``qmp_dir`` expects) and one the test watches through (events go to every monitor, so the test
sees the agent's ``RESET`` there).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from haos.cluster.fencing.agent import AgentDevice, FenceAgentFencer
from haos.cluster.fencing.qmp_agent import metadata
from haos.cluster.fencing.types import FenceError
from haos.config.model import NodeSpec
from haos.errors import UnavailableError
from haos.proc import ENV
from haoslab.vm.qmp import Qmp

pytestmark = pytest.mark.timeout(120)

# The console script pip installs beside the interpreter (pyproject's [project.scripts]).
AGENT = str(Path(sys.executable).parent / "fence_haos_qmp")
NODE = NodeSpec("g1", 1, "n1")


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    qmp_dir: Path
    control: Qmp

    def fencer(self, timeout: float = 30.0, **options: str) -> FenceAgentFencer:
        opts = {"qmp_dir": str(self.qmp_dir), "plug": NODE.name, **options}
        return FenceAgentFencer({NODE.name: AgentDevice.of(AGENT, **opts)}, timeout=timeout)

    def running(self) -> bool:
        return bool(self.control.execute("query-status")["running"])


def _connect(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> Qmp:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Qmp(path, timeout=10.0)
        except UnavailableError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    qmp_dir = tmp_path / "qmp"
    qmp_dir.mkdir()
    argv = [
        "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "64", "-nodefaults",
        "-display", "none", "-no-user-config",
        "-qmp", f"unix:{qmp_dir / 'g1.sock'},server=on,wait=off",
        "-qmp", f"unix:{tmp_path / 'control.sock'},server=on,wait=off",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=ENV)
    try:
        control = _connect(tmp_path / "control.sock", proc)
        with control:
            yield Guest(proc, qmp_dir, control)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_metadata_and_validate_all_pass_the_fencers_check(guest: Guest) -> None:
    asyncio.run(guest.fencer().check(NODE))
    assert "<resource-agent" in metadata()


def test_check_names_an_option_the_agent_does_not_have(guest: Guest) -> None:
    with pytest.raises(FenceError, match="has no parameter qmp_path"):
        asyncio.run(guest.fencer(qmp_path="/x").check(NODE))


def test_check_fails_when_options_do_not_say_where_the_guest_is(guest: Guest) -> None:
    fencer = guest.fencer(qmp_socket="/run/other.sock")  # and qmp_dir: two places
    with pytest.raises(FenceError, match="exactly one of qmp_socket, qmp_dir"):
        asyncio.run(fencer.check(NODE))


def test_status_of_a_running_guest_is_on(guest: Guest) -> None:
    assert asyncio.run(guest.fencer().status(NODE)) == "on"


def test_off_makes_qemu_exit_and_status_then_says_off(guest: Guest) -> None:
    fencer = guest.fencer()
    result = asyncio.run(fencer.fence(NODE, "off"))
    assert result.ok, result.detail
    # done means done: the process has exited by the time the fencer reports success
    assert guest.proc.wait(timeout=1) == 0
    assert not (guest.qmp_dir / "g1.sock").exists()
    assert asyncio.run(fencer.status(NODE)) == "off"
    again = asyncio.run(fencer.fence(NODE, "off"))  # fencing is idempotent
    assert again.ok, again.detail


def test_off_of_a_guest_killed_without_cleanup_succeeds_as_already_off(guest: Guest) -> None:
    guest.proc.kill()  # SIGKILL: the socket file stays, nobody listens on it
    guest.proc.wait(timeout=30)
    assert (guest.qmp_dir / "g1.sock").exists()
    fencer = guest.fencer()
    assert asyncio.run(fencer.status(NODE)) == "off"
    result = asyncio.run(fencer.fence(NODE, "off"))
    assert result.ok, result.detail


def test_reboot_resets_the_guest_and_it_runs_on(guest: Guest) -> None:
    guest.control.events.clear()
    result = asyncio.run(guest.fencer().fence(NODE, "reboot"))
    assert result.ok, result.detail
    event = guest.control.wait_event("RESET", timeout=10)
    assert event["data"]["reason"] == "host-qmp-system-reset"
    assert guest.proc.poll() is None and guest.running()


def test_reboot_of_a_stopped_guest_resets_it_and_lets_it_run_again(guest: Guest) -> None:
    guest.control.execute("stop")
    assert not guest.running()
    result = asyncio.run(guest.fencer().fence(NODE, "reboot"))
    assert result.ok, result.detail
    guest.control.wait_event("RESET", timeout=10)
    assert guest.running()


def test_off_by_stop_halts_the_vcpus_at_once_and_on_lets_them_run(guest: Guest) -> None:
    fencer = guest.fencer(off_method="stop")
    guest.control.events.clear()
    result = asyncio.run(fencer.fence(NODE, "off"))
    assert result.ok, result.detail
    assert guest.proc.poll() is None and not guest.running()
    names = [e["event"] for e in guest.control.events]
    assert names.index("STOP") < names.index("RESET"), names  # halted, then reset
    assert asyncio.run(fencer.status(NODE)) == "off"
    on = asyncio.run(fencer.run(NODE, "on"))
    assert on.returncode == 0, on.reason()
    assert guest.running()


def test_list_names_the_guests_of_the_socket_directory(guest: Guest) -> None:
    fencer = FenceAgentFencer(
        {NODE.name: AgentDevice.of(AGENT, qmp_dir=str(guest.qmp_dir))}, timeout=30
    )
    listed = asyncio.run(fencer.run(NODE, "list-status"))
    assert listed.returncode == 0, listed.reason()
    assert listed.stdout.splitlines() == ["g1,,ON"]


def test_monitor_that_never_greets_fails_within_the_agents_timeout(tmp_path: Path) -> None:
    # Something listens (so it is not "off") but never speaks QMP: a hung QEMU, say.
    path = tmp_path / "g1.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(4)
        device = AgentDevice.of(
            AGENT, qmp_dir=str(tmp_path), plug="g1", login_timeout="1", power_timeout="1"
        )
        fencer = FenceAgentFencer({NODE.name: device}, timeout=30)
        started = time.monotonic()
        result = asyncio.run(fencer.fence(NODE, "off"))
        took = time.monotonic() - started
    assert not result.ok
    assert "no answer from QEMU in time" in result.detail, result.detail
    assert took < 10, took


def test_unreachable_tcp_monitor_is_a_failure_not_off(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = AgentDevice.of(AGENT, ip="127.0.0.1", ipport=str(port))
    fencer = FenceAgentFencer({NODE.name: device}, timeout=30)
    result = asyncio.run(fencer.fence(NODE, "off"))
    assert not result.ok and "cannot connect" in result.detail, result.detail
    with pytest.raises(FenceError):
        asyncio.run(fencer.status(NODE))


def test_off_over_tcp_quits_a_qemu_whose_monitor_listens_on_tcp(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
        "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=ENV)
    try:
        fencer = FenceAgentFencer(
            {NODE.name: AgentDevice.of(AGENT, ip="127.0.0.1", ipport=str(port))}, timeout=30
        )
        _wait_port(port, proc)
        assert asyncio.run(fencer.status(NODE)) == "on"
        result = asyncio.run(fencer.fence(NODE, "off"))
        assert result.ok, result.detail
        assert proc.wait(timeout=1) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return  # QEMU's monitor takes one client: this one leaves again at once
        assert proc.poll() is None and time.monotonic() < deadline, "QEMU's monitor never came"
        time.sleep(0.05)


class SlirpLikeForwarder:
    """What a guest's fencing NIC does on the host (QEMU's ``guestfwd=...-cmd:``): accept a
    TCP connection and run :mod:`haoslab.vm.qmp_forward` with it as stdin, stdout and stderr."""

    def __init__(self, target: Path) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.target = target
        self.children: list[subprocess.Popen[bytes]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                argv = [sys.executable, "-m", "haoslab.vm.qmp_forward", str(self.target)]
                fd = conn.fileno()
                self.children.append(subprocess.Popen(argv, stdin=fd, stdout=fd, stderr=fd))

    def close(self) -> None:
        self.server.close()
        for child in self.children:
            child.wait(timeout=30)


def test_off_through_the_guests_forwarder_quits_qemu_and_then_reads_off(guest: Guest) -> None:
    forwarder = SlirpLikeForwarder(guest.qmp_dir / "g1.sock")
    try:
        device = AgentDevice.of(AGENT, ip="127.0.0.1", ipport=str(forwarder.port))
        fencer = FenceAgentFencer({NODE.name: device}, timeout=30)
        assert asyncio.run(fencer.status(NODE)) == "on"
        result = asyncio.run(fencer.fence(NODE, "off"))
        assert result.ok, result.detail
        assert guest.proc.wait(timeout=1) == 0
        # the forwarder says the guest's QEMU is gone: off, not "cannot tell"
        assert asyncio.run(fencer.status(NODE)) == "off"
        again = asyncio.run(fencer.fence(NODE, "off"))
        assert again.ok, again.detail
    finally:
        forwarder.close()
    assert [c.returncode for c in forwarder.children] == [0] * len(forwarder.children)
