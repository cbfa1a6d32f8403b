"""The pure half of the OCF component: availability state -> agent actions, monitor -> report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from haos.errors import IllegalTransition
from haos.model.reports import ErrorKind, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.ocf import AgentResult, OcfAction, OcfAgentError, OcfComponent, OcfRc
from haos.services.ocf.component import health, plan

OFF, S, SEC, P = (
    AvailabilityState.OFFLINE,
    AvailabilityState.SPARE,
    AvailabilityState.SECONDARY,
    AvailabilityState.PRIMARY,
)
START, STOP, PROMOTE, DEMOTE = (
    OcfAction.START,
    OcfAction.STOP,
    OcfAction.PROMOTE,
    OcfAction.DEMOTE,
)

# (current, new) -> actions for a promotable agent, and for a plain one. Every pair is listed.
PLAN_TABLE = [
    (OFF, OFF, (), ()),
    (OFF, S, (), ()),
    (OFF, SEC, (START,), ()),
    (OFF, P, (START, PROMOTE), (START,)),
    (S, OFF, (), ()),
    (S, S, (), ()),
    (S, SEC, (START,), ()),
    (S, P, (START, PROMOTE), (START,)),
    (SEC, OFF, (STOP,), ()),
    (SEC, S, (STOP,), ()),
    (SEC, SEC, (), ()),
    (SEC, P, (PROMOTE,), (START,)),
    (P, OFF, (DEMOTE, STOP), (STOP,)),
    (P, S, (DEMOTE, STOP), (STOP,)),
    (P, SEC, (DEMOTE,), (STOP,)),
    (P, P, (), ()),
]


@pytest.mark.parametrize(("current", "new", "promotable_plan", "plain_plan"), PLAN_TABLE)
def test_plan_maps_availability_states_onto_agent_actions(
    current: AvailabilityState,
    new: AvailabilityState,
    promotable_plan: tuple[OcfAction, ...],
    plain_plan: tuple[OcfAction, ...],
) -> None:
    assert plan(current, new, promotable=True) == promotable_plan
    assert plan(current, new, promotable=False) == plain_plan


def test_plan_table_covers_every_pair_of_states() -> None:
    assert {(c, n) for c, n, _, _ in PLAN_TABLE} == {
        (c, n) for c in AvailabilityState for n in AvailabilityState
    }


def _result(
    rc: OcfRc, *, timed_out: bool = False, action: OcfAction = OcfAction.MONITOR
) -> AgentResult:
    return AgentResult(action, rc, "", 0.01, None if timed_out else int(rc), "")


HEALTH_TABLE = [
    (OcfRc.SUCCESS, None, None),
    (OcfRc.RUNNING_PROMOTED, None, None),
    (OcfRc.NOT_RUNNING, ErrorKind.CRASH, RecoveryLevel.RESTART),
    (OcfRc.ERR_GENERIC, ErrorKind.ERROR, RecoveryLevel.RESTART),
    (OcfRc.FAILED_PROMOTED, ErrorKind.ERROR, RecoveryLevel.RESTART),
    # hard errors: never retried on the node
    (OcfRc.ERR_ARGS, ErrorKind.HARD, RecoveryLevel.FAILOVER),
    (OcfRc.ERR_UNIMPLEMENTED, ErrorKind.HARD, RecoveryLevel.FAILOVER),
    (OcfRc.ERR_PERM, ErrorKind.HARD, RecoveryLevel.FAILOVER),
    (OcfRc.ERR_INSTALLED, ErrorKind.HARD, RecoveryLevel.FAILOVER),
    # a configuration error: wrong on every node
    (OcfRc.ERR_CONFIGURED, ErrorKind.MISCONFIGURED, RecoveryLevel.FAILOVER),
]


@pytest.mark.parametrize(("rc", "kind", "recovery"), HEALTH_TABLE)
def test_health_of_each_monitor_rc(
    rc: OcfRc, kind: ErrorKind | None, recovery: RecoveryLevel | None
) -> None:
    report = health("db", _result(rc), now=12.5, source="ocf:test:x")
    if kind is None:
        assert report is None
        return
    assert report is not None
    assert (report.component, report.kind, report.recommended) == ("db", kind, recovery)
    assert report.observed_at == 12.5 and report.source == "ocf:test:x"
    assert str(rc) in report.detail


def test_health_table_covers_every_rc() -> None:
    assert {rc for rc, _, _ in HEALTH_TABLE} == set(OcfRc)


def test_monitor_killed_at_its_timeout_is_a_hang() -> None:
    report = health("db", _result(OcfRc.ERR_GENERIC, timed_out=True), now=1.0)
    assert report is not None and report.kind is ErrorKind.HANG
    assert "timed out" in report.detail


@dataclass
class FakeRunner:
    """An in-memory agent: answers each action with a scripted rc, records what ran."""

    rcs: dict[OcfAction, OcfRc] = field(default_factory=dict)
    ran: list[OcfAction] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "ocf:fake:fake"

    async def run(self, action: OcfAction, *, interval: float = 0.0) -> AgentResult:
        self.ran.append(action)
        return _result(self.rcs.get(action, OcfRc.SUCCESS), action=action)

    async def monitor(self, *, probe: bool = False) -> AgentResult:
        return await self.run(OcfAction.MONITOR)


def test_component_runs_the_plan_and_records_the_new_state() -> None:
    runner = FakeRunner()
    comp = OcfComponent("db", runner, promotable=True)
    results = asyncio.run(comp.transition(P))
    assert runner.ran == [START, PROMOTE]
    assert [r.action for r in results] == [START, PROMOTE]
    assert comp.state is P
    asyncio.run(comp.transition(S))
    assert runner.ran == [START, PROMOTE, DEMOTE, STOP]
    assert comp.state is S


def test_component_refuses_primary_to_secondary_before_running_anything() -> None:
    runner = FakeRunner()
    comp = OcfComponent("db", runner, promotable=True, state=P)
    with pytest.raises(IllegalTransition):
        asyncio.run(comp.transition(SEC))
    assert runner.ran == [] and comp.state is P


def test_component_stops_at_the_first_failed_action_and_keeps_its_state() -> None:
    runner = FakeRunner(rcs={START: OcfRc.ERR_INSTALLED})
    comp = OcfComponent("db", runner, promotable=True)
    with pytest.raises(OcfAgentError, match="OCF_ERR_INSTALLED") as e:
        asyncio.run(comp.transition(P))
    assert e.value.result.rc is OcfRc.ERR_INSTALLED
    assert runner.ran == [START] and comp.state is OFF


def test_component_check_reports_a_stopped_resource_as_crash() -> None:
    comp = OcfComponent(
        "db", FakeRunner(rcs={OcfAction.MONITOR: OcfRc.NOT_RUNNING}), promotable=False
    )
    report = asyncio.run(comp.check(now=3.0))
    assert report is not None and report.kind is ErrorKind.CRASH and report.observed_at == 3.0
    assert asyncio.run(OcfComponent("db", FakeRunner(), promotable=False).check(now=3.0)) is None
