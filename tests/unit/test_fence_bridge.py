"""The harness's fence bridge between nodes in containers and the host, without containers:
requests through a real directory, the power operations recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haoslab.harness.errors import HarnessError
from haoslab.harness.systemd_cluster import FenceBridge, main, request_fence


class Power:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.broken: set[str] = set()

    def off(self, node: str) -> None:
        if node in self.broken:
            raise HarnessError(f"{node}: no such node")
        self.calls.append(("off", node))

    def on(self, node: str) -> None:
        self.calls.append(("on", node))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[FenceBridge, Power]]:
    power = Power()
    bridge = FenceBridge(tmp_path / "fence", power.off, power.on)
    bridge.start()
    try:
        yield bridge, power
    finally:
        bridge.stop()


def test_reboot_cuts_the_power_answers_then_boots_the_node(
    rig: tuple[FenceBridge, Power],
) -> None:
    bridge, power = rig
    assert request_fence(bridge.directory, "n3", "reboot", timeout=10.0) == "ok"
    assert request_fence(bridge.directory, "n2", "off", timeout=10.0) == "ok"
    # one request at a time: n3 is booted again before n2's request is taken
    assert power.calls == [("off", "n3"), ("on", "n3"), ("off", "n2")]
    assert bridge.done == [("n3", "reboot", "ok"), ("n2", "off", "ok")]
    assert sorted(p.name for p in bridge.directory.iterdir()) == []  # nothing left behind


def test_power_on_from_a_simulated_bmc_boots_the_node_without_cutting_it(
    rig: tuple[FenceBridge, Power],
) -> None:
    bridge, power = rig
    assert request_fence(bridge.directory, "n2", "on", timeout=10.0) == "ok"
    deadline = time.monotonic() + 10.0
    while not power.calls and time.monotonic() < deadline:  # the boot follows the answer
        time.sleep(0.01)
    assert power.calls == [("on", "n2")]
    assert bridge.done == [("n2", "on", "ok")]


def test_a_failed_power_cut_is_no_fencing_and_nothing_is_booted(
    rig: tuple[FenceBridge, Power],
) -> None:
    bridge, power = rig
    power.broken.add("n9")
    answer = request_fence(bridge.directory, "n9", "reboot", timeout=10.0)
    assert answer == "error: n9: no such node"
    assert power.calls == []


def test_the_fence_command_exits_non_zero_unless_fenced(
    rig: tuple[FenceBridge, Power], capsys: pytest.CaptureFixture[str]
) -> None:
    bridge, power = rig
    assert main(["fence", str(bridge.directory), "n1", "off"]) == 0
    power.broken.add("n2")
    assert main(["fence", str(bridge.directory), "n2", "off"]) == 1
    assert capsys.readouterr().out.splitlines() == ["ok", "error: n2: no such node"]


def test_bridge_command_names_the_directory(tmp_path: Path) -> None:
    bridge = FenceBridge(tmp_path, lambda n: None, lambda n: None)
    argv = list(bridge.command())
    assert argv[-4:] == ["fence", str(tmp_path), "{node}", "{action}"]


def test_no_bridge_no_answer(tmp_path: Path) -> None:
    assert request_fence(tmp_path, "n1", "off", timeout=0.1) == "error: no answer within 0.1 s"


class Recorded:
    """A power lock that records when it is taken and given back, beside the power calls."""

    def __init__(self, calls: list[tuple[str, str]]) -> None:
        self.calls = calls
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        self.lock.acquire()
        self.calls.append(("lock", "taken"))

    def __exit__(self, *exc: object) -> None:
        self.calls.append(("lock", "released"))
        self.lock.release()


def test_a_reboot_is_carried_out_whole_under_the_power_lock(tmp_path: Path) -> None:
    power = Power()
    lock = Recorded(power.calls)
    bridge = FenceBridge(tmp_path / "fence", power.off, power.on, power=lock)
    bridge.start()
    try:
        assert request_fence(bridge.directory, "n3", "reboot", timeout=10.0) == "ok"
        deadline = time.monotonic() + 10.0
        while len(power.calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        bridge.stop()
    # nobody else holding the lock sees n3 between its power cut and its boot
    assert power.calls == [("lock", "taken"), ("off", "n3"), ("on", "n3"), ("lock", "released")]


def test_requests_wait_while_the_power_lock_is_held_and_are_listed_meanwhile(
    tmp_path: Path,
) -> None:
    power = Power()
    lock = threading.Lock()
    bridge = FenceBridge(tmp_path / "fence", power.off, power.on, power=lock)
    bridge.start()
    answers: list[str] = []
    try:
        with lock:  # what entering the cluster holds while it boots the nodes
            asker = threading.Thread(
                target=lambda: answers.append(request_fence(bridge.directory, "n1", "off", 10.0))
            )
            asker.start()
            deadline = time.monotonic() + 10.0
            while not bridge.waiting() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert bridge.waiting() == [("n1", "off")]
            time.sleep(0.2)  # several rounds of the bridge: still nothing carried out
            assert power.calls == [] and answers == []
        asker.join(10.0)
    finally:
        bridge.stop()
    assert answers == ["ok"] and power.calls == [("off", "n1")]
    assert bridge.waiting() == []
