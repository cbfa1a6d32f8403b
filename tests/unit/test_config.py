"""The TOML configuration loader: examples, round trip, every validation rule, garbage input."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.config import loader, schema
from haos.config.examples import builtin_examples, load_builtin_example
from haos.config.loader import build_config, load_config, parse_config
from haos.config.model import AuditSpec, ClusterConfig, CorrelationPolicy, NodeSpec
from haos.errors import ConfigError, ConfigProblem
from haos.model.classes import ClassRegistry, ComponentClass, Method
from haos.model.names import is_within
from haos.model.redundancy import RecoveryPolicy, RedundancyModel, ServiceGroup, ServiceInstance
from haos.model.tree import Component

# --- a tiny TOML writer, so that tests go through parse_config like a real file ----------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: dict[str, Any]) -> str:
    """TOML text for ``data``: top-level tables as [headers], nested tables inline."""
    lines = [
        f"{_key(k)} = {_value(v)}"
        for k, v in data.items()
        if not isinstance(v, dict) and not _is_table_array(v)
    ]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{_key(k)}]")
            lines += [f"{_key(kk)} = {_value(vv)}" for kk, vv in v.items()]
        elif _is_table_array(v):
            for entry in v:
                lines.append(f"[[{_key(k)}]]")
                lines += [f"{_key(kk)} = {_value(vv)}" for kk, vv in entry.items()]
    return "\n".join(lines) + "\n"


# --- a valid skeleton and edits by key path ------------------------------------------------------

A1, A2, A3 = "shelf/s1/node/app", "shelf/s2/node/app", "shelf/s3/node/app"
W1, W2, W3 = "shelf/s1/node/web", "shelf/s2/node/web", "shelf/s3/node/web"


def skeleton() -> dict[str, Any]:
    """A small valid configuration; 13 components, 3 nodes, a 2N and an N-way-active group."""
    components = [
        {"name": "shelf", "class": "chassis"},
        *({"name": f"shelf/s{i}", "class": "slot"} for i in (1, 2, 3)),
        {"name": "shelf/s1/node", "class": "app-node"},
        {"name": "shelf/s2/node", "class": "app-node"},
        {"name": "shelf/s3/node", "class": "node"},
        *({"name": n, "class": "application"} for n in (A1, A2, A3, W1, W2, W3)),
    ]
    return {
        "cluster": {"name": "test"},
        "recovery": {"restart_max": 2},
        "correlation": {"hold_time": "10ms"},
        "classes": [{"name": "app-node", "base": "node", "methods": ["reset"]}],
        "components": components,
        "nodes": [
            {
                "name": f"n{i}",
                "node_id": i,
                "component": f"shelf/s{i}/node",
                "addresses": [f"10.10.0.{i}"],
            }
            for i in (1, 2, 3)
        ],
        "service_groups": [
            {"name": "app", "redundancy": "2N", "members": [A1, A2]},
            {"name": "web", "redundancy": "N-way-active", "members": [W1, W2, W3]},
        ],
        "service_instances": [
            {"name": "app-si", "group": "app"},
            {"name": "web-si", "group": "web", "actives": 2},
        ],
        "audits": [
            {
                "component": A1,
                "name": "alive",
                "period": "1s",
                "timeout": "500ms",
                "target": "/bin/true",
            },
        ],
    }


DELETE = object()
_TOKEN = re.compile(r"[^.\[\]]+|\[\d+\]")


def set_at(data: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with DELETE remove) the value at a key path; index == len appends.

    Missing tables on the way are created; a path through a non-container is ignored.
    """
    tokens: list[str | int] = [
        int(t[1:-1]) if t.startswith("[") else t for t in _TOKEN.findall(path)
    ]
    node: Any = data
    for token in tokens[:-1]:
        if isinstance(token, int) and isinstance(node, list) and token < len(node):
            node = node[token]
        elif isinstance(token, str) and isinstance(node, dict):
            node = node.setdefault(token, {})
        else:
            return
    last = tokens[-1]
    if isinstance(last, int) and isinstance(node, list) and last <= len(node):
        if value is DELETE:
            del node[last : last + 1]
        elif last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(last, str) and isinstance(node, dict):
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value


def edited(edits: dict[str, Any]) -> dict[str, Any]:
    data = skeleton()
    for path, value in edits.items():
        set_at(data, path, value)
    return data


def registry_of(config: ClusterConfig) -> ClassRegistry:
    """The registry the way consumers build it: the built-ins, then the file's classes."""
    registry = ClassRegistry()
    for cls in config.classes:
        registry.add(cls)
    return registry


def load(data: dict[str, Any], source: str = "test.toml") -> ClusterConfig:
    return parse_config(to_toml(data), source)


def problems_of(data: dict[str, Any]) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        load(data)
    return info.value.problems


def test_skeleton_is_valid() -> None:
    config = load(skeleton())
    assert [g.name for g in config.groups] == ["app", "web"]


# --- shipped examples ----------------------------------------------------------------------------


def test_builtin_examples_are_listed() -> None:
    assert builtin_examples() == ["cpci-2shelf", "mixed-models", "small-2n"]


@pytest.mark.parametrize("name", builtin_examples())
def test_every_builtin_example_loads(name: str) -> None:
    config = load_builtin_example(name)
    assert config.source == f"builtin:{name}.toml"
    assert config.nodes and config.groups and config.instances
    registry = registry_of(config)
    for node in config.nodes:
        assert registry.hosts_components(config.component_classes()[node.component])


@pytest.mark.parametrize("name", builtin_examples())
def test_every_builtin_example_loads_from_its_file(name: str) -> None:
    path = Path(loader.__file__).parent.parent / "examples" / f"{name}.toml"
    assert dataclasses.replace(load_config(path), source="") == dataclasses.replace(
        load_builtin_example(name), source=""
    )


def test_cpci_example_follows_fig_1() -> None:
    config = load_builtin_example("cpci-2shelf")
    assert [n.name for n in config.nodes] == [f"n{i}" for i in range(1, 9)]
    shapes = {g.name: (g.model.value, g.active, g.standby, len(g.members)) for g in config.groups}
    assert shapes == {
        "hsp": ("2N", 1, 1, 2),
        "nhsp": ("N+M", 5, 1, 6),
        "line-5": ("2N", 1, 1, 2),
        "line-6": ("2N", 1, 1, 2),
        "logger": ("N-way-active", 8, 0, 8),
        "cfgd": ("hot-restart", 1, 0, 2),
        "diag": ("no-redundancy", 1, 0, 2),
    }
    assert sum(i.group == "nhsp" for i in config.instances) == 5
    assert [i.actives for i in config.instances if i.group == "logger"] == [2, 2]
    registry = registry_of(config)
    classes = config.component_classes()
    line_cards = [c for c, cls in classes.items() if cls == "line-card"]
    assert len(line_cards) == 4
    assert all(
        registry.is_a("line-card", "board") and not registry.hosts_components("line-card")
        for _ in line_cards
    )
    assert not any(is_within(lc, n.component) for lc in line_cards for n in config.nodes)
    hsps = [n for n in config.nodes if classes[n.component] == "hsp-node"]
    assert [n.name for n in hsps] == ["n1", "n5"]


def test_small_2n_example_has_a_spare() -> None:
    config = load_builtin_example("small-2n")
    (group,) = config.groups
    assert (group.model, group.active, group.standby, len(group.members)) == (
        RedundancyModel.TWO_N,
        1,
        1,
        3,
    )
    assert [i.name for i in config.instances] == ["demo-si"]


def test_mixed_models_example_has_one_group_per_model() -> None:
    config = load_builtin_example("mixed-models")
    assert sorted(g.model.value for g in config.groups) == sorted(m.value for m in RedundancyModel)
    assert len(config.nodes) == 4


def test_unknown_builtin_example_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'small-2n'"):
        load_builtin_example("small2n")


# --- round trip ----------------------------------------------------------------------------------

ROUND_TRIP = """
[cluster]
name = "rt"

[recovery]
soft_reset_max = 0
restart_max = 4
component_probation = "90s"
failover_max = 1
group_probation = "1h"
recovery_timeout = 2.5
auto_repair = false
reboot_node = false

[correlation]
duplicate_window = "250ms"
container_window = 1
container_threshold = 3
hold_time = 0
escalate_count = 5
escalate_window = "2m"

[[classes]]
name = "big-node"
base = "my-node"          # declared below: any order works
methods = ["reboot", "self-test"]

[[classes]]
name = "my-node"
base = "node"

[[components]]
name = "r/s1/node/app"      # children before parents: any order works
class = "application"
attributes = { unit = "app.service" }

[[components]]
name = "r/s1/node"
class = "big-node"

[[components]]
name = "r"
class = "chassis"

[[components]]
name = "r/s1"
class = "slot"

[[components]]
name = "r/fan"
class = "hardware"

[[nodes]]
name = "n7"
node_id = 7
component = "r/s1/node"
priority = -2
addresses = ["10.10.0.7", "fd00::7"]

[[service_groups]]
name = "g"
redundancy = "2N"
members = ["r/s1/node/app"]       # a degraded 2N is legal
failback = true
recovery = { restart_max = 0, group_probation = "30s" }

[[service_groups]]
name = "fan"
redundancy = "no-redundancy"
members = ["r/fan"]               # hardware outside every node: managed by proxy

[[service_instances]]
name = "g-si"
group = "g"
rank = 3

[[audits]]
component = "r/s1/node/app"
name = "alive"
period = "2s"
timeout = 0.5
kind = "http"
target = "http://127.0.0.1/healthz"
"""


def test_round_trip_of_every_field() -> None:
    config = parse_config(ROUND_TRIP, "rt.toml")
    recovery = RecoveryPolicy(0, 4, 90.0, 1, 3600.0, 2.5, False, False)
    big = ComponentClass("big-node", "my-node", frozenset({Method.REBOOT, Method.SELF_TEST}))
    assert config == ClusterConfig(
        name="rt",
        classes=(ComponentClass("my-node", "node", frozenset()), big),  # bases first
        components=(
            Component("r", "chassis"),
            Component("r/s1", "slot"),
            Component("r/fan", "hardware"),
            Component("r/s1/node", "big-node"),
            Component("r/s1/node/app", "application", {"unit": "app.service"}),
        ),
        nodes=(NodeSpec("n7", 7, "r/s1/node", -2, ("10.10.0.7", "fd00::7")),),
        groups=(
            ServiceGroup(
                "g",
                RedundancyModel.TWO_N,
                ("r/s1/node/app",),
                1,
                1,
                dataclasses.replace(recovery, restart_max=0, group_probation=30.0),
                failback=True,
            ),
            ServiceGroup("fan", RedundancyModel.NO_REDUNDANCY, ("r/fan",), 1, 0, recovery),
        ),
        instances=(ServiceInstance("g-si", "g", 3, 1),),
        recovery=recovery,
        correlation=CorrelationPolicy(0.25, 1.0, 3, 0.0, 5, 120.0),
        audits=(AuditSpec("r/s1/node/app", "alive", 2.0, 0.5, "http", "http://127.0.0.1/healthz"),),
        source="rt.toml",
    )


def test_omitted_sections_take_the_defaults() -> None:
    data = skeleton()
    for section in ("recovery", "correlation", "classes", "service_instances", "audits"):
        del data[section]
    for component in data["components"]:
        if component["class"] == "app-node":
            component["class"] = "node"
    config = load(data)
    assert config.recovery == RecoveryPolicy()
    assert config.correlation == CorrelationPolicy()
    assert config.classes == ()
    assert config.instances == () and config.audits == ()
    assert all(g.recovery == RecoveryPolicy() for g in config.groups)


def test_components_come_out_parents_first_in_file_order() -> None:
    data = skeleton()
    data["components"].reverse()
    names = [c.name for c in load(data).components]
    assert names == [
        "shelf",
        "shelf/s3",
        "shelf/s2",
        "shelf/s1",
        "shelf/s3/node",
        "shelf/s2/node",
        "shelf/s1/node",
        W3,
        W2,
        W1,
        A3,
        A2,
        A1,
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param(2, 2.0, id="integer_is_seconds"),
        pytest.param(0.25, 0.25, id="float_is_seconds"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("60s", 60.0, id="seconds"),
        pytest.param("1.5s", 1.5, id="fractional_seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("2h", 7200.0, id="hours"),
    ],
)
def test_duration_forms(text: object, seconds: float) -> None:
    assert schema.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("5", id="string_without_unit"),
        pytest.param("5d", id="unknown_unit"),
        pytest.param("-5s", id="negative_string"),
        pytest.param("ms", id="unit_without_number"),
        pytest.param("1e3s", id="exponent"),
        pytest.param(True, id="boolean"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param(float("nan"), id="not_a_number"),
        pytest.param([1], id="array"),
    ],
)
def test_bad_durations_are_invalid(text: object) -> None:
    with pytest.raises(schema.Invalid):
        schema.parse_duration(text)


def _group(redundancy: str, members: int, **shape: int) -> dict[str, Any]:
    return {"name": "app", "redundancy": redundancy, "members": [A1, A2, A3][:members], **shape}


@pytest.mark.parametrize(
    ("group", "active", "standby"),
    [
        pytest.param(_group("2N", 2), 1, 1, id="2n_defaults_to_one_and_one"),
        pytest.param(_group("2N", 1), 1, 1, id="2n_with_one_member_is_legal"),
        pytest.param(_group("2N", 3), 1, 1, id="2n_with_a_spare_is_legal"),
        pytest.param(_group("N+M", 3, active=2, standby=1), 2, 1, id="n_plus_m_as_given"),
        pytest.param(_group("N+M", 3, active=1, standby=1), 1, 1, id="n_plus_m_with_a_spare"),
        pytest.param(_group("N-way-active", 3), 3, 0, id="n_way_defaults_to_all_members"),
        pytest.param(_group("N-way-active", 3, active=2), 2, 0, id="n_way_with_a_spare"),
        pytest.param(_group("hot-restart", 1), 1, 0, id="hot_restart_defaults_to_one"),
        pytest.param(_group("no-redundancy", 2), 1, 0, id="no_redundancy_with_a_spare"),
    ],
)
def test_group_shape_defaults_per_model(group: dict[str, Any], active: int, standby: int) -> None:
    data = edited({"service_groups[0]": group, "service_instances": DELETE})
    config = load(data)
    assert (config.group("app").active, config.group("app").standby) == (active, standby)


# --- validation: each rule names the right key ---------------------------------------------------

NEW_COMPONENT = "components[13]"
NP, NS = "service_groups[0].redundancy", "service_groups[0].standby"

CASES = [
    # unknown keys and typos
    (
        "typo_in_recovery_key_is_named",
        {"recovery.restart_mx": 1},
        "recovery.restart_mx",
        "did you mean 'restart_max'",
    ),
    (
        "typo_in_top_level_section_is_named",
        {"service_group": []},
        "service_group",
        "did you mean 'service_groups'",
    ),
    (
        "typo_in_group_key_is_named",
        {"service_groups[0].fallback": True},
        "service_groups[0].fallback",
        "did you mean 'failback'",
    ),
    (
        "typo_in_group_recovery_override_is_named",
        {"service_groups[0].recovery.restart_mx": 0},
        "service_groups[0].recovery.restart_mx",
        "did you mean 'restart_max'",
    ),
    (
        "section_key_inside_a_table_gets_a_hint",
        {"classes[0].components": []},
        "classes[0].components",
        "belongs to that table",
    ),
    ("typo_in_audit_key_is_named", {"audits[0].perod": "1s"}, "audits[0].perod", "period"),
    # wrong types and bad values
    (
        "bool_is_not_an_integer",
        {"recovery.restart_max": True},
        "recovery.restart_max",
        "must be an integer, not a boolean",
    ),
    (
        "float_is_not_an_integer",
        {"recovery.failover_max": 1.5},
        "recovery.failover_max",
        "must be an integer, not a float",
    ),
    ("negative_count", {"recovery.soft_reset_max": -1}, "recovery.soft_reset_max", "at least 0"),
    (
        "zero_probation_window",
        {"recovery.component_probation": 0},
        "recovery.component_probation",
        "longer than zero",
    ),
    (
        "negative_duration_string",
        {"recovery.group_probation": "-5s"},
        "recovery.group_probation",
        "bad duration",
    ),
    (
        "unknown_duration_unit",
        {"recovery.recovery_timeout": "5d"},
        "recovery.recovery_timeout",
        "bad duration",
    ),
    (
        "zero_recovery_timeout",
        {"recovery.recovery_timeout": "0ms"},
        "recovery.recovery_timeout",
        "longer than zero",
    ),
    (
        "bool_is_not_a_duration",
        {"correlation.duplicate_window": True},
        "correlation.duplicate_window",
        "not a boolean",
    ),
    (
        "string_is_not_a_bool",
        {"recovery.auto_repair": "yes"},
        "recovery.auto_repair",
        "must be a boolean",
    ),
    (
        "container_threshold_below_two",
        {"correlation.container_threshold": 1},
        "correlation.container_threshold",
        "at least 2",
    ),
    (
        "negative_hold_time",
        {"correlation.hold_time": -0.1},
        "correlation.hold_time",
        "must not be negative",
    ),
    (
        "hold_time_longer_than_container_window",
        {"correlation.hold_time": "2s"},
        "correlation.hold_time",
        "container_window",
    ),
    (
        "group_recovery_override_is_checked",
        {"service_groups[0].recovery.restart_max": -1},
        "service_groups[0].recovery.restart_max",
        "at least 0",
    ),
    (
        "group_recovery_override_not_a_table",
        {"service_groups[0].recovery": 3},
        "service_groups[0].recovery",
        "must be a table",
    ),
    # sections
    ("missing_cluster_table", {"cluster": DELETE}, "cluster", "missing required table"),
    ("missing_cluster_name", {"cluster.name": DELETE}, "cluster.name", "missing required key"),
    ("bad_cluster_name", {"cluster.name": "My Cluster"}, "cluster.name", "bad name"),
    ("section_of_wrong_type", {"components": "shelf"}, "components", "array of tables"),
    ("array_entry_not_a_table", {"nodes[0]": 1}, "nodes[0]", "must be a table, not an integer"),
    ("recovery_not_a_table", {"recovery": 3}, "recovery", "must be a table"),
    # classes
    (
        "class_base_unknown",
        {"classes[1]": {"name": "x", "base": "nod"}},
        "classes[1].base",
        "unknown class 'nod' (did you mean 'node'?)",
    ),
    (
        "class_base_cycle",
        {"classes[1]": {"name": "a", "base": "b"}, "classes[2]": {"name": "b", "base": "a"}},
        "classes[1].base",
        "cycle: a -> b -> a",
    ),
    (
        "class_is_its_own_base",
        {"classes[1]": {"name": "a", "base": "a"}},
        "classes[1].base",
        "cycle: a -> a",
    ),
    (
        "class_redefines_a_builtin",
        {"classes[1]": {"name": "node", "base": "board"}},
        "classes[1].name",
        "duplicate class name 'node'",
    ),
    (
        "class_defined_twice",
        {"classes[1]": {"name": "app-node", "base": "node"}},
        "classes[1].name",
        "first at classes[0]",
    ),
    (
        "unknown_method",
        {"classes[0].methods": ["reset", "explode"]},
        "classes[0].methods[1]",
        "'explode' is not one of",
    ),
    ("class_missing_base", {"classes[0].base": DELETE}, "classes[0].base", "missing"),
    # components
    (
        "bad_component_name",
        {NEW_COMPONENT: {"name": "shelf/S4", "class": "slot"}},
        "components[13].name",
        "bad component name",
    ),
    (
        "component_name_with_empty_segment",
        {NEW_COMPONENT: {"name": "shelf//x", "class": "slot"}},
        "components[13].name",
        "bad component name",
    ),
    (
        "duplicate_component_name",
        {NEW_COMPONENT: {"name": "shelf/s1", "class": "slot"}},
        "components[13].name",
        "duplicate component name 'shelf/s1' (first at components[1])",
    ),
    (
        "unknown_class",
        {NEW_COMPONENT: {"name": "shelf/s4", "class": "slto"}},
        "components[13].class",
        "unknown class 'slto' (did you mean 'slot'?)",
    ),
    (
        "missing_parent",
        {NEW_COMPONENT: {"name": "rack/s1", "class": "slot"}},
        "components[13].name",
        "parent component 'rack' is not declared",
    ),
    (
        "attribute_value_not_a_string",
        {"components[0].attributes": {"slots": 6}},
        "components[0].attributes.slots",
        "must be a string",
    ),
    (
        "component_missing_class",
        {"components[0].class": DELETE},
        "components[0].class",
        "missing required key",
    ),
    # nodes
    ("duplicate_node_name", {"nodes[2].name": "n1"}, "nodes[2].name", "duplicate node name"),
    ("duplicate_node_id", {"nodes[2].node_id": 1}, "nodes[2].node_id", "duplicate node_id 1"),
    ("node_id_zero", {"nodes[0].node_id": 0}, "nodes[0].node_id", "at least 1"),
    ("node_id_missing", {"nodes[0].node_id": DELETE}, "nodes[0].node_id", "missing required"),
    (
        "node_component_unknown",
        {"nodes[2].component": "shelf/s9/node"},
        "nodes[2].component",
        "unknown component 'shelf/s9/node'",
    ),
    (
        "node_component_not_a_node_class",
        {"nodes[2].component": "shelf/s3"},
        "nodes[2].component",
        "is of class 'slot', which is not a node class",
    ),
    (
        "node_component_used_by_two_nodes",
        {"nodes[2].component": "shelf/s1/node"},
        "nodes[2].component",
        "duplicate node component",
    ),
    (
        "node_inside_another_node",
        {
            NEW_COMPONENT: {"name": "shelf/s3/node/vm", "class": "node"},
            "nodes[3]": {"name": "n4", "node_id": 4, "component": "shelf/s3/node/vm"},
        },
        "nodes[3].component",
        "nodes cannot nest",
    ),
    (
        "bad_address",
        {"nodes[0].addresses": ["10.10.0.1", "10.10.0.300"]},
        "nodes[0].addresses[1]",
        "not an IPv4 or IPv6 address",
    ),
    (
        "address_used_by_two_nodes",
        {"nodes[1].addresses": ["10.10.0.1"]},
        "nodes[1].addresses[0]",
        "duplicate address '10.10.0.1' (first at nodes[0])",
    ),
    ("no_nodes", {"nodes": DELETE}, "nodes", "at least one"),
    # service groups
    (
        "group_member_unknown",
        {"service_groups[0].members[1]": "shelf/s2/node/ap"},
        "service_groups[0].members[1]",
        "unknown component 'shelf/s2/node/ap' (did you mean",
    ),
    (
        "component_member_of_two_groups",
        {"service_groups[1].members[0]": A1},
        "service_groups[1].members[0]",
        "already a member of group 'app'",
    ),
    (
        "member_listed_twice",
        {"service_groups[0].members[1]": A1},
        "service_groups[0].members[1]",
        "already a member of this group",
    ),
    (
        "bad_member_name",
        {"service_groups[0].members[1]": "App"},
        "service_groups[0].members[1]",
        "bad component name",
    ),
    (
        "duplicate_group_name",
        {"service_groups[1].name": "app"},
        "service_groups[1].name",
        "duplicate service group name",
    ),
    (
        "unknown_redundancy_model",
        {NP: "3N"},
        NP,
        "'3N' is not one of: 2N, N+M, N-way-active, hot-restart, no-redundancy",
    ),
    (
        "empty_members",
        {"service_groups[0].members": []},
        "service_groups[0].members",
        "must not be empty",
    ),
    (
        "2n_with_two_actives",
        {"service_groups[0].active": 2},
        "service_groups[0].active",
        "2N has exactly one active member, not 2",
    ),
    ("2n_with_no_standby", {NS: 0}, NS, "2N has exactly one standby member, not 0"),
    ("n_plus_m_without_active", {NP: "N+M", NS: 1}, "service_groups[0].active", "needs active"),
    ("n_plus_m_without_standby", {NP: "N+M", "service_groups[0].active": 1}, NS, "needs standby"),
    (
        "n_plus_m_with_zero_standby",
        {NP: "N+M", "service_groups[0].active": 1, NS: 0},
        NS,
        "at least one standby",
    ),
    (
        "n_plus_m_larger_than_members",
        {NP: "N+M", "service_groups[0].active": 2, NS: 1},
        "service_groups[0].active",
        "active + standby = 3 exceeds the 2 member",
    ),
    (
        "n_way_active_with_standby",
        {"service_groups[1].standby": 1},
        "service_groups[1].standby",
        "N-way-active has no standby members",
    ),
    (
        "n_way_active_more_actives_than_members",
        {"service_groups[1].active": 4},
        "service_groups[1].active",
        "exceeds the 3 member",
    ),
    ("hot_restart_with_standby", {NP: "hot-restart", NS: 1}, NS, "hot-restart has no standby"),
    (
        "no_redundancy_with_zero_active",
        {NP: "no-redundancy", "service_groups[0].active": 0},
        "service_groups[0].active",
        "at least one active",
    ),
    ("negative_standby", {NS: -1}, NS, "at least 0"),
    # service instances
    (
        "instance_group_unknown",
        {"service_instances[0].group": "ap"},
        "service_instances[0].group",
        "unknown service group 'ap' (did you mean 'app'?)",
    ),
    (
        "duplicate_instance_name",
        {"service_instances[1].name": "app-si"},
        "service_instances[1].name",
        "duplicate service instance name",
    ),
    (
        "actives_above_one_outside_n_way",
        {"service_instances[0].actives": 2},
        "service_instances[0].actives",
        "needs an N-way-active group; group 'app' is 2N",
    ),
    (
        "n_way_actives_more_than_members",
        {"service_instances[1].actives": 4},
        "service_instances[1].actives",
        "wants 4 actives but group 'web' has 3 member(s)",
    ),
    (
        "zero_actives",
        {"service_instances[1].actives": 0},
        "service_instances[1].actives",
        "at least 1",
    ),
    ("negative_rank", {"service_instances[0].rank": -1}, "service_instances[0].rank", "at least 0"),
    # audits
    (
        "audit_component_unknown",
        {"audits[0].component": "shelf/s1/node/ap"},
        "audits[0].component",
        "unknown component",
    ),
    (
        "audit_timeout_equal_to_period",
        {"audits[0].timeout": "1s"},
        "audits[0].timeout",
        "timeout must be shorter than the period (1s)",
    ),
    (
        "audit_timeout_longer_than_period",
        {"audits[0].timeout": "1m"},
        "audits[0].timeout",
        "shorter than the period",
    ),
    ("audit_zero_period", {"audits[0].period": 0}, "audits[0].period", "longer than zero"),
    (
        "audit_kind_unknown",
        {"audits[0].kind": "snmp"},
        "audits[0].kind",
        "'snmp' is not one of: command, http, callback",
    ),
    ("audit_target_missing", {"audits[0].target": DELETE}, "audits[0].target", "missing"),
    ("audit_target_empty", {"audits[0].target": ""}, "audits[0].target", "must not be empty"),
    (
        "audit_defined_twice",
        {"audits[1]": {"component": A1, "name": "alive", "period": 2, "timeout": 1, "target": "x"}},
        "audits[1].name",
        "duplicate audit",
    ),
]


@pytest.mark.parametrize(
    ("edits", "key", "reason"), [pytest.param(e, k, r, id=i) for i, e, k, r in CASES]
)
def test_validation_rule_names_the_key(edits: dict[str, Any], key: str, reason: str) -> None:
    problems = problems_of(edited(edits))
    assert any(p.key == key and reason in p.reason for p in problems), "\n".join(map(str, problems))
    assert all(p.file == "test.toml" for p in problems)


@pytest.mark.parametrize(
    "edits",
    [
        pytest.param({"service_groups[0].members": [A1]}, id="2n_with_one_member"),
        pytest.param(
            {
                NEW_COMPONENT: {"name": "shelf/fan", "class": "hardware"},
                "service_groups[2]": {
                    "name": "fan",
                    "redundancy": "no-redundancy",
                    "members": ["shelf/fan"],
                },
            },
            id="member_outside_every_node",
        ),
        pytest.param({"service_instances": DELETE}, id="groups_without_instances"),
        pytest.param(
            {"classes[0].base": "my-node", "classes[1]": {"name": "my-node", "base": "node"}},
            id="class_declared_after_its_subclass",
        ),
        pytest.param({"service_groups[0].recovery": {}}, id="empty_recovery_override"),
        pytest.param(
            {
                NEW_COMPONENT: {"name": "shelf/s4/node", "class": "node"},
                "components[14]": {"name": "shelf/s4", "class": "slot"},
            },
            id="node_board_without_a_node_entry_and_child_first",
        ),
    ],
)
def test_legal_corner_cases_load(edits: dict[str, Any]) -> None:
    load(edited(edits))


@pytest.mark.parametrize(
    ("edits", "keys"),
    [
        pytest.param(
            {"classes[0].methods": ["explode"]},
            ["classes[0].methods[0]"],
            id="broken_class_is_not_reported_again_by_its_users",
        ),
        pytest.param(
            {"components": "shelf"},
            ["components"],
            id="malformed_components_section_is_not_reported_again_by_references",
        ),
        pytest.param(
            {"components[1]": 5},
            ["components[1]"],
            id="unreadable_component_is_not_reported_again_as_a_missing_parent",
        ),
        pytest.param(
            {"components[4].name": "Shelf/s1/node"},
            ["components[4].name"],
            id="badly_named_component_is_not_reported_again_by_references",
        ),
        pytest.param(
            {"service_groups": 1},
            ["service_groups"],
            id="malformed_groups_section_is_not_reported_again_by_instances",
        ),
        pytest.param(
            {"service_groups[1].standby": 1},
            ["service_groups[1].standby"],
            id="n_way_standby_is_not_reported_again_as_too_many_members",
        ),
    ],
)
def test_one_mistake_is_reported_once(edits: dict[str, Any], keys: list[str]) -> None:
    assert [p.key for p in problems_of(edited(edits))] == keys


def test_every_problem_is_reported_at_once() -> None:
    data = edited(
        {
            "recovery.restart_mx": 1,
            "components[4].class": "no-such-class",
            "nodes[2].node_id": 1,
            "service_groups[0].members[1]": "shelf/nowhere",
            "audits[0].timeout": "5s",
        }
    )
    keys = {p.key for p in problems_of(data)}
    assert keys >= {
        "recovery.restart_mx",
        "components[4].class",
        "nodes[2].node_id",
        "service_groups[0].members[1]",
        "audits[0].timeout",
    }


def test_error_message_lists_file_key_and_reason() -> None:
    with pytest.raises(ConfigError) as info:
        load(edited({"recovery.restart_mx": 1}), source="/etc/haos/cluster.toml")
    assert str(info.value).startswith("/etc/haos/cluster.toml: recovery.restart_mx: unknown key")
    assert info.value.code == "config"


# --- files ---------------------------------------------------------------------------------------


def test_bad_file_raises_and_returns_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(to_toml(edited({"nodes[0].node_id": "one"})))
    result: ClusterConfig | None = None
    with pytest.raises(ConfigError) as info:
        result = load_config(path)
    assert result is None
    assert [(p.file, p.key) for p in info.value.problems] == [(str(path), "nodes[0].node_id")]


def test_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(to_toml(skeleton()))
    assert load_config(path).source == str(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(
            b"[cluster]\nname = \n",
            "TOML syntax error: Invalid value (at line 2",
            id="syntax_error_names_the_line",
        ),
        pytest.param(
            b"[cluster]\nname = 'a'\n[cluster]\n",
            "line 3",
            id="table_declared_twice_names_the_line",
        ),
        pytest.param(b"\xff\xfe[cluster]\n", "not UTF-8", id="not_utf8"),
    ],
)
def test_unparsable_file_is_a_config_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.file == str(path) and reason in problem.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


# --- the setting tables are the one declaration of each key ---------------------------------------

TABLES = [
    pytest.param(schema.RECOVERY, RecoveryPolicy, id="recovery"),
    pytest.param(schema.CORRELATION, CorrelationPolicy, id="correlation"),
    pytest.param(schema.COMPONENT, Component, id="components"),
    pytest.param(schema.NODE, NodeSpec, id="nodes"),
    pytest.param(schema.GROUP, ServiceGroup, id="service_groups"),
    pytest.param(schema.INSTANCE, ServiceInstance, id="service_instances"),
    pytest.param(schema.AUDIT, AuditSpec, id="audits"),
]


@pytest.mark.parametrize(("settings", "cls"), TABLES)
def test_setting_table_covers_every_field(settings: tuple[schema.Setting, ...], cls: type) -> None:
    assert {s.field for s in settings} == {f.name for f in dataclasses.fields(cls)}


def test_docstring_documents_every_key() -> None:
    doc = loader.__doc__ or ""
    tables = [
        schema.CLUSTER,
        schema.RECOVERY,
        schema.CORRELATION,
        schema.CLASS,
        schema.COMPONENT,
        schema.NODE,
        schema.GROUP,
        schema.INSTANCE,
        schema.AUDIT,
    ]
    keys = {s.key for table in tables for s in table} | set(schema.SECTIONS)
    assert {k for k in keys if not re.search(rf"\b{re.escape(k)}\b", doc)} == set()


# --- garbage never crashes the loader ------------------------------------------------------------


def _paths(value: Any, prefix: str = "") -> list[str]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, f"{prefix}[{i}]")
    return out


EXTRA_PATHS = [
    "recovery.extra",
    "service_groups[0].recovery.restart_max",
    "components[13]",
    "nodes[3]",
    "service_groups[2]",
    "audits[1]",
    "classes[1]",
    "classes[1].base",
    "extra",
    "components[0].attributes.k",
    "service_instances[2]",
]
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["2N", "N+M", "500ms", "-1s", "node", "app", A1, "shelf/s1", "", "n1"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_paths(skeleton()) + EXTRA_PATHS), values), min_size=1, max_size=4
    )
)
def test_garbage_in_a_valid_skeleton_raises_only_config_error(
    edits: list[tuple[str, Any]],
) -> None:
    data = skeleton()
    for path, value in edits:
        set_at(data, path, copy.deepcopy(value))
    try:
        config = parse_config(to_toml(data), "garbage.toml")
    except ConfigError as e:
        assert e.problems
        assert all(p.file == "garbage.toml" and p.reason for p in e.problems)
    else:
        assert isinstance(config, ClusterConfig)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from([*schema.SECTIONS, "x"]), values, max_size=6))
def test_garbage_sections_raise_only_config_error(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        build_config(data, "garbage.toml")
