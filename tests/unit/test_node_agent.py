"""The node agent's core with fake drivers and a fake cluster link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from haos.errors import HaosError, UnavailableError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.agent import NodeAgent
from haos.services.orders import RoleOrder


class FakeDriver:
    def __init__(self, name: str, log: list[str], slow: float = 0.0, fail: bool = False) -> None:
        self.name, self.log, self.slow, self.fail = name, log, slow, fail

    async def apply(self, state: AvailabilityState, graceful: bool) -> None:
        await asyncio.sleep(self.slow)
        if self.fail:
            raise HaosError(f"{self.name} cannot be {state}")
        self.log.append(f"{self.name}={state}{'~' if graceful else ''}")

    async def recover(self, level: RecoveryLevel) -> None:
        self.log.append(f"{self.name}:{level}")

    async def current(self) -> AvailabilityState | None:
        return None

    async def close(self) -> None:
        pass


class FakeLink:
    def __init__(self, feed: list[dict[str, Any]], refuse_events: int = 0) -> None:
        self.feed = feed
        self.reports: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.confirmed: list[tuple[RoleOrder, int | None]] = []
        self.told: list[tuple[str, str]] = []  # (component, what it runs as)
        self.refuse_events = refuse_events

    async def orders(self) -> AsyncIterator[dict[str, Any]]:
        for item in self.feed:
            yield item
        await asyncio.Event().wait()

    async def report(self, report: dict[str, Any]) -> None:
        self.reports.append(report)

    async def event(self, kind: str, component: str) -> None:
        if self.refuse_events > 0:
            self.refuse_events -= 1
            raise UnavailableError("no master yet")
        self.events.append((kind, component))

    async def applied(self, order: RoleOrder, epoch: int | None) -> None:
        self.confirmed.append((order, epoch))

    async def running(self, component: str, state: str, at: float, detail: str) -> None:
        self.told.append((component, state))


class NoReboot:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def reboot(self, reason: str) -> None:
        self.asked.append(reason)


async def run_for(agent: NodeAgent, seconds: float) -> None:
    task = asyncio.ensure_future(agent.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_full_state_makes_components_ready_and_orders_follow_in_order() -> None:
    log: list[str] = []
    feed = [
        {"roles": {"a": "primary", "b": "offline"}},
        {"order": {"kind": "role", "component": "b", "state": "secondary", "seq": 3}},
        {"order": {"kind": "recover", "component": "a", "level": "soft-reset", "seq": 4}},
        {"order": {"kind": "role", "component": "zzz", "state": "primary", "seq": 5}},
        {"garbage": 1},
        {"order": {"kind": "role", "component": "b", "state": "boss"}},
    ]
    link = FakeLink(feed, refuse_events=2)
    drivers = {"a": FakeDriver("a", log), "b": FakeDriver("b", log)}
    agent = NodeAgent(drivers, link, NoReboot(), retry=0.01)
    asyncio.run(run_for(agent, 0.3))
    assert [x for x in log if x.startswith("a")] == ["a=primary", "a:soft-reset"]
    assert [x for x in log if x.startswith("b")] == ["b=spare", "b=secondary"]
    # b announced once ready (after two refusals: retried), a after its soft reset
    assert sorted(link.events) == [("available", "a"), ("available", "b")]
    assert agent.synced.is_set()


def test_a_slow_component_does_not_delay_another() -> None:
    log: list[str] = []
    feed = [
        {"roles": {"slow": "spare", "fast": "spare"}},
        {"order": {"kind": "role", "component": "fast", "state": "primary", "seq": 2}},
    ]
    drivers = {"slow": FakeDriver("slow", log, slow=0.5), "fast": FakeDriver("fast", log)}
    agent = NodeAgent(drivers, FakeLink(feed), NoReboot(), retry=0.01)
    asyncio.run(run_for(agent, 0.2))
    assert log == ["fast=spare", "fast=primary"]


def test_a_driver_that_fails_is_reported_and_error_reports_reach_the_link() -> None:
    log: list[str] = []
    feed = [{"order": {"kind": "role", "component": "a", "state": "primary", "seq": 1}}]
    link = FakeLink(feed)
    agent = NodeAgent({"a": FakeDriver("a", log, fail=True)}, link, NoReboot(), retry=0.01)

    async def go() -> None:
        task = asyncio.ensure_future(agent.run())
        agent.report(ErrorReport("a", ErrorKind.HANG, 1.0, "hm", "late"))
        agent.report(ErrorReport("unmanaged", ErrorKind.HANG, 1.0, "hm", "late"))
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    kinds = [(r["component"], r["kind"], r["source"]) for r in link.reports]
    assert kinds == [("a", "hang", "hm"), ("a", "error", "agent")]
    assert agent.stats.failed == 1 and "cannot be primary" in agent.stats.last
    assert agent.done.is_set()  # what the daemon's STATUS= waits on


def test_a_graceful_role_change_is_confirmed_with_the_order_it_carried_out() -> None:
    """The master releases the other side of a planned switchover on this confirmation: it
    must name the very order (its decision's seq, and the epoch when the feed gives one),
    come only once the driver reached the state, and come for graceful orders only."""
    log: list[str] = []
    spare = {"kind": "role", "component": "a", "state": "spare", "graceful": True}
    feed = [
        {"roles": {"a": "primary"}},
        {"order": {**spare, "seq": 7}, "epoch": 3},
        {"order": {"kind": "role", "component": "a", "state": "primary", "seq": 8}},
        {"order": {**spare, "seq": 9}},
    ]
    link = FakeLink(feed)
    agent = NodeAgent({"a": FakeDriver("a", log, slow=0.02)}, link, NoReboot(), retry=0.01)
    asyncio.run(run_for(agent, 0.3))
    assert log == ["a=primary", "a=spare~", "a=primary", "a=spare~"]
    spare_state = AvailabilityState.SPARE
    assert link.confirmed == [
        (RoleOrder("a", spare_state, True, 7), 3),
        (RoleOrder("a", spare_state, True, 9), None),
    ]


def test_what_each_component_runs_as_is_told_after_it_is_reached_or_fails() -> None:
    log: list[str] = []
    feed = [
        {"roles": {"a": "spare", "b": "spare"}},
        {"order": {"kind": "role", "component": "a", "state": "primary", "seq": 2}},
        {"order": {"kind": "role", "component": "b", "state": "primary", "seq": 3}},
    ]
    link = FakeLink(feed)
    drivers = {"a": FakeDriver("a", log), "b": FakeDriver("b", log, fail=True)}
    agent = NodeAgent(drivers, link, NoReboot(), retry=0.01)

    async def go() -> None:
        task = asyncio.ensure_future(agent.run())
        await asyncio.sleep(0.2)
        agent.report(ErrorReport("a", ErrorKind.CRASH, 1.0, "cmf", "exited"))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    said_a = [s for c, s in link.told if c == "a"]
    said_b = [s for c, s in link.told if c == "b"]
    assert said_a[-2:] == ["primary", "failed"]  # it ran as primary, then broke
    assert "primary" not in said_b and said_b[-1] == "failed"  # never reached primary
