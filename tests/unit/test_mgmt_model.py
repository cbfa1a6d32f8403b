"""The managed objects built from a real cluster daemon's recorded answers (``_mgmt.py``):
what each object says, when its revision changes, and answers that are not what the
protocol says."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from _mgmt import recorded

from haos.cli.ops import runs_as
from haos.mgmt.build import build, event_record, history_entry
from haos.mgmt.objects import Snapshot
from haos.services.control import BadAnswer

SI = "counter-si"


def snap(r: dict[str, Any], report: bool = True) -> Snapshot:
    return build("demo", r["status"], r["crim"], r["availability"] if report else None, 5.0)


def test_the_cluster_and_its_nodes_as_status_and_crim_say() -> None:
    r = recorded()
    s = snap(r)
    names = {int(k): v for k, v in r["status"]["node_names"].items()}
    assert s.cluster.name == "demo" and s.cluster.node == r["status"]["node"]
    assert s.cluster.quorate is True
    assert s.cluster.master == names[r["status"]["master"]]
    assert s.cluster.vice_master == names[r["status"]["vice_master"]]
    assert s.cluster.decision == r["crim"]["seq"]
    assert s.cluster.availability_master == r["crim"]["master"]
    assert [n.name for n in s.nodes] == ["n1", "n2", "n3"]
    assert [n.name for n in s.nodes if n.master] == [s.cluster.master]
    assert [n.name for n in s.nodes if n.vice_master] == [s.cluster.vice_master]
    assert all(n.member and n.admin == "unlocked" for n in s.nodes)
    assert {n.name: n.node_id for n in s.nodes} == {v: k for k, v in names.items()}


def test_components_are_those_an_agent_runs_with_what_it_says_they_run_as() -> None:
    r = recorded()
    s = snap(r)
    hosts = r["crim"]["hosts"]
    assert [c.name for c in s.components] == sorted(hosts)
    for c in s.components:
        rt = r["crim"]["crim"]["components"][c.name]
        assert (c.node, c.state, c.health, c.admin) == (
            hosts[c.name],
            rt["state"],
            rt["health"],
            rt["admin"],
        )
        assert c.runs_as == runs_as(r["crim"]["running"], c.node, c.name)
        assert c.restarts == len(rt["restarts"])
    counters = [c for c in s.components if c.name.endswith("/counter")]
    # recorded as the counter was just placed: n2's agent had not yet said what it runs as
    assert sorted(c.runs_as for c in counters) == ["-", "primary", "secondary"]
    assert sorted(c.state for c in counters) == ["offline", "primary", "secondary"]


def test_instances_and_groups_with_the_availability_reports_figures() -> None:
    r = recorded()
    s = snap(r)
    [si] = s.instances
    info = r["crim"]["instances"][SI]
    [row] = r["availability"]["instances"]
    assert (si.name, si.group, si.served) == (SI, "counter", True)
    assert list(si.primaries) == info["primary"] and list(si.secondaries) == info["secondary"]
    assert si.failovers == row["incidents"] and si.outage_ms == row["outage_ms"]
    assert si.availability == row["availability"]
    [g] = s.groups
    assert (g.name, g.redundancy, g.admin) == ("counter", "2N", "unlocked")
    assert list(g.members) == r["crim"]["groups"]["counter"]["members"]
    without = snap(r, report=False).instances[0]
    assert (without.failovers, without.outage_ms, without.availability) == (None, None, None)
    assert without.revision != si.revision or si.failovers is not None


def test_a_revision_changes_with_the_objects_state_and_only_with_it() -> None:
    r = recorded()
    first = snap(r)
    assert snap(copy.deepcopy(r)) == first  # the same answers, the same revisions
    r2 = copy.deepcopy(r)
    r2["availability"]["instances"][0]["outage_ms"] += 1234.5  # a statistic
    assert snap(r2).instances[0].revision == first.instances[0].revision
    r3 = copy.deepcopy(r)
    info = r3["crim"]["instances"][SI]
    info["primary"], info["secondary"] = info["secondary"], info["primary"]
    moved = snap(r3)
    assert moved.instances[0].revision != first.instances[0].revision
    assert [n.revision for n in moved.nodes] == [n.revision for n in first.nodes]


@pytest.mark.parametrize(
    ("answer", "path", "words"),
    [
        ("crim", ("instances",), "instances"),
        ("status", ("quorate",), "quorate"),
        ("crim", ("crim", "nodes"), "nodes"),
        ("crim", ("groups", "counter", "redundancy"), "redundancy"),
    ],
)
def test_an_answer_lacking_a_field_is_a_bad_answer_naming_it(
    answer: str, path: tuple[str, ...], words: str
) -> None:
    r = recorded()
    where = r[answer]
    for key in path[:-1]:
        where = where[key]
    del where[path[-1]]
    with pytest.raises(BadAnswer, match=words):
        snap(r)


def test_history_entries_and_event_records() -> None:
    r = recorded()
    entries = [history_entry(e) for e in r["history"]["history"]]
    assert [e.seq for e in entries] == [e["seq"] for e in r["history"]["history"]]
    assert all(e.text for e in entries)
    records = [event_record(e) for e in r["events"][1:]]
    assert [e.kind for e in records] == [e["kind"] for e in r["events"][1:]]
    with pytest.raises(BadAnswer, match="kind"):
        event_record({"seq": 1, "at": 1.0, "subject": "", "text": ""})
