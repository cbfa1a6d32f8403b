"""The daemons' sd_notify adapter: the watchdog gate on a fake clock, messages on a real
datagram socket, and the pet/heartbeat/probe tasks driven by the fake clock."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from haos.cluster.cmm.model import Demote, MasterChanged, Publish, QuorumRegained
from haos.errors import UnavailableError, UsageError
from haos.services.hm.watchdog import SdNotifier
from haos.services.notify import Notifier, WatchdogGate, in_words, watchdog_usec
from haoslab.testing.clock import FakeClock, until

T0 = 500.0


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


Make = Callable[..., Notifier]


@pytest.fixture
def make() -> Iterator[Make]:
    """Notifiers from an environment and a clock, closed after the test."""
    made: list[Notifier] = []

    def notifier(env: dict[str, str], clock: FakeClock | None = None) -> Notifier:
        made.append(Notifier.from_env(env, os.getpid(), clock or FakeClock(T0)))
        return made[-1]

    yield notifier
    for n in made:
        n.close()


def received(sock: socket.socket) -> list[str]:
    """Datagrams already queued (sendto is synchronous: nothing more is in transit)."""
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


# -- the gate ------------------------------------------------------------------------------


def test_gate_pets_only_when_the_loop_and_every_check_progressed_since_the_last_pet() -> None:
    gate = WatchdogGate(["hm", "corosync"])
    assert gate.decide(T0) == gate.decide(T0)  # a refusal changes nothing
    first = gate.decide(T0)
    assert not first.pet
    assert "loop: no progress yet" in first.reason and "corosync: no progress yet" in first.reason

    gate.heartbeat(T0 + 1)
    gate.progress("hm", T0 + 1)
    half = gate.decide(T0 + 2)
    assert not half.pet and half.reason == "watchdog withheld: corosync: no progress yet"

    gate.progress("corosync", T0 + 2)
    assert gate.decide(T0 + 2).pet
    # a pet starts a new round: the same old progress does not count twice
    again = gate.decide(T0 + 3.5)
    assert not again.pet
    assert again.reason == (
        "watchdog withheld: loop: no progress for 2.5 s; hm: no progress for 2.5 s; "
        "corosync: no progress for 1.5 s"
    )
    gate.heartbeat(T0 + 4)
    gate.progress("hm", T0 + 4)
    gate.progress("corosync", T0 + 4)
    ok = gate.decide(T0 + 4)
    assert ok.pet and ok.reason == "healthy: loop, hm, corosync progressed"


def test_gate_without_checks_needs_the_heartbeat_alone() -> None:
    gate = WatchdogGate()
    assert not gate.decide(T0).pet
    gate.heartbeat(T0)
    assert gate.decide(T0).pet
    assert not gate.decide(T0 + 1).pet


def test_gate_reason_carries_a_checks_trouble_until_it_progresses() -> None:
    gate = WatchdogGate(["corosync"])
    gate.heartbeat(T0)
    gate.progress("corosync", T0)
    assert gate.decide(T0).pet
    gate.heartbeat(T0 + 1)
    gate.trouble("corosync", "no answer within 2 s")
    refused = gate.decide(T0 + 2)
    assert refused.reason == (
        "watchdog withheld: corosync: no progress for 2.0 s (no answer within 2 s)"
    )
    gate.progress("corosync", T0 + 3)
    assert gate.decide(T0 + 3).pet


@pytest.mark.parametrize("name", ["", "loop", "hm"])
def test_gate_refuses_bad_or_duplicate_check_names(name: str) -> None:
    gate = WatchdogGate(["hm"])
    with pytest.raises(UsageError):
        gate.add(name)


def test_gate_refuses_progress_of_an_unknown_check() -> None:
    with pytest.raises(UsageError, match="unknown liveness check 'cmm'"):
        WatchdogGate(["hm"]).progress("cmm", T0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "5000000"}, 5_000_000),
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "42"}, 5_000_000),
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "43"}, None),  # inherited from a parent
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "5s"}, None),
    ],
)
def test_watchdog_usec_follows_sd_watchdog_enabled(
    env: dict[str, str], expected: int | None
) -> None:
    assert watchdog_usec(env, 42) == expected


# -- messages --------------------------------------------------------------------------------


def test_ready_status_and_stopping_go_out_as_datagrams(
    notify_socket: tuple[socket.socket, str], make: Make
) -> None:
    sock, path = notify_socket
    notifier = make({"NOTIFY_SOCKET": path}, FakeClock(T0))
    assert notifier.interval is None
    notifier.status("joining\nthe cluster")
    notifier.status("joining the cluster")  # unchanged: not sent again
    notifier.ready("joined, repository in sync")
    notifier.stopping("shutting down")
    assert received(sock) == [
        "STATUS=joining the cluster",
        "READY=1\nSTATUS=joined, repository in sync",
        "STOPPING=1\nSTATUS=shutting down",
    ]


def test_an_abstract_notify_socket_is_reached(make: Make) -> None:
    name = f"haos-notify-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        make({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert received(sock) == ["READY=1\nSTATUS=up"]
    finally:
        sock.close()


def test_consult_pets_only_through_the_gate_and_shows_why_it_withholds(
    notify_socket: tuple[socket.socket, str], make: Make
) -> None:
    sock, path = notify_socket
    clock = FakeClock(T0)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}
    notifier = make(env, clock)
    assert notifier.interval == 2.0
    corosync = notifier.check("corosync")
    notifier.status("joined")
    notifier.heartbeat()
    assert not notifier.consult().pet
    assert received(sock) == [
        "STATUS=joined",
        "STATUS=joined; watchdog withheld: corosync: no progress yet",
    ]
    corosync.progress()
    assert notifier.consult().pet
    assert received(sock) == ["WATCHDOG=1", "STATUS=joined"]
    assert notifier.pets == 1


def test_without_systemd_nothing_is_sent_but_the_gate_still_decides(make: Make) -> None:
    notifier = make({}, FakeClock(T0))
    notifier.ready("up")
    notifier.heartbeat()
    assert notifier.consult().pet
    assert not notifier.consult().pet
    assert notifier.status_text.startswith("up; watchdog withheld: loop")


def test_a_send_error_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(SdNotifier(os.fspath(tmp_path / "gone")), FakeClock(T0), 2_000_000)
    try:
        notifier.heartbeat()
        notifier.ready("up")
        assert notifier.consult().pet
    finally:
        notifier.close()


def test_the_hm_can_pet_a_check_through_the_watchdog_protocol(make: Make) -> None:
    notifier = make({}, FakeClock(T0))
    hm = notifier.check("hm")
    hm.arm()
    notifier.heartbeat()
    assert not notifier.consult().pet
    notifier.heartbeat()
    hm.pet()
    assert notifier.consult().pet


def test_notices_in_words() -> None:
    assert in_words(Publish(MasterChanged(1, 2), 7.0)) == "master changed: old=1, new=2"
    assert in_words(Publish(QuorumRegained(), 7.0)) == "quorum regained"
    assert in_words(Demote("quorum lost at 7.0", 8.0)) == "demote: quorum lost at 7.0"

    @dataclass(frozen=True)
    class ViewSeen:
        members: frozenset[int]

    assert in_words(ViewSeen(frozenset({3, 1}))) == "view seen: members={1,3}"
    assert in_words("plain") == "plain"


# -- the tasks -------------------------------------------------------------------------------


class Corosync:
    """A probed call: answers, fails or hangs as told."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "fail":
            raise UnavailableError("corosync is gone")


def test_tasks_pet_while_the_probe_answers_and_stop_when_it_hangs(
    notify_socket: tuple[socket.socket, str], make: Make
) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}  # an interval of 1 s
    corosync = Corosync()
    got: list[str] = []  # what the daemon sent, drained at every step

    def taken() -> list[str]:
        out = got[:]
        got.clear()
        return out

    async def steps(clock: FakeClock, n: int) -> None:
        for _ in range(n):  # beat and probe every 0.25 s, consult every 0.125 s
            clock.advance(0.125)
            await until(lambda: clock.idle(3), timeout=5.0)
            got.extend(received(sock))

    async def main() -> None:
        clock = FakeClock(T0)
        notifier = make(env, clock)
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(notifier.run()),
                tasks.create_task(notifier.beat()),
                tasks.create_task(notifier.probe("corosync", corosync, timeout=0.05)),
            ]
            await until(lambda: clock.idle(3) and corosync.calls == 1)
            await steps(clock, 16)  # 2 s: a pet after each round of progress
            assert taken().count("WATCHDOG=1") >= 6

            corosync.mode = "hang"  # each call now times out after 50 ms (real time)
            await steps(clock, 8)  # a pet may still come from progress before the hang
            taken()
            await steps(clock, 16)
            assert "WATCHDOG=1" not in taken()
            assert notifier.status_text.startswith("watchdog withheld: corosync: no progress for")
            assert notifier.status_text.endswith("(no answer within 0.05 s)")

            corosync.mode = "fail"
            await steps(clock, 8)
            assert notifier.last_decision.reason.endswith("(UnavailableError: corosync is gone)")

            corosync.mode = "answer"
            await steps(clock, 8)
            back = taken()
            assert "WATCHDOG=1" in back and back[back.index("WATCHDOG=1") + 1] == "STATUS="
            for task in running:
                task.cancel()

    asyncio.run(main())


def test_a_loop_that_wakes_too_late_gives_no_heartbeat(make: Make) -> None:
    async def main() -> None:
        clock = FakeClock(T0)
        notifier = make({"WATCHDOG_USEC": "2000000"}, clock)
        async with asyncio.TaskGroup() as tasks:
            beat = tasks.create_task(notifier.beat())
            await until(lambda: clock.idle(1))
            clock.advance(3.0)  # the 0.5 s wake-up comes 2.5 s late
            await until(lambda: clock.idle(1))
            assert not notifier.gate.decide(clock.now()).pet
            clock.advance(0.5)
            await until(lambda: clock.idle(1))
            assert notifier.gate.decide(clock.now()).pet
            beat.cancel()

    asyncio.run(main())


def test_no_watchdog_no_tasks(make: Make) -> None:
    async def main() -> None:
        notifier = make({}, FakeClock(T0))
        await asyncio.wait_for(notifier.run(), 1.0)
        await asyncio.wait_for(notifier.beat(), 1.0)
        await asyncio.wait_for(notifier.probe("corosync", Corosync()), 1.0)
        assert notifier.gate.checks == ("corosync",)

    asyncio.run(main())
