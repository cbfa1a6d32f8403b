"""Operator intents through the CCR: carried out once, in order, with their outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.dss.ccr import CcrConfig, CcrService, ManualQuorum, MemoryStore, Put
from haos.errors import UsageError
from haos.services.crimd import ServiceRole
from haos.services.intents import INTENTS, OUTCOMES, IntentFollower, submit_intent
from haoslab.testing.bus import LocalBus


class FakeAvailability:
    role = ServiceRole.ACTIVE

    def __init__(self) -> None:
        self.submitted: list[ev.Event] = []

    async def submit(self, event: ev.Event) -> Decision:
        self.submitted.append(event)
        refused = getattr(event, "target", "") == "nobody"
        return Decision(None, (), f"did {event}", refused=refused)  # type: ignore[arg-type]


def with_ccr(body: Callable[[CcrService, FakeAvailability], Awaitable[None]]) -> None:
    async def go() -> None:
        service = CcrService(LocalBus().join(1), MemoryStore(), ManualQuorum(True), CcrConfig(1))
        await service.load()
        availability = FakeAvailability()
        follower = IntentFollower(service, lambda: availability)  # type: ignore[arg-type,return-value]
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
