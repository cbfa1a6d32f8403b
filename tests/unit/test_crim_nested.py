"""Components nested inside another member: lost with their container, started again with it.

The layout is ``small-2n`` plus a 2N group ``sub`` whose members live inside two ``demo``
members. Whatever takes a container away (a restart in place, a fail-over, its own off-line
time) stops what it holds, and the container's return starts it again, so that the CRIM's
view and what runs agree and the nested group is served again.
"""

from __future__ import annotations

import _layouts as layouts
import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Action, Publish, RecoverComponent, Repair, TakeOffline
from haos.cluster.crim.state import Health, OfflineBy
from haos.config.loader import parse_config
from haos.errors import ConfigError
from haos.model.reports import ComponentOutOfService, ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState as S
from haoslab.testing.crimdriver import CrimDriver

DEMO1, DEMO2 = "shelf1/slot1/node/demo", "shelf1/slot2/node/demo"
SUB1, SUB2 = f"{DEMO1}/sub", f"{DEMO2}/sub"


def booted() -> CrimDriver:
    d = CrimDriver(layouts.nested())
    d.boot()
    assert d.primaries("sub-si") == [SUB1] and d.secondaries("sub-si") == [SUB2]
    return d


def crash(d: CrimDriver, comp: str, at: float) -> tuple[Action, ...]:
    return d.go(ev.ErrorReported(ErrorReport(comp, ErrorKind.CRASH, at - 0.01, "test")), at).actions


def stops(actions: tuple[Action, ...]) -> list[str]:
    return [a.component for a in actions if isinstance(a, TakeOffline)]


def repairs(actions: tuple[Action, ...]) -> list[str]:
    return [a.component for a in actions if isinstance(a, Repair)]


def test_a_first_start_with_the_node_orders_no_second_start() -> None:
    d = booted()
    assert not [a for dec in d.log for a in dec.actions if isinstance(a, Repair)]


def test_a_container_restarted_in_place_stops_its_contents_and_starts_them_when_back() -> None:
    d = booted()
    actions = crash(d, DEMO1, 1.0)
    assert RecoverComponent(DEMO1, RecoveryLevel.RESTART) in actions
    assert stops(actions) == [SUB1]  # told to stop: the CRIM now holds it absent
    assert d.primaries("sub-si") == [SUB2]
    back = d.go(ev.ComponentAvailable(DEMO1), 1.3).actions
    assert repairs(back) == [SUB1]
    d.go(ev.ComponentAvailable(SUB1), 1.8)
    assert d.state.components[SUB1].health is Health.HEALTHY
    assert d.role(SUB1) is S.SECONDARY and d.primaries("sub-si") == [SUB2]


def test_a_container_failed_over_and_repaired_starts_its_contents_again() -> None:
    d = booted()
    for i in range(2):  # two restarts in place use up restart_max
        crash(d, DEMO1, 1.0 + i)
        d.go(ev.ComponentAvailable(DEMO1), 1.3 + i)
        d.go(ev.ComponentAvailable(SUB1), 1.6 + i)
    actions = crash(d, DEMO1, 3.0)
    assert Repair(DEMO1) in actions and SUB1 in stops(actions)
    assert d.state.components[SUB1].health is Health.ABSENT
    assert repairs(d.go(ev.ComponentAvailable(DEMO1), 3.5).actions) == [SUB1]
    d.go(ev.ComponentAvailable(SUB1), 4.0)
    assert {d.role(SUB1), d.role(SUB2)} == {S.PRIMARY, S.SECONDARY}


def test_a_container_back_from_its_own_off_line_time_starts_its_contents_again() -> None:
    d = booted()
    actions = d.go(ev.OfflineRequested(DEMO2, "diagnostics"), 1.0).actions
    assert stops(actions) == [SUB2, DEMO2]
    assert repairs(d.go(ev.ComponentAvailable(DEMO2), 5.0).actions) == [SUB2]


def test_contents_held_off_line_stay_stopped_when_their_container_returns() -> None:
    d = booted()
    d.go(ev.OperatorOffline(SUB1), 0.5)
    actions = crash(d, DEMO1, 1.0)
    assert SUB1 not in stops(actions)  # already stopped
    assert repairs(d.go(ev.ComponentAvailable(DEMO1), 1.3).actions) == []
    assert repairs(d.go(ev.OperatorOnline(SUB1), 2.0).actions) == [SUB1]


def test_a_container_started_with_its_rejoining_node_orders_no_start_of_its_contents() -> None:
    d = booted()
    crash(d, DEMO1, 1.0)
    d.go(ev.NodeLeft("n1"), 1.1)
    d.go(ev.NodeJoined("n1"), 20.0)
    # the node starts everything it hosts itself; the container's return orders nothing more
    assert repairs(d.go(ev.ComponentAvailable(DEMO1), 20.3).actions) == []


@pytest.mark.parametrize("node_class", ["node", "hsp-node"])
def test_a_node_as_a_group_member_is_refused_at_load(node_class: str) -> None:
    text = layouts.small_2n_text().replace(
        'members = ["shelf1/slot1/node/demo", "shelf1/slot2/node/demo",',
        'members = ["shelf1/slot1/node/demo", "shelf1/slot2/node",',
    )
    if node_class != "node":  # a class derived from node is a node class too
        text = text.replace(
            'name = "shelf1/slot2/node"\nclass = "node"',
            f'name = "shelf1/slot2/node"\nclass = "{node_class}"',
        )
        text += f'\n[[classes]]\nname = "{node_class}"\nbase = "node"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.toml")
    (problem,) = caught.value.problems
    assert "service_groups[0].members[1]" in str(problem)
    assert f"'shelf1/slot2/node' is of node class '{node_class}'" in str(problem)
    assert "cannot be a service-group member" in str(problem)


def test_a_member_back_from_diagnostics_inside_a_held_container_starts_with_it() -> None:
    d = booted()
    d.go(ev.OfflineRequested(SUB2, "diagnostics"), 1.0)
    d.go(ev.OperatorOffline(DEMO2), 2.0)
    back = d.go(ev.ComponentAvailable(SUB2), 3.0)  # done with its diagnostics
    assert stops(back.actions) == [SUB2]  # its container is off-line: it may not run
    assert d.state.components[SUB2].offline_by is None  # but its own off-line time is over
    assert repairs(d.go(ev.OperatorOnline(DEMO2), 4.0).actions) == [DEMO2, SUB2]


def test_a_member_that_cannot_start_after_diagnostics_is_held_out_of_service() -> None:
    d = booted()
    d.go(ev.OfflineRequested(SUB1, "diagnostics"), 1.0)
    report = ErrorReport(SUB1, ErrorKind.HARD, 2.9, "ocf", "not installed")
    dec = d.go(ev.ErrorReported(report), 3.0)
    assert not dec.reason.startswith("ignored")
    rt = d.state.components[SUB1]
    assert rt.offline_by is OfflineBy.FAULT and "not installed" in rt.why
    assert any(
        isinstance(a, Publish) and isinstance(a.notification, ComponentOutOfService)
        for a in dec.actions
    )
