"""The CMF unit manager against a real systemd: a Debian bookworm container under systemd-nspawn.

The root comes from ``image/rootfs.sh`` (cached under /var/cache/haos/rootfs) and boots on an
overlay so the cache stays clean. The nspawn launcher runs in its own cgroup in both
hierarchies (there is no host systemd to give it one). The host talks to the container's
systemd over its system bus socket, reached through ``/proc/<container init>/root``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from haos.errors import UnavailableError
from haos.services.cmf.systemd import SystemdUnits
from haos.services.cmf.types import NoSuchUnit, UnitExists
from haoslab.fakes.cmf_conformance import EXPECTED, start_kill_reset_restart

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
ROOTFS_CACHE = Path("/var/cache/haos/rootfs")
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
BOOT_DEADLINE = 30.0
T = TypeVar("T")
TOOLS = ("debootstrap", "systemd-nspawn", "mount", "umount")


@dataclass(frozen=True)
class Container:
    """A booted container; ``leader`` is its PID 1 as the host sees it."""

    name: str
    leader: int
    system_state: str

    @property
    def root(self) -> Path:
        return Path(f"/proc/{self.leader}/root")

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.root}/run/dbus/system_bus_socket"


def _skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap, mounts, cgroups, systemd-nspawn")
    for tool in TOOLS:
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"needs {tool} (apt-get install debootstrap systemd-container)")
    if not all(h.is_dir() for h in CGROUP_HIERARCHIES):
        pytest.skip("needs the unified and name=systemd cgroup hierarchies")


def _build_rootfs() -> Path:
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "image" / "rootfs.sh"), str(ROOTFS_CACHE)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"image/rootfs.sh failed (mirror unreachable?):\n{proc.stderr}"
    print(f"rootfs ready in {time.monotonic() - started:.1f} s: {proc.stdout.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _wait_for(what: str, deadline: float, probe: Callable[[], T | None]) -> T:
    """Poll ``probe()`` every 10 ms until it returns something truthy, or fail at the deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {deadline} s")


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _pid1_of(cgroup: Path) -> int | None:
    """The process in ``cgroup`` that is PID 1 of its own pid namespace."""
    for pid in _cgroup_pids(cgroup):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                fields = line.split()
                # NSpid lists the pid in each nested namespace; the container's is last.
                if fields[0] == "NSpid:" and len(fields) > 2 and fields[-1] == "1":
                    return pid
    return None


def _remove_cgroup(cgroup: Path) -> None:
    for pid in _cgroup_pids(cgroup):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        dirs = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        with contextlib.suppress(OSError):
            for d in [*dirs, cgroup]:
                d.rmdir()
        if not cgroup.exists():
            return
        time.sleep(0.05)


async def _system_state(address: str) -> str:
    units = await SystemdUnits.connect(address)
    try:
        return await units.systemd.system_state()
    finally:
        units.systemd.bus.disconnect()


def _settled_state(address: str) -> str | None:
    try:
        state = asyncio.run(_system_state(address))
    except UnavailableError:
        return None
    return state if state in ("running", "degraded") else None


@contextlib.contextmanager
def booted(lower: Path, work: Path) -> Iterator[Container]:
    name = f"cmf-{uuid.uuid4().hex[:8]}"
    root, upper, scratch = work / "root", work / "upper", work / "work"
    for d in (root, upper, scratch):
        d.mkdir()
    cgroups = [h / "haos" / name for h in CGROUP_HIERARCHIES]
    log = (work / "nspawn.log").open("w")
    proc: subprocess.Popen[bytes] | None = None
    mounted = False
    try:
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={upper},workdir={scratch}", str(root)],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        mounted = True
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)
        # The launcher moves itself into its own cgroups, then becomes systemd-nspawn.
        enter = 'for cg; do [ "$cg" = -- ] && break; echo $$ >"$cg/cgroup.procs"; shift; done'
        proc = subprocess.Popen(
            ["sh", "-c", f'{enter}; shift; exec "$@"', "sh", *map(str, cgroups), "--",
             "systemd-nspawn", "-b", "-D", str(root), f"--machine={name}", "--register=no",
             "--keep-unit", "--console=passive", "--private-network"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started = time.monotonic()
        try:
            leader = _wait_for("container PID 1", BOOT_DEADLINE, lambda: _pid1_of(cgroups[0]))
            socket = Path(f"/proc/{leader}/root/run/dbus/system_bus_socket")
            _wait_for("system bus socket", BOOT_DEADLINE, lambda: socket.exists() or None)
            address = f"unix:path={socket}"
            state = _wait_for("SystemState", BOOT_DEADLINE, lambda: _settled_state(address))
        except AssertionError as e:
            log.flush()
            raise AssertionError(f"{e}; nspawn said:\n{(work / 'nspawn.log').read_text()}") from e
        print(f"container {name} {state} after {time.monotonic() - started:.2f} s")
        yield Container(name, leader, state)
    finally:
        if proc is not None:
            proc.terminate()  # nspawn powers the container off on SIGTERM
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for cg in cgroups:
            _remove_cgroup(cg)
        if mounted:
            subprocess.run(["umount", str(root)], check=False, stdin=subprocess.DEVNULL)
        log.close()


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    _skip_unless_possible()
    lower = _build_rootfs()
    with booted(lower, tmp_path_factory.mktemp("cmf")) as c:
        yield c


def test_container_systemd_reaches_running(container: Container) -> None:
    assert container.system_state == "running"


def test_sigkilled_transient_unit_fails_then_resets_and_restarts(container: Container) -> None:
    async def go() -> None:
        units = await SystemdUnits.connect(container.bus_address)
        try:
            got = await start_kill_reset_restart(units, "cmf-conformance.service", time.monotonic)
        finally:
            units.systemd.bus.disconnect()
        print(f"SIGKILL -> failed event: {got.kill_to_event * 1000:.2f} ms")
        assert got.without_timing() == EXPECTED
        assert 0 < got.kill_to_event < 1.0

    asyncio.run(go())


def test_unknown_unit_and_duplicate_start_are_refused(container: Container) -> None:
    async def go() -> None:
        units = await SystemdUnits.connect(container.bus_address)
        try:
            assert await units.active_state("cmf-never-started.service") == "inactive"
            with pytest.raises(NoSuchUnit):
                await units.kill("cmf-never-started.service", signal.SIGKILL)
            with pytest.raises(NoSuchUnit):
                await units.reset_failed("cmf-never-started.service")
            await units.start_transient("cmf-dup.service", ["/bin/sleep", "1000"])
            with pytest.raises(UnitExists):
                await units.start_transient("cmf-dup.service", ["/bin/sleep", "1000"])
            assert await units.active_state("cmf-dup.service") in ("activating", "active")
            await units.stop("cmf-dup.service")
        finally:
            units.systemd.bus.disconnect()

    asyncio.run(go())


def test_watch_fails_when_the_connection_is_lost(container: Container) -> None:
    async def go() -> None:
        units = await SystemdUnits.connect(container.bus_address)
        async with units.watch(["cmf-lost.service"]) as changes:
            units.systemd.bus.disconnect()
            with pytest.raises(UnavailableError):
                async with asyncio.timeout(5):
                    await anext(changes)

    asyncio.run(go())
