"""A group's faults reboot at most one node within its probation window.

A node is rebooted when every fail-over its group counted within ``group_probation`` stayed
on that node. The reboot itself counts as one: once the old fail-overs age out of the
window, faults of the same group on another node do not reboot a second one.
"""

from __future__ import annotations

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Action, RebootNode
from haos.model.redundancy import RecoveryPolicy
from haos.model.redundancy import RedundancyModel as RM
from haos.model.reports import ErrorKind, ErrorReport
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.crimdriver import CrimDriver

A, B = "shelf1/slot1/node/demo", "shelf1/slot2/node/demo"
POLICY = RecoveryPolicy(
    soft_reset_max=0, restart_max=0, failover_max=2, group_probation=300.0, component_probation=1.0
)


def crash(d: CrimDriver, comp: str, at: float) -> tuple[Action, ...]:
    report = ErrorReport(comp, ErrorKind.CRASH, at - 0.01, "test")
    actions = d.go(ev.ErrorReported(report), at).actions
    if not [a for a in actions if isinstance(a, RebootNode)]:
        d.go(ev.ComponentAvailable(comp), at + 0.5)  # repaired
    return actions


def reboots(actions: tuple[Action, ...]) -> list[str]:
    return [a.node for a in actions if isinstance(a, RebootNode)]


def test_faults_on_a_second_node_soon_after_a_reboot_reboot_nothing() -> None:
    d = CrimDriver(generated_cluster(3, [GroupPlan("demo", RM.TWO_N, [1, 2])], POLICY))
    d.boot()
    assert reboots(crash(d, A, 10.0)) == []
    assert reboots(crash(d, A, 20.0)) == []
    assert reboots(crash(d, A, 250.0)) == ["n1"]  # both fail-overs stayed on n1
    d.go(ev.NodeLeft("n1"), 250.5)
    d.go(ev.NodeJoined("n1"), 262.0)
    d.go(ev.ComponentAvailable(A), 262.3)
    # n1's fail-overs at 10 and 20 s are out of the window by now; its reboot is not
    assert reboots(crash(d, B, 320.0)) == []
    assert reboots(crash(d, B, 330.0)) == []
    assert reboots(crash(d, B, 340.0)) == []
    assert [f.node for f in d.state.groups["demo"].failovers][-4:] == ["n1", "n2", "n2", "n2"]


def test_the_same_node_failing_again_after_its_reboot_is_rebooted_again() -> None:
    d = CrimDriver(generated_cluster(3, [GroupPlan("demo", RM.TWO_N, [1, 2])], POLICY))
    d.boot()
    crash(d, A, 10.0)
    crash(d, A, 20.0)
    assert reboots(crash(d, A, 30.0)) == ["n1"]
    d.go(ev.NodeLeft("n1"), 30.5)
    d.go(ev.NodeJoined("n1"), 42.0)
    d.go(ev.ComponentAvailable(A), 42.3)
    # the fault stays on n1: the reboot counts on n1's side, and n1 is rebooted again
    assert reboots(crash(d, A, 100.0)) == ["n1"]
