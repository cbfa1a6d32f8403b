"""CRIM policy: scenarios, one per failure or operator action, on small generated clusters."""

from __future__ import annotations

import dataclasses

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import (
    AssignRole,
    Publish,
    RebootNode,
    RecoverComponent,
    Repair,
    TakeOffline,
)
from haos.cluster.crim.policy import next_deadline
from haos.cluster.crim.state import Health
from haos.model.redundancy import RecoveryPolicy
from haos.model.redundancy import RedundancyModel as RM
from haos.model.reports import (
    ErrorKind,
    ErrorReport,
    RecoveryLevel,
    ServiceOutage,
    ServiceRestored,
)
from haos.model.states import AvailabilityState as S
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.crimdriver import CrimDriver, kinds


def app(n: int, name: str = "demo") -> str:
    return f"shelf1/slot{n}/node/{name}"


A, B, C = app(1), app(2), app(3)
SI = "demo-si0"


def two_n(recovery: RecoveryPolicy | None = None, nodes: int = 3) -> CrimDriver:
    cfg = generated_cluster(
        nodes, [GroupPlan("demo", RM.TWO_N, list(range(1, nodes + 1)))], recovery=recovery
    )
    d = CrimDriver(cfg)
    d.boot()
    return d


def crash(d: CrimDriver, comp: str, at: float, kind: ErrorKind = ErrorKind.CRASH) -> None:
    d.go(ev.ErrorReported(ErrorReport(comp, kind, observed_at=at, source="test")), at)


def notes(decision_actions: tuple[object, ...], cls: type) -> list[object]:
    return [
        a.notification
        for a in decision_actions
        if isinstance(a, Publish) and isinstance(a.notification, cls)
    ]


# --- assignment ---------------------------------------------------------------------------


def test_2n_first_available_is_primary_second_secondary_third_spare() -> None:
    d = two_n()
    assert d.roles("demo") == {A: "primary", B: "secondary", C: "spare"}
    assert d.state.served == {SI}


def test_2n_primary_is_never_demoted_to_secondary_directly_on_switchover() -> None:
    d = two_n()
    dec = d.go(ev.OperatorSwitchover(SI), 1.0)
    moves = [(a.component, a.old, a.new) for a in dec.actions if isinstance(a, AssignRole)]
    assert moves == [
        (A, S.PRIMARY, S.SPARE),
        (B, S.SECONDARY, S.PRIMARY),
        (A, S.SPARE, S.SECONDARY),
    ]
    assert dec.actions[0].graceful  # type: ignore[union-attr]
    assert "switchover of demo-si0 from" in dec.reason
    assert not notes(dec.actions, ServiceOutage)  # a planned switchover is no outage


@pytest.mark.parametrize(
    ("plan", "expect_primaries", "expect_secondaries"),
    [
        pytest.param(
            GroupPlan("g", RM.N_PLUS_M, [1, 2, 3, 4], instances=3, active=2, standby=1),
            {"g-si0": 1, "g-si1": 1, "g-si2": 1},
            {"g-si0": 1, "g-si1": 1, "g-si2": 1},
            id="n_plus_m_each_instance_one_primary_one_secondary",
        ),
        pytest.param(
            GroupPlan("g", RM.N_WAY_ACTIVE, [1, 2, 3, 4], instances=2, active=4, actives=2),
            {"g-si0": 2, "g-si1": 2},
            {"g-si0": 0, "g-si1": 0},
            id="n_way_active_each_instance_served_by_two_distinct_primaries",
        ),
        pytest.param(
            GroupPlan("g", RM.NO_REDUNDANCY, [1, 2, 3], instances=2, active=2, standby=0),
            {"g-si0": 1, "g-si1": 1},
            {"g-si0": 0, "g-si1": 0},
            id="no_redundancy_one_primary_each_and_a_spare",
        ),
        pytest.param(
            GroupPlan("g", RM.HOT_RESTART, [1, 2], instances=1, standby=0),
            {"g-si0": 1},
            {"g-si0": 0},
            id="hot_restart_one_primary_no_standby",
        ),
    ],
)
def test_assignment_per_redundancy_model(
    plan: GroupPlan, expect_primaries: dict[str, int], expect_secondaries: dict[str, int]
) -> None:
    d = CrimDriver(generated_cluster(4, [plan]))
    d.boot()
    assert {i: len(d.primaries(i)) for i in expect_primaries} == expect_primaries
    assert {i: len(d.secondaries(i)) for i in expect_secondaries} == expect_secondaries


def test_n_plus_m_standby_backs_all_instances_and_takes_over_one() -> None:
    plan = GroupPlan("g", RM.N_PLUS_M, [1, 2, 3, 4], instances=3, active=2, standby=1)
    d = CrimDriver(generated_cluster(4, [plan], RecoveryPolicy(restart_max=0, soft_reset_max=0)))
    d.boot()
    standby = d.secondaries("g-si0")[0]
    assert d.secondaries("g-si1") == d.secondaries("g-si2") == [standby]
    victim = d.primaries("g-si0")[0]
    crash(d, victim, 1.0)
    assert d.primaries("g-si0") == [standby]
    assert all(len(d.primaries(i)) == 1 for i in ("g-si0", "g-si1", "g-si2"))
    # the promoted standby gave up its other standby duties; the spare backs them now
    for inst in ("g-si1", "g-si2"):
        assert d.secondaries(inst) and d.secondaries(inst)[0] != standby


# --- the recovery ladder ------------------------------------------------------------------


def test_crashed_primary_is_restarted_in_place_and_resumes() -> None:
    d = two_n()
    crash(d, A, 1.0)
    dec = d.log[-1]
    assert RecoverComponent(A, RecoveryLevel.RESTART) in dec.actions
    assert d.state.components[A].health is Health.RECOVERING
    assert d.role(A) is S.PRIMARY
    assert [n.instance for n in notes(dec.actions, ServiceOutage)] == [SI]  # type: ignore[attr-defined]
    dec = d.go(ev.ComponentAvailable(A), 1.3)
    assert AssignRole(A, S.PRIMARY, S.PRIMARY, (SI,)) in dec.actions
    assert notes(dec.actions, ServiceRestored)
    assert "recovered and resumed as primary" in dec.reason


def test_hang_is_soft_reset_first() -> None:
    d = two_n()
    crash(d, A, 1.0, ErrorKind.AUDIT_OVERDUE)
    assert RecoverComponent(A, RecoveryLevel.SOFT_RESET) in d.log[-1].actions


@pytest.mark.parametrize(
    ("restart_max", "expected"),
    [
        pytest.param(2, ["restart", "restart", "failover"], id="two_restarts_then_failover"),
        pytest.param(0, ["failover"], id="no_restarts_allowed_fails_over_at_once"),
    ],
)
def test_repeated_crashes_climb_the_ladder(restart_max: int, expected: list[str]) -> None:
    d = two_n(RecoveryPolicy(restart_max=restart_max, component_probation=60.0))
    seen = []
    t = 1.0
    for _ in expected:
        primary = d.primaries(SI)[0]
        crash(d, primary, t)
        dec = d.log[-1]
        if any(isinstance(a, TakeOffline) for a in dec.actions):
            seen.append("failover")
        else:
            seen.append("restart")
            d.go(ev.ComponentAvailable(primary), t + 0.3)
        t += 1.0
    assert seen == expected


def test_failover_promotes_secondary_and_takes_failed_unit_offline_then_repairs() -> None:
    d = two_n(RecoveryPolicy(restart_max=0))
    dec = d.go(ev.ErrorReported(ErrorReport(A, ErrorKind.CRASH, 0.9)), 1.0)
    assert d.roles("demo") == {A: "offline", B: "primary", C: "secondary"}
    k = kinds(dec.actions)
    assert k.index("TakeOffline") < k.index("Repair")
    outage = notes(dec.actions, ServiceOutage)
    restored = notes(dec.actions, ServiceRestored)
    assert outage and restored
    assert outage[0].at == 0.9  # type: ignore[attr-defined]  # dated from the cause
    d.go(ev.ComponentAvailable(A), 2.0)
    assert d.role(A) is S.SPARE


def test_probation_expiry_resets_the_ladder() -> None:
    d = two_n(RecoveryPolicy(restart_max=1, component_probation=10.0))
    crash(d, A, 1.0)
    d.go(ev.ComponentAvailable(A), 1.2)
    crash(d, A, 20.0)  # the earlier restart is outside the window
    assert RecoverComponent(A, RecoveryLevel.RESTART) in d.log[-1].actions


def test_recovery_that_does_not_complete_in_time_escalates_on_tick() -> None:
    d = two_n(RecoveryPolicy(recovery_timeout=2.0))
    crash(d, A, 1.0, ErrorKind.HANG)
    assert next_deadline(d.state) == pytest.approx(3.0)
    assert kinds(d.go(ev.Tick(), 2.5).actions) == []
    dec = d.go(ev.Tick(), 3.0)
    assert RecoverComponent(A, RecoveryLevel.RESTART) in dec.actions
    assert "did not complete in time" in dec.reason


def test_component_failing_again_while_recovering_escalates() -> None:
    d = two_n()
    crash(d, A, 1.0, ErrorKind.HANG)  # soft reset
    crash(d, A, 1.5, ErrorKind.HANG)  # seen after the reset began: it did not help
    assert RecoverComponent(A, RecoveryLevel.RESTART) in d.log[-1].actions


def test_stale_report_from_before_the_recovery_is_ignored() -> None:
    d = two_n()
    crash(d, A, 1.0)
    before = d.state
    dec = d.go(ev.ErrorReported(ErrorReport(A, ErrorKind.CRASH, 0.99)), 1.1)
    assert dec.actions == () and "stale" in dec.reason
    assert d.state.components == before.components


def test_too_many_group_failovers_on_one_node_reboot_that_node() -> None:
    d = two_n(
        RecoveryPolicy(
            restart_max=0, failover_max=1, group_probation=100.0, component_probation=10.0
        )
    )
    crash(d, A, 1.0)  # fail-over 1, of A on n1
    d.go(ev.ComponentAvailable(A), 2.0)
    d.go(ev.OperatorSwitchover(SI), 15.0)  # B -> C
    d.go(ev.OperatorSwitchover(SI), 16.0)  # C -> A, off probation by now
    assert d.primaries(SI) == [A]
    crash(d, A, 20.0)  # the group used up its fail-overs, all on n1: reboot n1
    dec = d.log[-1]
    assert [a.node for a in dec.actions if isinstance(a, RebootNode)] == ["n1"]
    assert d.state.components[A].health is Health.ABSENT
    assert len(d.primaries(SI)) == 1 and d.primaries(SI) != [A]


def test_group_failovers_spread_over_nodes_reboot_nothing() -> None:
    d = two_n(RecoveryPolicy(restart_max=0, failover_max=1, group_probation=100.0))
    crash(d, A, 1.0)  # fail-over 1, on n1
    d.go(ev.ComponentAvailable(A), 2.0)
    crash(d, B, 3.0)  # on n2: the fault follows the component, not a node
    dec = d.log[-1]
    assert not [a for a in dec.actions if isinstance(a, RebootNode)]
    assert "fail-over of" in dec.reason
    assert d.state.components[B].health is Health.FAILED
    assert d.primaries(SI) == [C]


def test_error_on_a_node_component_reboots_that_node() -> None:
    d = two_n()
    crash(d, "shelf1/slot1/node", 1.0, ErrorKind.HARDWARE)
    dec = d.log[-1]
    assert any(isinstance(a, RebootNode) and a.node == "n1" for a in dec.actions)
    assert d.primaries(SI) == [B]


# --- nodes ---------------------------------------------------------------------------------


def test_node_loss_moves_primary_to_secondary_and_spare_becomes_secondary() -> None:
    d = two_n()
    dec = d.go(ev.NodeLeft("n1", at=4.7), 5.0)
    assert d.roles("demo") == {A: "offline", B: "primary", C: "secondary"}
    assert notes(dec.actions, ServiceOutage)[0].at == 4.7  # type: ignore[attr-defined]
    d.go(ev.NodeJoined("n1"), 20.0)
    d.go(ev.ComponentAvailable(A), 20.5)
    assert d.role(A) is S.SPARE


def test_component_of_absent_node_cannot_become_available() -> None:
    d = two_n()
    d.go(ev.NodeLeft("n1"), 1.0)
    dec = d.go(ev.ComponentAvailable(A), 1.1)
    assert dec.refused and "not a member" in dec.reason


# --- operators -----------------------------------------------------------------------------


def test_locking_the_primary_moves_its_work_and_keeps_it_spare() -> None:
    d = two_n()
    d.go(ev.OperatorLock(A), 1.0)
    assert d.roles("demo") == {A: "spare", B: "primary", C: "secondary"}
    d.go(ev.OperatorUnlock(A), 2.0)
    assert d.roles("demo") == {A: "spare", B: "primary", C: "secondary"}
    d.go(ev.OperatorLock(C), 3.0)
    assert d.role(A) is S.SECONDARY  # the unlocked spare is used again


def test_locking_a_node_moves_everything_it_hosts() -> None:
    d = two_n()
    d.go(ev.OperatorLock("n1"), 1.0)
    assert d.primaries(SI) == [B] and d.secondaries(SI) == [C]


def test_locking_a_group_unassigns_its_instances() -> None:
    d = two_n()
    dec = d.go(ev.OperatorLock("demo"), 1.0)
    assert d.primaries(SI) == [] and "group demo locked" in dec.reason
    d.go(ev.OperatorUnlock("demo"), 2.0)
    assert len(d.primaries(SI)) == 1


@pytest.mark.parametrize(
    ("setup", "event", "fragment"),
    [
        pytest.param([], ev.OperatorSwitchover(B), "not primary", id="switchover_of_secondary"),
        pytest.param([], ev.OperatorSwitchover("n1"), "not a node", id="switchover_of_node"),
        pytest.param([], ev.OperatorLock("nope"), "unknown target", id="lock_unknown_target"),
        pytest.param([], ev.OperatorLock(SI), "service instance", id="lock_an_instance"),
        pytest.param([], ev.OperatorOnline(A), "not off-line", id="online_when_not_offline"),
        pytest.param([], ev.ComponentAvailable("x/y"), "unknown component", id="unknown_comp"),
        pytest.param([], ev.NodeLeft("n9"), "unknown node", id="unknown_node_left"),
        pytest.param(
            [ev.NodeLeft("n2"), ev.NodeLeft("n3")],
            ev.OperatorSwitchover(SI),
            "no healthy standby",
            id="switchover_without_standby",
        ),
    ],
)
def test_invalid_requests_are_refused_and_change_nothing(
    setup: list[ev.Event], event: ev.Event, fragment: str
) -> None:
    d = two_n()
    for e in setup:
        d.go(e, 1.0)
    before = d.state
    dec = d.go(event, 2.0)
    assert dec.refused and fragment in dec.reason
    assert dec.actions == () and d.state is before


def test_operator_offline_stops_the_component_until_brought_online() -> None:
    d = two_n()
    dec = d.go(ev.OperatorOffline(A), 1.0)
    assert TakeOffline(A, "off-line by operator") in dec.actions
    assert d.roles("demo") == {A: "offline", B: "primary", C: "secondary"}
    dec = d.go(ev.ComponentAvailable(A), 1.5)  # started by someone anyway: stop it again
    assert kinds(dec.actions) == ["TakeOffline"] and d.role(A) is S.OFFLINE
    dec = d.go(ev.OperatorOnline(A), 2.0)
    assert Repair(A) in dec.actions
    d.go(ev.ComponentAvailable(A), 2.5)
    assert d.role(A) is S.SPARE


def test_component_may_ask_to_go_offline_and_come_back() -> None:
    d = two_n()
    dec = d.go(ev.OfflineRequested(A, "diagnostics"), 1.0)
    assert "own request (diagnostics)" in dec.reason
    assert d.primaries(SI) == [B]
    d.go(ev.ComponentAvailable(A), 5.0)
    assert d.role(A) is S.SPARE


def test_hot_restart_restarts_in_place_then_moves_when_exhausted() -> None:
    plan = GroupPlan("g", RM.HOT_RESTART, [1, 2], standby=0)
    d = CrimDriver(generated_cluster(2, [plan], RecoveryPolicy(restart_max=1)))
    d.boot()
    first = d.primaries("g-si0")[0]
    crash(d, first, 1.0)
    assert RecoverComponent(first, RecoveryLevel.RESTART) in d.log[-1].actions
    d.go(ev.ComponentAvailable(first), 1.2)
    crash(d, first, 2.0)
    assert d.primaries("g-si0") not in ([first], [])


def test_decisions_are_deterministic() -> None:
    runs = []
    for _ in range(2):
        d = two_n()
        crash(d, A, 1.0)
        d.go(ev.NodeLeft("n2"), 2.0)
        runs.append([(x.actions, x.reason) for x in d.log])
    assert runs[0] == runs[1]


def test_failback_returns_work_to_the_preferred_member_when_it_is_healthy_again() -> None:
    cfg = generated_cluster(
        3, [GroupPlan("demo", RM.TWO_N, [1, 2, 3])], RecoveryPolicy(restart_max=0)
    )
    cfg = dataclasses.replace(
        cfg, groups=tuple(dataclasses.replace(g, failback=True) for g in cfg.groups)
    )
    d = CrimDriver(cfg)
    d.boot()
    crash(d, A, 1.0)
    assert d.primaries(SI) == [B]
    d.go(ev.ComponentAvailable(A), 2.0)
    assert d.primaries(SI) == [B]  # A just failed: no work moves back to it on probation
    assert next_deadline(d.state, d.topo) == pytest.approx(61.0)
    dec = d.go(ev.Tick(), 61.0)
    assert d.primaries(SI) == [A]
    moves = [
        (a.component, a.old, a.new, a.graceful) for a in dec.actions if isinstance(a, AssignRole)
    ]
    assert (B, S.PRIMARY, S.SPARE, True) in moves
    assert d.secondaries(SI) == [C] and d.role(B) is S.SPARE


def test_without_failback_work_stays_where_it_moved() -> None:
    d = two_n(RecoveryPolicy(restart_max=0))
    crash(d, A, 1.0)
    d.go(ev.ComponentAvailable(A), 2.0)
    assert d.primaries(SI) == [B]
