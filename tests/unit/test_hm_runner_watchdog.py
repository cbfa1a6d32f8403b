"""The HM's watchdog petter: WATCHDOG=1 over a real NOTIFY_SOCKET, only after healthy rounds."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from haos.cluster.fencing.watchdog import MemoryWatchdog
from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec
from haos.errors import UnavailableError
from haos.services.hm.watchdog import SdNotifier, SystemdWatchdog, WatchdogPetter, decide

PING = AuditSpec("web", "ping", period=10.0, timeout=2.0, kind="callback", target="ping")


class Now:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.fspath(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield sock, path
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    """Datagrams already queued: sendto is synchronous, so nothing more is in transit."""
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def rig(path: str, clock: Now) -> tuple[AuditMonitor, WatchdogPetter, SdNotifier]:
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path})
    monitor = AuditMonitor()
    petter = WatchdogPetter(monitor, SystemdWatchdog(notifier), clock, notifier.status)
    return monitor, petter, notifier


def test_pets_after_a_healthy_round_and_withholds_while_an_audit_is_overdue(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    clock = Now()
    monitor, petter, notifier = rig(path, clock)
    try:
        monitor.register(PING, clock.t)
        assert monitor.due(clock.t) == [PING]
        assert received(sock) == []  # nothing is sent before the loop reports an iteration

        assert petter.iteration_completed().pet  # run in flight, still in time
        assert received(sock) == ["WATCHDOG=1", "STATUS=healthy: loop ran, 1 audit(s) in time"]

        clock.t += 2.0  # the run misses its deadline
        decision = petter.iteration_completed()
        assert not decision.pet
        assert decision.reason == "watchdog withheld: audit overdue: web/ping"
        assert received(sock) == ["STATUS=watchdog withheld: audit overdue: web/ping"]
        assert petter.reason == decision.reason
        assert not petter.iteration_completed().pet
        assert received(sock) == []  # STATUS= only on change, and no WATCHDOG=1

        clock.t += 8.0  # next run completes in time: healthy again
        monitor.tick(clock.t)
        assert monitor.due(clock.t) == [PING]
        monitor.result("web", "ping", True, clock.t + 0.1)
        assert petter.iteration_completed().pet
        assert received(sock)[0] == "WATCHDOG=1"
        assert petter.pets == 2
    finally:
        notifier.close()


def test_a_failed_audit_does_not_withhold_the_watchdog() -> None:
    clock = Now()
    monitor = AuditMonitor()
    dog = MemoryWatchdog()
    dog.arm()
    petter = WatchdogPetter(monitor, dog, clock)
    monitor.register(PING, clock.t)
    monitor.due(clock.t)
    assert monitor.result("web", "ping", False, clock.t + 1, "bad")
    assert petter.iteration_completed().pet
    assert dog.pets == 1


def test_without_iterations_nothing_is_petted(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    _monitor, petter, notifier = rig(path, Now())
    assert petter.pets == 0
    assert petter.reason.startswith("watchdog not petted yet")
    assert received(sock) == []
    notifier.close()


def test_abstract_notify_socket_is_honoured() -> None:
    name = f"haos-test-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.setblocking(False)
        notifier = SdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        SystemdWatchdog(notifier).pet()
        SystemdWatchdog(notifier).fire()
        notifier.close()
        assert received(sock) == ["WATCHDOG=1", "WATCHDOG=trigger"]
    finally:
        sock.close()


def test_no_notify_socket_means_not_run_by_systemd() -> None:
    notifier = SdNotifier.from_env({})
    assert not notifier.enabled
    notifier.send("WATCHDOG=1")  # no-op


def test_unreachable_socket_is_reported_in_the_reason(tmp_path: Path) -> None:
    notifier = SdNotifier(os.fspath(tmp_path / "gone"))
    with pytest.raises(UnavailableError, match="cannot notify systemd"):
        notifier.send("WATCHDOG=1")
    petter = WatchdogPetter(AuditMonitor(), SystemdWatchdog(notifier), Now())
    decision = petter.iteration_completed()
    assert not decision.pet
    assert "cannot notify systemd" in decision.reason
    notifier.close()


def test_decide_names_at_most_five_overdue_audits() -> None:
    overdue = [("c", str(i)) for i in range(7)]
    reason = decide(False, overdue, 7).reason
    assert reason.endswith("c/0, c/1, c/2, c/3, c/4 and 2 more")
