"""A hot standby CRIM continues from the active one's snapshot with identical decisions."""

from __future__ import annotations

import json

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.policy import decide
from haos.cluster.crim.snapshot import from_data, to_data
from haos.config.examples import load_builtin_example
from haos.errors import ModelError
from haos.model.reports import ErrorKind, ErrorReport
from haoslab.testing.crimdriver import CrimDriver


def _busy_driver() -> CrimDriver:
    d = CrimDriver(load_builtin_example("mixed-models"))
    d.boot()
    members = sorted(d.topo.group_of)
    d.go(ev.ErrorReported(ErrorReport(members[0], ErrorKind.HANG, 0.5)), 1.0)
    d.go(ev.OperatorLock("n2"), 2.0)
    d.go(ev.NodeLeft("n3", at=2.9), 3.0)
    d.go(ev.OperatorOffline(members[-1]), 4.0)
    return d


def test_snapshot_round_trips_through_json() -> None:
    d = _busy_driver()
    data = json.loads(json.dumps(to_data(d.state)))
    assert from_data(d.topo, data) == d.state


def test_standby_continues_with_the_same_decisions() -> None:
    d = _busy_driver()
    standby = from_data(d.topo, json.loads(json.dumps(to_data(d.state))))
    for event, now in [
        (ev.Tick(), 30.0),
        (ev.NodeJoined("n3"), 31.0),
        (ev.OperatorUnlock("n2"), 32.0),
    ]:
        a = decide(d.topo, d.state, event, now)
        b = decide(d.topo, standby, event, now)
        assert (a.actions, a.reason) == (b.actions, b.reason)
        d.state, standby = a.state, b.state


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        pytest.param(lambda x: x.update(format=7), "format 7", id="wrong_format"),
        pytest.param(lambda x: x["components"].popitem(), "missing", id="component_missing"),
        pytest.param(
            lambda x: x["nodes"].update(n99={"member": True, "admin": "unlocked"}),
            "unknown: n99",
            id="unknown_node",
        ),
        pytest.param(
            lambda x: next(iter(x["components"].values())).update(state="bogus"),
            "malformed",
            id="bad_state",
        ),
        pytest.param(lambda x: x["served"].append("nope"), "unknown instances", id="bad_instance"),
    ],
)
def test_bad_snapshot_is_refused_with_a_reason(mutate: object, fragment: str) -> None:
    d = _busy_driver()
    data = json.loads(json.dumps(to_data(d.state)))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ModelError, match=fragment):
        from_data(d.topo, data)
