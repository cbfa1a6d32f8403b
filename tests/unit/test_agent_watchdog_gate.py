"""The node agent's WATCHDOG=1: only when its loop ran *and* the HM completed a round.

The gate itself is pure (a table of progress reports and decisions); then the HM on its own
thread (:class:`~haos.services.hm.thread.HmThread`) feeding the gate of a real
:class:`~haos.services.notify.Notifier` on real time: an audit that blocks the HM's thread
stops the pets while the agent's loop runs on; audits that fail or miss their deadline do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from haos.clock import MonotonicClock
from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec
from haos.errors import ModelError, UsageError
from haos.model.reports import ErrorKind, ErrorReport
from haos.services.agent.daemon import HmRegistry
from haos.services.hm.probes import CallbackProbe, CommandProbe
from haos.services.hm.runner import AuditRunner
from haos.services.hm.thread import HmThread
from haos.services.notify import Notifier, WatchdogGate
from haoslab.testing.clock import FakeClock, until

# -- the gate, pure -----------------------------------------------------------------------


def test_the_gate_pets_only_after_both_the_loop_and_the_hm_round_progressed() -> None:
    gate = WatchdogGate(["hm"])
    gate.heartbeat(1.0)
    decision = gate.decide(1.1)
    assert not decision.pet  # the loop alone is not enough
    assert decision.reason == "watchdog withheld: hm: no progress yet"
    gate.progress("hm", 1.2)
    assert gate.decide(1.3).pet
    gate.progress("hm", 1.4)  # the HM alone is not enough either
    assert gate.decide(1.5).reason == "watchdog withheld: loop: no progress for 0.5 s"
    gate.heartbeat(1.6)
    assert gate.decide(1.7).pet


def test_the_gate_withholds_once_the_hm_round_stalls_however_often_the_loop_runs() -> None:
    gate = WatchdogGate(["hm"])
    gate.heartbeat(10.0)
    gate.progress("hm", 10.0)
    assert gate.decide(10.1).pet
    for t in (10.5, 11.0, 12.0, 14.0):  # the loop beats on; the HM's last round was at 10.0
        gate.heartbeat(t)
        decision = gate.decide(t)
        assert not decision.pet
        assert decision.reason == f"watchdog withheld: hm: no progress for {t - 10.0:.1f} s"
    gate.progress("hm", 14.5)  # the HM gets round again: the next pet comes at once
    assert gate.decide(14.5).pet


def test_a_round_before_the_last_pet_does_not_count_for_the_next() -> None:
    gate = WatchdogGate(["hm"])
    gate.progress("hm", 1.0)
    gate.progress("hm", 1.1)  # two rounds, one pet: rounds do not accumulate
    gate.heartbeat(1.2)
    assert gate.decide(1.2).pet
    gate.heartbeat(1.3)
    assert not gate.decide(1.3).pet


# -- the HM on its thread, feeding a real notifier ---------------------------------------

WATCHDOG_SEC = 1.0  # the notifier's interval 0.5 s: consulted every 62 ms, HM round every 125 ms


@dataclass
class Sent:
    messages: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, line)

    def send(self, *assignments: str) -> None:
        now = time.monotonic()
        self.messages.extend((now, line) for line in assignments)

    def longest_without_a_pet(self, since: float) -> float:
        pets = [since] + [t for t, line in self.messages if line == "WATCHDOG=1" and t >= since]
        return max(b - a for a, b in zip(pets, [*pets[1:], time.monotonic()], strict=True))

    def close(self) -> None:
        pass


class BlockingProbe:
    """An audit whose run blocks the thread it runs on (as a start of a program that never
    executes does) until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def check(self, spec: AuditSpec) -> None:
        pass

    async def run(self, spec: AuditSpec) -> tuple[bool, str]:
        self.entered.set()
        self.release.wait(30.0)  # blocking on purpose: the HM's loop stands still
        return True, ""


@dataclass
class Rig:
    notifier: Notifier
    hm: HmThread
    callbacks: CallbackProbe
    blocking: BlockingProbe
    reports: list[ErrorReport]
    sent: Sent

    def withheld_for_hm(self) -> bool:
        decision = self.notifier.last_decision
        return not decision.pet and "hm: no progress" in decision.reason


@asynccontextmanager
async def running() -> AsyncIterator[Rig]:
    sent = Sent()
    notifier = Notifier(sent, MonotonicClock(), int(WATCHDOG_SEC * 1e6))
    assert notifier.interval is not None
    callbacks, blocking, reports = CallbackProbe(), BlockingProbe(), list[ErrorReport]()
    hm = HmThread(
        AuditMonitor(),
        {"callback": callbacks, "command": CommandProbe(), "block": blocking},
        MonotonicClock(),
        reports.append,
        notifier.check("hm").progress,
        beat=notifier.interval / 4,
    )
    rig = Rig(notifier, hm, callbacks, blocking, reports, sent)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(t) for t in (notifier.run(), notifier.beat(), hm.run())]
            try:
                yield rig
            finally:
                blocking.release.set()
                for task in tasks:
                    task.cancel()
    finally:
        blocking.release.set()


def test_an_audit_that_blocks_the_hm_thread_stops_the_pets_while_the_loop_runs_on() -> None:
    async def go() -> None:
        async with running() as rig:
            await until(lambda: rig.notifier.pets >= 3, 5.0)  # no audits: the HM's beat
            rig.hm.register(AuditSpec("web", "stuck", 1.0, 0.5, "block", "x"))
            await until(rig.blocking.entered.is_set, 5.0)
            pets = rig.notifier.pets
            loop_beats = 0
            for _ in range(60):  # 1.5 s, three of the notifier's intervals, on the agent's loop
                await asyncio.sleep(0.025)
                loop_beats += 1
            assert loop_beats == 60  # the agent's loop ran throughout...
            # ...but at most one pet came after the HM stood still (a round just before)
            assert rig.notifier.pets <= pets + 1
            assert rig.withheld_for_hm()
            assert "hm: no progress for" in rig.notifier.status_text
            rig.blocking.release.set()  # the HM gets round again: so do the pets
            await until(lambda: rig.notifier.pets >= pets + 3, 5.0)

    asyncio.run(go())


def test_audits_that_fail_or_miss_their_deadline_are_reports_and_the_pets_go_on() -> None:
    async def hangs() -> tuple[bool, str]:
        await asyncio.Event().wait()
        return True, ""

    async def fails() -> tuple[bool, str]:
        return False, "web answers 503"

    async def go() -> None:
        async with running() as rig:
            registry = HmRegistry(rig.hm, rig.hm.callbacks(rig.callbacks))
            registry.add(AuditSpec("web", "slow", 0.2, 0.05, "callback", "slow"), hangs)
            registry.add(AuditSpec("web", "sick", 0.2, 0.5, "callback", "sick"), fails)
            rig.hm.register(AuditSpec("db", "false", 0.3, 0.2, "command", "/bin/false"))
            kinds = {ErrorKind.AUDIT_FAILED, ErrorKind.AUDIT_OVERDUE}
            await until(lambda: {r.kind for r in rig.reports} >= kinds, 5.0)
            await until(lambda: any(r.component == "db" for r in rig.reports), 5.0)
            since = time.monotonic()
            await asyncio.sleep(2.0)  # the audits keep failing and missing their deadline...
            reported = len(rig.reports)
            # ...and systemd would have had a pet well within every WatchdogSec
            assert rig.sent.longest_without_a_pet(since) < WATCHDOG_SEC
            await until(lambda: len(rig.reports) > reported, 5.0)  # still auditing
            details = {r.detail for r in rig.reports}
            assert "audit sick failed: web answers 503" in details
            assert "audit false failed: /bin/false exited 1" in details
            assert any(d.startswith("audit slow gave no result within 0.05s") for d in details)

    asyncio.run(go())


def test_callback_audits_run_on_the_agents_loop_and_reports_come_back_there() -> None:
    async def go() -> None:
        home = threading.get_ident()
        seen: list[int] = []

        async def alive() -> tuple[bool, str]:
            seen.append(threading.get_ident())
            return False, "not yet"

        async with running() as rig:
            rig.hm.callbacks(rig.callbacks).add("web", "alive", alive)
            rig.hm.register(AuditSpec("web", "alive", 0.2, 0.5, "callback", "alive"))
            await until(lambda: len(rig.reports) >= 2, 5.0)
            assert seen and set(seen) == {home}
            assert rig.reports[0].kind is ErrorKind.AUDIT_FAILED
            assert rig.hm.runner.rounds > 0

    asyncio.run(go())


def test_a_bad_audit_is_refused_at_once_in_the_callers_thread() -> None:
    hm = HmThread(AuditMonitor(), {"command": CommandProbe()}, MonotonicClock(), print, print,
                  beat=0.1)  # fmt: skip
    with pytest.raises(ModelError, match="unknown kind 'gopher'"):
        hm.register(AuditSpec("web", "x", 1.0, 1.0, "gopher", "x"))
    with pytest.raises(ModelError, match="period must be a positive number"):
        hm.register(AuditSpec("web", "x", 0.0, 1.0, "command", "/bin/true"))
    assert hm.runner.in_flight == []


def test_a_refusal_between_two_rounds_is_no_news_and_a_late_pet_is() -> None:
    clock = FakeClock(1000.0)
    sent = Sent()
    notifier = Notifier(sent, clock, 4_000_000)  # pets due every 2 s
    hm = notifier.check("hm")
    notifier.heartbeat()
    hm.progress()
    assert notifier.consult().pet
    clock.advance(0.5)
    notifier.heartbeat()
    assert not notifier.consult().pet  # the HM's next round has not come yet: normal
    assert notifier.status_text == ""
    clock.advance(1.5)
    notifier.heartbeat()
    assert not notifier.consult().pet  # a pet is an interval late now: say why
    assert notifier.status_text == "watchdog withheld: hm: no progress for 2.0 s"
    assert sent.messages[-1][1] == "STATUS=watchdog withheld: hm: no progress for 2.0 s"
    hm.progress()
    assert notifier.consult().pet
    assert notifier.status_text == ""


def test_the_runner_makes_a_round_every_beat_with_no_audits_and_before_a_distant_one() -> None:
    async def go() -> None:
        clock = FakeClock(1000.0)
        rounds: list[float] = []
        runner = AuditRunner(
            AuditMonitor(), {"command": CommandProbe()}, print, clock,
            beat=0.5, on_round=lambda: rounds.append(clock.now()),
        )  # fmt: skip
        task = asyncio.create_task(runner.run())
        try:
            await until(lambda: clock.idle(1))
            assert rounds == [1000.0] and clock.waiting_until == 1000.5  # none configured
            for _ in range(3):
                clock.advance(0.5)
                await until(lambda: clock.idle(1))
            assert rounds == [1000.0, 1000.5, 1001.0, 1001.5]
            # an audit due in 60 s does not put the next round off by 60 s
            runner.register(AuditSpec("web", "rare", 60.0, 1.0, "command", "/bin/true"))
            await until(lambda: clock.idle(1) and not runner.in_flight, 5.0)
            assert clock.waiting_until == 1002.0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(go())


def test_a_runner_beat_must_be_positive() -> None:
    with pytest.raises(UsageError, match="beat must be positive"):
        AuditRunner(AuditMonitor(), {}, print, MonotonicClock(), beat=0.0)
