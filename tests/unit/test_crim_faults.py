"""CRIM: faults no recovery in place can cure, probation after a repair, and safe reboots.

The scenario behind these tables: a 2N group whose members all run a program that cannot
start on any node. Each failure must take one member out of service with its reason; none
may bounce forever between the members, and none may reboot a node.
"""

from __future__ import annotations

import dataclasses

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import (
    Action,
    AssignRole,
    Publish,
    RebootNode,
    RecoverComponent,
    Repair,
    TakeOffline,
)
from haos.cluster.crim.snapshot import from_data, to_data
from haos.cluster.crim.state import Health, OfflineBy, Reboot
from haos.config.model import ManagerSpec
from haos.model.redundancy import RecoveryPolicy
from haos.model.redundancy import RedundancyModel as RM
from haos.model.reports import (
    ComponentMisconfigured,
    ComponentOutOfService,
    ErrorKind,
    ErrorReport,
)
from haos.model.states import AvailabilityState as S
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.crimdriver import CrimDriver


def app(n: int) -> str:
    return f"shelf1/slot{n}/node/demo"


def node(n: int) -> str:
    return f"shelf1/slot{n}/node"


A, B, C, D = app(1), app(2), app(3), app(4)
SI = "demo-si0"
NOT_INSTALLED = "not installed on this node: start returned OCF_ERR_INSTALLED (exit 5)"


def cluster(
    nodes: int = 3, members: list[int] | None = None, recovery: RecoveryPolicy | None = None
) -> CrimDriver:
    plan = GroupPlan("demo", RM.TWO_N, members or list(range(1, nodes + 1)))
    d = CrimDriver(generated_cluster(nodes, [plan], recovery=recovery))
    d.boot()
    return d


def report(
    d: CrimDriver, comp: str, at: float, kind: ErrorKind, detail: str = ""
) -> tuple[Action, ...]:
    r = ErrorReport(comp, kind, observed_at=at - 0.001, source="ocf:heartbeat:x", detail=detail)
    return d.go(ev.ErrorReported(r), at).actions


def of(actions: tuple[Action, ...], cls: type) -> list[object]:
    return [a for a in actions if isinstance(a, cls)] + [
        a.notification
        for a in actions
        if isinstance(a, Publish) and isinstance(a.notification, cls)
    ]


# --- hard errors and misconfiguration -------------------------------------------------------


@pytest.mark.parametrize(
    ("role_of_a", "kind"),
    [
        pytest.param(S.PRIMARY, ErrorKind.HARD, id="primary_not_installed"),
        pytest.param(S.SECONDARY, ErrorKind.HARD, id="secondary_not_installed"),
        pytest.param(S.SPARE, ErrorKind.HARD, id="spare_not_installed"),
    ],
)
def test_a_hard_error_is_never_retried_on_the_node_and_the_member_stays_out(
    role_of_a: S, kind: ErrorKind
) -> None:
    order = {S.PRIMARY: [A, B, C], S.SECONDARY: [B, A, C], S.SPARE: [B, C, A]}[role_of_a]
    d = CrimDriver(generated_cluster(3, [GroupPlan("demo", RM.TWO_N, [1, 2, 3])]))
    d.boot(order)
    assert d.role(A) is role_of_a
    actions = report(d, A, 1.0, kind, NOT_INSTALLED)
    assert not of(actions, RecoverComponent) and not of(actions, Repair)
    assert TakeOffline(A, d.state.components[A].why) in actions
    rt = d.state.components[A]
    assert (rt.health, rt.offline_by, rt.state) == (Health.FAILED, OfflineBy.FAULT, S.OFFLINE)
    assert NOT_INSTALLED in rt.why
    [out] = of(actions, ComponentOutOfService)
    assert out.component == A and NOT_INSTALLED in out.reason  # type: ignore[attr-defined]
    assert len(d.primaries(SI)) == 1 and A not in d.primaries(SI)
    # it does not come back by itself: a start that announces it is stopped again
    actions = d.go(ev.ComponentAvailable(A), 2.0).actions
    assert of(actions, TakeOffline) and d.state.components[A].offline_by is OfflineBy.FAULT


def test_a_component_broken_on_every_node_ends_out_of_service_without_a_reboot() -> None:
    d = cluster(3, members=[1, 3])  # the reported case: members on n1 and n3 of three nodes
    seen: list[Action] = []
    t = 1.0
    for _ in range(2):
        [primary] = d.primaries(SI)
        seen += report(d, primary, t, ErrorKind.HARD, NOT_INSTALLED)
        t += 0.1
    assert not of(tuple(seen), RebootNode)
    assert d.primaries(SI) == []
    for m in (A, C):
        rt = d.state.components[m]
        assert rt.offline_by is OfflineBy.FAULT and "hard error" in rt.why, m
    assert all(rt.member for rt in d.state.nodes.values())


def test_a_misconfigured_component_is_stopped_everywhere_and_raises_the_alarm() -> None:
    d = cluster(3)
    actions = report(d, A, 1.0, ErrorKind.MISCONFIGURED, "start returned OCF_ERR_CONFIGURED")
    for m in (A, B, C):
        rt = d.state.components[m]
        assert (rt.health, rt.offline_by, rt.state) == (Health.FAILED, OfflineBy.FAULT, S.OFFLINE)
        assert "misconfigured" in rt.why
    [alarm] = of(actions, ComponentMisconfigured)
    assert alarm.component == A and set(alarm.stopped) == {A, B, C}  # type: ignore[attr-defined]
    assert {o.component for o in of(actions, ComponentOutOfService)} == {A, B, C}  # type: ignore[attr-defined]
    assert not of(actions, Repair) and not of(actions, RebootNode)
    # no member was handed work on the way out
    promoted = [a.component for a in of(actions, AssignRole) if a.new is S.PRIMARY]  # type: ignore[attr-defined]
    assert promoted == []


def test_a_misconfiguration_stops_only_the_members_run_by_the_same_program() -> None:
    cfg = generated_cluster(3, [GroupPlan("demo", RM.TWO_N, [1, 2, 3])])
    dummy = ManagerSpec("ocf", agent="ocf:heartbeat:Dummy")
    other = ManagerSpec("ocf", agent="ocf:heartbeat:Other")
    cfg = dataclasses.replace(cfg, managers={A: dummy, B: dummy, C: other})
    d = CrimDriver(cfg)
    d.boot()
    report(d, A, 1.0, ErrorKind.MISCONFIGURED, "bad")
    assert d.state.components[B].offline_by is OfflineBy.FAULT
    assert d.state.components[C].offline_by is None and d.primaries(SI) == [C]


@pytest.mark.parametrize("kind", [ErrorKind.HARD, ErrorKind.MISCONFIGURED])
def test_the_operator_brings_a_held_component_back_and_its_history_is_forgotten(
    kind: ErrorKind,
) -> None:
    d = cluster(3)
    report(d, A, 1.0, kind, "x")
    dec = d.go(ev.OperatorOnline(A), 5.0)
    assert not dec.refused and Repair(A) in dec.actions and "cleared" in dec.reason
    rt = d.state.components[A]
    assert rt.offline_by is None and rt.why == "" and rt.failures == ()
    d.go(ev.ComponentAvailable(A), 6.0)
    assert d.state.components[A].health is Health.HEALTHY
    assert d.role(A) in (S.SPARE, S.SECONDARY, S.PRIMARY)


def test_a_hard_error_about_a_component_being_started_holds_it_with_its_reason() -> None:
    d = cluster(3)
    d.go(ev.NodeLeft("n3"), 1.0)
    d.go(ev.NodeJoined("n3"), 2.0)  # C is being made ready again; its start fails
    report(d, C, 3.0, ErrorKind.HARD, NOT_INSTALLED)
    rt = d.state.components[C]
    assert rt.offline_by is OfflineBy.FAULT and NOT_INSTALLED in rt.why


# --- the same fault without a classified error: probation ends the loop ---------------------


def run_start_failing_everywhere(d: CrimDriver, steps: int = 200) -> list[Action]:
    """Every start of a member fails (a generic error, as an agent reports a failed action);
    a cold spare comes up fine. Feed the CRIM what the nodes would say until it is quiet."""
    seen: list[Action] = []
    pending: list[ev.Event] = [
        ev.ErrorReported(ErrorReport(d.primaries(SI)[0], ErrorKind.ERROR, 0.999, "agent"))
    ]
    t = 1.0
    while pending and steps:
        steps -= 1
        event = pending.pop(0)
        if isinstance(event, ev.ErrorReported):
            r = event.report
            event = ev.ErrorReported(dataclasses.replace(r, observed_at=t - 0.001))
        actions = d.go(event, t).actions
        seen += actions
        t += 0.05
        for a in actions:
            failed_start = isinstance(a, RecoverComponent) or (
                isinstance(a, AssignRole) and a.new is S.PRIMARY and a.old is not S.PRIMARY
            )
            if failed_start:
                comp = a.component  # type: ignore[union-attr]
                pending.append(ev.ErrorReported(ErrorReport(comp, ErrorKind.ERROR, t, "agent")))
            elif isinstance(a, Repair):
                pending.append(ev.ComponentAvailable(a.component))
    assert not pending, "the CRIM kept bouncing the fault between the members"
    return seen


@pytest.mark.parametrize(
    ("nodes", "members"),
    [
        pytest.param(3, [1, 3], id="reported_case_2n_on_n1_n3_of_three"),
        pytest.param(3, [1, 2, 3], id="2n_with_a_spare"),
        pytest.param(2, [1, 2], id="two_node_cluster"),
        pytest.param(5, [1, 2, 3, 4, 5], id="five_members"),
    ],
)
def test_a_start_failing_everywhere_ends_out_of_service_and_reboots_nothing(
    nodes: int, members: list[int]
) -> None:
    d = cluster(nodes, members=members)
    seen = run_start_failing_everywhere(d)
    assert [a for a in seen if isinstance(a, RebootNode)] == []
    assert d.primaries(SI) == []
    names = [app(m) for m in members]
    held = [m for m in names if d.state.components[m].offline_by is OfflineBy.FAULT]
    assert held, "no member was taken out of service"
    for m in names:
        rt = d.state.components[m]
        assert rt.health is Health.FAILED and rt.state is S.OFFLINE, m
    for m in held:
        assert "probation" in d.state.components[m].why, m
    assert all(rt.member for rt in d.state.nodes.values())


def test_a_member_on_probation_is_the_last_choice_for_a_take_over() -> None:
    d = cluster(4, recovery=RecoveryPolicy(restart_max=0))
    report(d, A, 1.0, ErrorKind.CRASH)  # A fails over: B primary, C secondary
    d.go(ev.ComponentAvailable(A), 1.5)  # repaired, on probation
    d.go(ev.OperatorLock(D), 2.0)
    report(d, C, 3.0, ErrorKind.CRASH)  # the only standby left is A
    assert d.secondaries(SI) == [A]
    d.go(ev.OperatorUnlock(D), 4.0)
    report(d, B, 5.0, ErrorKind.CRASH)  # A is the own standby, but D has not just failed
    assert d.primaries(SI) == [D]
    assert d.secondaries(SI) == [A]


def test_a_member_failing_again_within_probation_is_held_but_one_that_proved_itself_not() -> None:
    d = cluster(2, recovery=RecoveryPolicy(restart_max=0, component_probation=60.0))
    report(d, A, 1.0, ErrorKind.CRASH)
    d.go(ev.ComponentAvailable(A), 2.0)
    assert d.state.components[A].failures == (1.0,)
    report(d, B, 100.0, ErrorKind.CRASH)  # B off probation: repaired
    d.go(ev.ComponentAvailable(B), 101.0)
    assert d.state.components[B].offline_by is None and d.primaries(SI) == [A]
    actions = report(d, A, 110.0, ErrorKind.CRASH)  # A's earlier fail-over is 109 s old
    assert Repair(A) in actions and d.state.components[A].offline_by is None
    d.go(ev.ComponentAvailable(A), 111.0)
    actions = report(d, B, 120.0, ErrorKind.CRASH)  # B failed over at 100: on probation
    assert Repair(B) not in actions
    rt = d.state.components[B]
    assert rt.offline_by is OfflineBy.FAULT and "within its 60 s probation" in rt.why
    assert [o.component for o in of(actions, ComponentOutOfService)] == [B]  # type: ignore[attr-defined]


# --- node reboots ----------------------------------------------------------------------------


def node_error(d: CrimDriver, n: int, at: float) -> tuple[Action, ...]:
    return report(d, node(n), at, ErrorKind.ERROR, "re-attributed from 2 children")


def reboots(actions: tuple[Action, ...]) -> list[str]:
    return [a.node for a in actions if isinstance(a, RebootNode)]


def test_one_reboot_at_a_time_until_the_node_is_back() -> None:
    d = cluster(5)
    assert reboots(node_error(d, 1, 1.0)) == ["n1"]
    assert d.state.reboot == Reboot("n1", 1.0, d.state.reboot.reason)  # type: ignore[union-attr]
    actions = node_error(d, 2, 1.2)  # within 200 ms: not another one
    assert reboots(actions) == []
    why = d.state.components[node(2)].why
    assert "reboot of n2 not ordered: the reboot of n1 ordered at 1.000 s is not over yet" in why
    assert d.state.components[B].state is S.OFFLINE  # n2's work moved away
    assert TakeOffline(B, why) in actions
    d.go(ev.NodeLeft("n1"), 2.0)
    d.go(ev.NodeJoined("n1"), 20.0)
    assert d.state.reboot is None
    assert reboots(node_error(d, 3, 21.0)) == ["n3"]


def test_a_reboot_that_never_happened_stops_blocking_others_after_a_while() -> None:
    d = cluster(5)
    assert reboots(node_error(d, 1, 1.0)) == ["n1"]  # n1 never leaves: the order was lost
    assert reboots(node_error(d, 2, 500.0)) == []
    assert reboots(node_error(d, 3, 601.0)) == ["n3"]
    assert d.state.reboot is not None and d.state.reboot.node == "n3"


@pytest.mark.parametrize(
    ("nodes", "gone", "target", "allowed", "why"),
    [
        pytest.param(3, [], 1, True, "", id="3_nodes_2_left"),
        pytest.param(3, [3], 1, False, "quorum (1 of 3 nodes", id="3_nodes_1_left"),
        pytest.param(4, [4], 1, False, "quorum (2 of 4 nodes", id="4_nodes_half_left"),
        pytest.param(5, [5], 1, True, "", id="5_nodes_3_left"),
        pytest.param(2, [], 1, True, "", id="2_nodes_two_node_keeps_the_survivor_quorate"),
        pytest.param(2, [2], 1, False, "n1 is the last member", id="2_nodes_last_member"),
    ],
)
def test_a_reboot_never_costs_the_cluster_its_quorum(
    nodes: int, gone: list[int], target: int, allowed: bool, why: str
) -> None:
    d = cluster(nodes)
    for n in gone:
        d.go(ev.NodeLeft(f"n{n}"), 0.5)
    actions = node_error(d, target, 1.0)
    assert reboots(actions) == ([f"n{target}"] if allowed else [])
    rt = d.state.components[node(target)]
    if not allowed:
        assert rt.offline_by is OfflineBy.FAULT and why in rt.why
        assert f"reboot of n{target} not ordered" in rt.why
        assert d.state.components[app(target)].state is S.OFFLINE
        assert all(d.state.nodes[f"n{n}"].member for n in range(1, nodes + 1) if n not in gone)


def test_a_node_held_instead_of_rebooted_comes_back_when_the_operator_says_so() -> None:
    d = cluster(3)
    d.go(ev.NodeLeft("n3"), 0.5)
    node_error(d, 1, 1.0)
    assert d.go(ev.ComponentAvailable(A), 2.0).actions  # told to stop: its node is held
    assert d.state.components[A].health is Health.ABSENT
    dec = d.go(ev.OperatorOnline(node(1)), 3.0)
    assert Repair(A) in dec.actions
    d.go(ev.ComponentAvailable(node(1)), 3.5)
    d.go(ev.ComponentAvailable(A), 4.0)
    assert d.state.components[A].health is Health.HEALTHY


def test_the_state_of_faults_survives_a_snapshot() -> None:
    d = cluster(5)
    report(d, A, 1.0, ErrorKind.HARD, NOT_INSTALLED)
    report(d, B, 2.0, ErrorKind.CRASH)
    node_error(d, 4, 3.0)
    node_error(d, 5, 3.1)
    data = to_data(d.state)
    assert data["components"][A]["why"] and data["reboot"]["node"] == "n4"
    back = from_data(d.topo, data)
    assert back == d.state
    assert back.reboot is not None and back.components[A].offline_by is OfflineBy.FAULT


def test_an_older_snapshot_without_the_new_fields_is_still_read() -> None:
    d = cluster(3)
    report(d, A, 1.0, ErrorKind.CRASH)
    data = to_data(d.state)
    data.pop("reboot")
    for comp in data["components"].values():
        comp.pop("failures")
        comp.pop("why")
    for group in data["groups"].values():
        group["failovers"] = [f[0] for f in group["failovers"]]
    back = from_data(d.topo, data)
    assert back.reboot is None and back.components[A].why == ""
