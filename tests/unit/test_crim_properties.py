"""CRIM invariants under random event sequences (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import AssignRole, RebootNode
from haos.cluster.crim.ladder import REBOOT_GIVEN_UP_AFTER
from haos.cluster.crim.policy import next_deadline
from haos.cluster.crim.state import Health, OfflineBy
from haos.cluster.crim.topology import Topology
from haos.model.redundancy import RecoveryPolicy
from haos.model.redundancy import RedundancyModel as RM
from haos.model.reports import ErrorKind, ErrorReport
from haos.model.states import AvailabilityState
from haos.sim import invariants as inv
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.crimdriver import CrimDriver

_BASE = generated_cluster(
    4,
    [
        GroupPlan("a", RM.TWO_N, [1, 2, 3]),
        GroupPlan("b", RM.N_PLUS_M, [1, 2, 3, 4], instances=3, active=2, standby=1),
        GroupPlan("c", RM.N_WAY_ACTIVE, [1, 2, 3, 4], instances=2, active=4, actives=2),
        GroupPlan("d", RM.HOT_RESTART, [2, 3], standby=0),
        GroupPlan("e", RM.NO_REDUNDANCY, [3, 4], standby=0),
    ],
    recovery=RecoveryPolicy(restart_max=1, failover_max=2, recovery_timeout=2.0),
)
# Groups a (2N) and e (no-redundancy) fail back to their preferred member.
CONFIG = dataclasses.replace(
    _BASE,
    groups=tuple(dataclasses.replace(g, failback=g.name in ("a", "e")) for g in _BASE.groups),
)
TOPO = Topology(CONFIG)
COMPONENTS = sorted(c.name for c in TOPO.tree)
MEMBERS = sorted(TOPO.group_of)
NODES = sorted(TOPO.nodes)
TARGETS = NODES + sorted(TOPO.groups) + sorted(TOPO.instances) + MEMBERS + ["bogus"]

events = st.one_of(
    st.builds(ev.ComponentAvailable, st.sampled_from(MEMBERS)),
    st.builds(
        lambda c, k: ev.ErrorReported(ErrorReport(c, k, 0.0)),
        st.sampled_from(COMPONENTS),
        st.sampled_from(list(ErrorKind)),
    ),
    st.builds(ev.NodeLeft, st.sampled_from(NODES)),
    st.builds(ev.NodeJoined, st.sampled_from(NODES)),
    st.builds(ev.OperatorLock, st.sampled_from(TARGETS)),
    st.builds(ev.OperatorUnlock, st.sampled_from(TARGETS)),
    st.builds(ev.OperatorSwitchover, st.sampled_from(TARGETS)),
    st.builds(ev.OperatorOffline, st.sampled_from(MEMBERS)),
    st.builds(ev.OperatorOnline, st.sampled_from(MEMBERS)),
    st.builds(ev.OfflineRequested, st.sampled_from(MEMBERS)),
    st.just(ev.Tick()),
)


def _stamp(event: ev.Event, now: float) -> ev.Event:
    """Error reports are observed just before they arrive."""
    if isinstance(event, ev.ErrorReported):
        r = event.report
        return ev.ErrorReported(ErrorReport(r.component, r.kind, now - 0.001, "test"))
    return event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(events, st.floats(0.0, 5.0)), max_size=60), st.booleans())
def test_invariants_hold_after_every_decision(
    steps: list[tuple[ev.Event, float]], boot_first: bool
) -> None:
    d = CrimDriver(CONFIG)
    told: dict[str, AvailabilityState] = {}
    if boot_first:
        d.boot()
        for x in d.log:
            assert not inv.legal_transitions(x.actions, told)
    for event, gap in steps:
        before = d.state
        dec = d.go(_stamp(event, d.now + gap), d.now + gap)
        assert inv.legal_transitions(dec.actions, told) == []
        assert inv.single_primary(TOPO, d.state) == []
        assert inv.no_idle_spare(TOPO, d.state, d.now) == []
        due = next_deadline(d.state, TOPO)
        if due is None or due > d.now:  # a probation that ended waits for its tick
            assert inv.within_capacity(TOPO, d.state, d.now) == []
        if dec.refused:
            assert d.state is before and dec.actions == ()
        for comp, rt in d.state.components.items():
            # a component without a process holds no role
            if rt.health in (Health.ABSENT, Health.FAILED):
                assert rt.state is AvailabilityState.OFFLINE and not rt.instances, comp
            if rt.state in (AvailabilityState.SPARE, AvailabilityState.OFFLINE):
                assert not rt.instances, comp
        assert told == {c: rt.state for c, rt in d.state.components.items() if c in told}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(events, st.floats(0.0, 5.0)), max_size=40))
def test_same_events_give_same_decisions(steps: list[tuple[ev.Event, float]]) -> None:
    outs = []
    for _ in range(2):
        d = CrimDriver(CONFIG)
        d.boot()
        for event, gap in steps:
            d.go(_stamp(event, d.now + gap), d.now + gap)
        outs.append([(x.actions, x.reason, x.refused) for x in d.log])
    assert outs[0] == outs[1]


def test_legal_transition_checker_catches_primary_to_secondary() -> None:
    told = {"x": AvailabilityState.PRIMARY}
    bad = AssignRole("x", AvailabilityState.PRIMARY, AvailabilityState.SECONDARY, ("i",))
    assert inv.legal_transitions((bad,), told)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(events, st.floats(0.0, 5.0)), max_size=60))
def test_reboots_are_one_at_a_time_and_never_cost_quorum(
    steps: list[tuple[ev.Event, float]],
) -> None:
    d = CrimDriver(CONFIG)
    d.boot()
    total = len(NODES)
    for event, gap in steps:
        before = d.state
        dec = d.go(_stamp(event, d.now + gap), d.now + gap)
        reboots = [a.node for a in dec.actions if isinstance(a, RebootNode)]
        assert len(reboots) <= 1
        for node in reboots:
            pending = before.reboot
            assert pending is None or d.now - pending.at >= REBOOT_GIVEN_UP_AFTER, (
                f"{node} rebooted while {pending} is under way"
            )
            left = sum(1 for n, rt in before.nodes.items() if rt.member and n != node)
            assert 2 * left > total, f"rebooting {node} leaves {left} of {total}"
            assert d.state.reboot is not None and d.state.reboot.node == node
        for comp, rt in d.state.components.items():
            if rt.offline_by is OfflineBy.FAULT:
                assert rt.health in (Health.FAILED, Health.ABSENT) and rt.why, comp
                assert rt.state is AvailabilityState.OFFLINE, comp
