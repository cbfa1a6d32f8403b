"""Operator intents through the CCR: carried out once, in order, with their outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from haos.clock import within
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.dss.ccr import CcrConfig, CcrService, ManualQuorum, MemoryStore, Put
from haos.errors import UnavailableError, UsageError
from haos.services.crimd import ServiceRole
from haos.services.intents import (
    INTENTS,
    OUTCOMES,
    RETRY_AFTER,
    IntentFollower,
    submit_intent,
)
from haoslab.testing.bus import LocalBus
from haoslab.testing.clock import FakeClock, until


class FakeAvailability:
    """An availability service whose role the test sets; ``submit`` records the events."""

    topology = None
    brain = None

    def __init__(self, role: ServiceRole = ServiceRole.ACTIVE) -> None:
        self.role = role
        self.submitted: list[ev.Event] = []
        self._changed = asyncio.Condition()

    async def set_role(self, role: ServiceRole) -> None:
        async with self._changed:
            self.role = role
            self._changed.notify_all()

    async def wait_role(self, role: ServiceRole, *, left: bool = False) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: (self.role is role) is not left)

    async def submit(self, event: ev.Event) -> Decision:
        self.submitted.append(event)
        refused = getattr(event, "target", "") == "nobody"
        return Decision(None, (), f"did {event}", refused=refused)  # type: ignore[arg-type]


def with_ccr(body: Callable[[CcrService, FakeAvailability], Awaitable[None]]) -> None:
    async def go() -> None:
        service = CcrService(LocalBus().join(1), MemoryStore(), ManualQuorum(True), CcrConfig(1))
        await service.load()
        availability = FakeAvailability()
        follower = IntentFollower(service, availability)  # type: ignore[arg-type]
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(service.run())]
            await service.wait_ready(timeout=5.0)
            tasks.append(tg.create_task(follower.run()))
            try:
                await body(service, availability)
            finally:
                for t in tasks:
                    t.cancel()

    asyncio.run(go())


def test_an_intent_is_carried_out_once_and_its_outcome_recorded() -> None:
    async def body(ccr: CcrService, a: FakeAvailability) -> None:
        outcome = await submit_intent(ccr, "lock", "n2", "n1", timeout=5.0)
        assert outcome["state"] == "done" and not outcome["refused"]
        assert a.submitted == [ev.OperatorLock("n2")]
        refused = await submit_intent(ccr, "switchover", "nobody", "n1", timeout=5.0)
        assert refused["refused"]
        _, left = await ccr.range(INTENTS)
        assert left == ()  # carried-out intents are gone, their outcomes stay
        _, outcomes = await ccr.range(OUTCOMES)
        assert len(outcomes) == 2

    with_ccr(body)


def test_an_intent_claimed_by_a_master_that_died_is_not_carried_out_again() -> None:
    async def body(ccr: CcrService, a: FakeAvailability) -> None:
        taking = json.dumps({"state": "taking"}).encode()
        intent = json.dumps({"action": "switchover", "target": "g"}).encode()
        watch = ccr.watch(f"{OUTCOMES}/1-x")
        await ccr.txn((), (Put(f"{OUTCOMES}/1-x", taking), Put(f"{INTENTS}/1-x", intent)))
        outcome: dict[str, Any] = {}
        async with asyncio.timeout(5.0):
            while outcome.get("state") in (None, "taking"):
                for e in await watch.next_batch():
                    outcome = json.loads(e.value or b"{}")
        assert outcome["state"] == "unknown"
        assert a.submitted == []

    with_ccr(body)


def test_bad_intents_are_refused_by_name_and_nothing_is_written() -> None:
    async def body(ccr: CcrService, a: FakeAvailability) -> None:
        with pytest.raises(UsageError, match="unknown action 'dance'"):
            await submit_intent(ccr, "dance", "n1", "n1")
        with pytest.raises(UsageError, match="target must be"):
            await submit_intent(ccr, "lock", "", "n1")
        assert (await ccr.range(INTENTS))[1] == ()
        # one written behind the tool's back is refused when carried out
        watch = ccr.watch(f"{OUTCOMES}/2-y")
        await ccr.put(f"{INTENTS}/2-y", b"{not json")
        async with asyncio.timeout(5.0):
            events = [e for e in await watch.next_batch() if e.value]
            while json.loads(events[-1].value or b"{}")["state"] == "taking":
                events = [e for e in await watch.next_batch() if e.value]
        outcome = json.loads(events[-1].value or b"{}")
        assert outcome["refused"] and "not JSON" in outcome["reason"]
        assert a.submitted == []

    with_ccr(body)


# -- waiting on conditions, on an injected clock -------------------------------------------------


class FlakyRepository:
    """The CCR, except that its first ``failures`` range reads fail as unavailable."""

    def __init__(self, ccr: CcrService, failures: int) -> None:
        self._ccr = ccr
        self.failures = failures
        self.ranges = 0
        self.txn = ccr.txn
        self.watch = ccr.watch
        self.get = ccr.get

    async def range(self, prefix: str = "/") -> tuple[int, tuple[Any, ...]]:
        self.ranges += 1
        if self.failures > 0:
            self.failures -= 1
            raise UnavailableError("the repository has no quorum")
        return await self._ccr.range(prefix)


def with_clocks(
    body: Callable[[CcrService, FakeAvailability, FakeClock, IntentFollower], Awaitable[None]],
    role: ServiceRole = ServiceRole.ACTIVE,
    failures: int = 0,
) -> None:
    """``body`` with a follower that runs on a FakeClock nobody advances but ``body``."""

    async def go() -> None:
        service = CcrService(LocalBus().join(1), MemoryStore(), ManualQuorum(True), CcrConfig(1))
        await service.load()
        availability, clock = FakeAvailability(role), FakeClock(100.0)
        repo = FlakyRepository(service, failures)
        follower = IntentFollower(repo, availability, clock)  # type: ignore[arg-type]
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(service.run())]
            await service.wait_ready(timeout=5.0)
            tasks.append(tg.create_task(follower.run()))
            try:
                await body(service, availability, clock, follower)
            finally:
                for t in tasks:
                    t.cancel()

    asyncio.run(go())


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_a_standby_follower_wakes_when_its_service_becomes_active_not_on_a_poll() -> None:
    """The intent waits while the service is a standby; it is carried out as soon as the
    service is active, with the follower's clock standing still and never waited on."""

    async def body(
        ccr: CcrService, a: FakeAvailability, clock: FakeClock, f: IntentFollower
    ) -> None:
        writer = FakeClock()
        outcome = asyncio.create_task(submit_intent(ccr, "lock", "n2", "n1", 5.0, writer))
        await until(lambda: writer.sleeping)  # written; the writer waits for its outcome
        await settle()
        assert a.submitted == [] and not outcome.done()
        await a.set_role(ServiceRole.ACTIVE)
        assert (await asyncio.wait_for(outcome, 2.0))["state"] == "done"
        assert a.submitted == [ev.OperatorLock("n2")]
        assert clock.t == 100.0 and not clock.sleeping  # woken by the role, not a timer
        assert writer.t == 0.0  # and the outcome woke the writer: no time had to pass

    with_clocks(body, role=ServiceRole.STANDBY)


def test_a_follower_whose_service_stops_being_active_leaves_intents_for_the_next_master() -> None:
    async def body(
        ccr: CcrService, a: FakeAvailability, clock: FakeClock, f: IntentFollower
    ) -> None:
        await until(lambda: ccr.status().synced)
        await settle()  # the follower watches the intents
        await a.set_role(ServiceRole.STANDBY)
        await settle()
        await ccr.put(f"{INTENTS}/3-z", json.dumps({"action": "lock", "target": "n3"}).encode())
        await settle()
        assert a.submitted == [] and (await ccr.range(INTENTS))[1] != ()
        await a.set_role(ServiceRole.ACTIVE)  # active again: it reads what is there
        await until(lambda: f.done == 1)
        assert a.submitted == [ev.OperatorLock("n3")] and clock.t == 100.0

    with_clocks(body)


def test_after_a_failure_the_follower_starts_over_when_its_clock_says_not_before() -> None:
    async def body(
        ccr: CcrService, a: FakeAvailability, clock: FakeClock, f: IntentFollower
    ) -> None:
        await until(lambda: f.retries == 1 and clock.sleeping)
        assert clock.waiting_until == 100.0 + RETRY_AFTER
        await ccr.put(f"{INTENTS}/4-w", json.dumps({"action": "lock", "target": "n1"}).encode())
        clock.advance(RETRY_AFTER * 0.9)
        await settle()
        assert f.done == 0 and f.retries == 1  # still waiting out the retry delay
        clock.advance(RETRY_AFTER * 0.2)
        await until(lambda: f.done == 1)
        assert a.submitted == [ev.OperatorLock("n1")]

    with_clocks(body, failures=1)


def test_a_writer_gives_up_on_its_intent_when_its_clock_passes_the_timeout() -> None:
    async def body(
        ccr: CcrService, a: FakeAvailability, clock: FakeClock, f: IntentFollower
    ) -> None:
        writer = FakeClock(50.0)
        outcome = asyncio.create_task(submit_intent(ccr, "lock", "n2", "n1", 5.0, writer))
        await until(lambda: writer.sleeping)
        assert writer.waiting_until == 55.0
        writer.advance(4.9)
        await settle()
        assert not outcome.done()
        writer.advance(0.2)
        with pytest.raises(UnavailableError, match=r"not carried out within 5 s"):
            await asyncio.wait_for(outcome, 2.0)
        assert (await ccr.range(INTENTS))[1] != ()  # it stays, for a master to carry out
        assert a.submitted == []

    with_clocks(body, role=ServiceRole.STANDBY)


def test_within_returns_what_the_work_returns_and_times_out_by_the_clock_only() -> None:
    async def go() -> None:
        clock = FakeClock(10.0)
        gate = asyncio.Event()

        async def work() -> str:
            await gate.wait()
            return "done"

        waiting = asyncio.create_task(within(clock, 12.0, work()))
        await settle()
        gate.set()
        assert await asyncio.wait_for(waiting, 2.0) == "done" and clock.t == 10.0

        gate.clear()
        waiting = asyncio.create_task(within(clock, 12.0, work()))
        await until(lambda: clock.sleeping)
        clock.advance(1.9)
        await settle()
        assert not waiting.done()
        clock.advance(0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiting, 2.0)

        async def broken() -> None:
            raise UnavailableError("gone")

        with pytest.raises(UnavailableError, match="gone"):
            await within(clock, None, broken())

    asyncio.run(go())
