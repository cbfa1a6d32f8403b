"""Placement under the models' capacity: the same spread whatever order members come up in.

A component serves at most ``ceil(instances / active)`` instances as primary and backs at
most ``ceil(instances / standby)`` as secondary. Start-up in any order, and recovery, end
in that spread; a served instance moves only onto an idle member, gracefully.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import AssignRole, Publish
from haos.cluster.crim.policy import next_deadline
from haos.model.redundancy import RecoveryPolicy
from haos.model.redundancy import RedundancyModel as RM
from haos.model.reports import ErrorKind, ErrorReport, ServiceOutage
from haos.model.states import AvailabilityState as S
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.crimdriver import CrimDriver

TWO_ON_THREE = GroupPlan("g", RM.N_PLUS_M, [1, 2, 3], instances=2, active=2, standby=1)
THREE_ON_THREE = GroupPlan("g", RM.N_PLUS_M, [1, 2, 3], instances=3, active=2, standby=1)
THREE_ON_FOUR = GroupPlan("g", RM.N_PLUS_M, [1, 2, 3, 4], instances=3, active=2, standby=1)
TWO_STANDBYS = GroupPlan("g", RM.N_PLUS_M, [1, 2, 3, 4], instances=2, active=2, standby=2)
NO_REDUNDANCY = GroupPlan("g", RM.NO_REDUNDANCY, [1, 2, 3], instances=2, active=2, standby=0)
PLANS = [TWO_ON_THREE, THREE_ON_THREE, THREE_ON_FOUR, TWO_STANDBYS, NO_REDUNDANCY]
PLAN_IDS = ["2+1_two_on_three", "2+1_three_on_three", "2+1_three_on_four", "2+2", "no_redundancy"]


def app(n: int) -> str:
    return f"shelf1/slot{n}/node/g"


def driver(plan: GroupPlan, recovery: RecoveryPolicy | None = None) -> CrimDriver:
    return CrimDriver(generated_cluster(len(plan.nodes), [plan], recovery))


def assert_spread(d: CrimDriver) -> None:
    """Every instance served and backed; no member beyond its capacity; N primaries in use."""
    spec, shape = d.topo.groups["g"], d.topo.shapes["g"]
    instances = d.topo.instances_of["g"]
    for inst in instances:
        assert len(d.primaries(inst)) == 1, d.roles("g")
        if spec.model.has_standby:
            assert len(d.secondaries(inst)) == 1, d.roles("g")
    loads = {m: len(d.state.components[m].instances) for m in spec.members}
    for m in spec.members:
        role = d.role(m)
        if role is S.PRIMARY:
            assert loads[m] <= shape.primary_capacity, (m, loads)
        elif role is S.SECONDARY:
            assert loads[m] <= shape.standby_capacity, (m, loads)
    primaries = {m for inst in instances for m in d.primaries(inst)}
    assert len(primaries) == min(spec.active, len(instances)), d.roles("g")
    secondaries = {m for inst in instances for m in d.secondaries(inst)}
    assert len(secondaries) <= spec.standby


def interleavings(nodes: int) -> Iterator[list[ev.Event]]:
    """Every order of the nodes joining and their members becoming available (a member
    only after its node)."""
    events: list[ev.Event] = []
    for n in range(1, nodes + 1):
        events += [ev.NodeJoined(f"n{n}"), ev.ComponentAvailable(app(n))]
    for order in itertools.permutations(events):
        joined: set[str] = set()
        ok = True
        for e in order:
            if isinstance(e, ev.NodeJoined):
                joined.add(e.node)
            elif isinstance(e, ev.ComponentAvailable) and f"n{e.component[11]}" not in joined:
                ok = False
                break
        if ok:
            yield list(order)


@pytest.mark.parametrize("plan", PLANS, ids=PLAN_IDS)
def test_every_availability_order_ends_in_the_same_spread(plan: GroupPlan) -> None:
    for order in itertools.permutations(app(n) for n in plan.nodes):
        d = driver(plan)
        d.boot(order)
        assert_spread(d)


@pytest.mark.parametrize(
    "plan", [TWO_ON_THREE, THREE_ON_THREE, NO_REDUNDANCY], ids=["2+1", "2+1_three", "no_red"]
)
def test_every_interleaving_of_joins_and_starts_ends_in_the_spread(plan: GroupPlan) -> None:
    count = 0
    for order in interleavings(len(plan.nodes)):
        d = driver(plan)
        for i, e in enumerate(order):
            assert not d.go(e, float(i)).refused
        assert_spread(d)
        count += 1
    assert count == 90  # 6! orders, each node's join before its member's start


def test_two_instances_on_three_nodes_get_two_primaries_and_one_standby() -> None:
    """The reported case: active 2, standby 1, two instances: never both on one primary."""
    for order in itertools.permutations([app(1), app(2), app(3)]):
        d = driver(TWO_ON_THREE)
        d.boot(order)
        p0, p1 = d.primaries("g-si0"), d.primaries("g-si1")
        assert p0 != p1
        (standby,) = {app(n) for n in (1, 2, 3)} - {*p0, *p1}
        assert d.secondaries("g-si0") == d.secondaries("g-si1") == [standby]


def test_a_returning_member_relieves_an_overloaded_primary_gracefully() -> None:
    d = driver(TWO_ON_THREE)
    d.boot()
    first, second = d.primaries("g-si0")[0], d.primaries("g-si1")[0]
    standby = d.secondaries("g-si0")[0]
    node = d.topo.host_of
    d.go(ev.NodeLeft(node[standby]), 1.0)
    d.go(ev.NodeLeft(node[first]), 2.0)
    assert d.primaries("g-si0") == d.primaries("g-si1") == [second]  # served, over capacity
    # Back first: it becomes the standby, since moving a served instance would leave both
    # unprotected; nothing moves.
    d.go(ev.NodeJoined(node[standby]), 3.0)
    dec = d.go(ev.ComponentAvailable(standby), 3.1)
    assert {a.component for a in dec.actions if isinstance(a, AssignRole)} == {standby}
    assert d.secondaries("g-si0") == d.secondaries("g-si1") == [standby]
    # Back second: an idle member, so one instance moves to it, gracefully, with no outage.
    d.go(ev.NodeJoined(node[first]), 4.0)
    dec = d.go(ev.ComponentAvailable(first), 4.1)
    assert_spread(d)
    moves = [a for a in dec.actions if isinstance(a, AssignRole)]
    assert moves == [
        AssignRole(first, S.OFFLINE, S.SPARE, ()),
        AssignRole(second, S.PRIMARY, S.PRIMARY, ("g-si0",), graceful=True),
        AssignRole(first, S.SPARE, S.PRIMARY, ("g-si1",)),
    ]
    outages = [
        a
        for a in dec.actions
        if isinstance(a, Publish) and isinstance(a.notification, ServiceOutage)
    ]
    assert not outages


def test_failover_and_repair_keep_the_spread() -> None:
    d = driver(TWO_ON_THREE, RecoveryPolicy(soft_reset_max=0, restart_max=0))
    d.boot()
    victim = d.primaries("g-si0")[0]
    standby = d.secondaries("g-si0")[0]
    d.go(ev.ErrorReported(ErrorReport(victim, ErrorKind.CRASH, 0.9, "test")), 1.0)
    assert d.primaries("g-si0") == [standby]  # the standby, with the checkpoint, takes over
    d.go(ev.ComponentAvailable(victim), 1.5)  # repaired
    assert_spread(d)
    assert d.secondaries("g-si0") == d.secondaries("g-si1") == [victim]


def test_work_within_capacity_is_not_moved_when_a_member_returns() -> None:
    d = driver(THREE_ON_FOUR)
    d.boot()
    (spare,) = [m for m in d.topo.groups["g"].members if d.role(m) is S.SPARE]
    before = dict(d.state.components)
    d.go(ev.NodeLeft(d.topo.host_of[spare]), 1.0)
    d.go(ev.NodeJoined(d.topo.host_of[spare]), 2.0)
    dec = d.go(ev.ComponentAvailable(spare), 3.0)
    assert [a for a in dec.actions if isinstance(a, AssignRole)] == [
        AssignRole(spare, S.OFFLINE, S.SPARE, ())
    ]
    others = [m for m in d.topo.groups["g"].members if m != spare]
    assert all(d.state.components[m].instances == before[m].instances for m in others)


def test_a_primary_back_from_a_node_loss_does_not_take_its_work_back() -> None:
    d = driver(TWO_ON_THREE)
    d.boot()
    lost = d.primaries("g-si0")[0]
    d.go(ev.NodeLeft(d.topo.host_of[lost]), 1.0)
    serving = {i: d.primaries(i) for i in ("g-si0", "g-si1")}
    d.go(ev.NodeJoined(d.topo.host_of[lost]), 2.0)
    dec = d.go(ev.ComponentAvailable(lost), 3.0)
    assert {i: d.primaries(i) for i in ("g-si0", "g-si1")} == serving
    assert not [a for a in dec.actions if isinstance(a, AssignRole) and a.component != lost]
    assert_spread(d)


def test_work_spreads_onto_a_member_once_its_probation_ends() -> None:
    """A member that failed over recently is last in line: an overloaded primary waits for
    its probation to end, then (on the tick booked for it) hands it an instance."""
    policy = RecoveryPolicy(soft_reset_max=0, restart_max=0, component_probation=60.0)
    d = driver(NO_REDUNDANCY, policy)
    d.boot()
    a, b = d.primaries("g-si0")[0], d.primaries("g-si1")[0]
    (c,) = {app(1), app(2), app(3)} - {a, b}
    d.go(ev.ErrorReported(ErrorReport(c, ErrorKind.CRASH, 0.9, "test")), 1.0)
    d.go(ev.ComponentAvailable(c), 1.5)  # repaired, on probation until 61.0
    d.go(ev.ErrorReported(ErrorReport(b, ErrorKind.CRASH, 1.9, "test")), 2.0)
    assert d.primaries("g-si0") == d.primaries("g-si1") == [a]  # not onto c, on probation
    d.go(ev.ComponentAvailable(b), 2.5)  # repaired, on probation until 62.0
    assert d.role(b) is S.SPARE and d.role(c) is S.SPARE
    assert next_deadline(d.state, d.topo) == pytest.approx(61.0)
    d.go(ev.Tick(), 61.0)
    assert d.primaries("g-si1") == [c] and d.primaries("g-si0") == [a]


def test_an_instance_switchover_keeps_the_instance_moved() -> None:
    d = driver(NO_REDUNDANCY)
    d.boot()
    a = d.primaries("g-si0")[0]
    (spare,) = [m for m in d.topo.groups["g"].members if d.role(m) is S.SPARE]
    d.go(ev.NodeLeft(d.topo.host_of[spare]), 1.0)
    dec = d.go(ev.OperatorSwitchover("g-si0"), 2.0)
    assert not dec.refused
    assert a not in d.primaries("g-si0")
    assert_spread(d)  # the taker hands its other instance to the member it relieved
    assert d.primaries("g-si1") == [a]
    assert dec.reason.startswith(f"switchover of g-si0 from {a} to ")
