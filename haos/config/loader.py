"""Load a cluster's configuration from TOML into a frozen :class:`ClusterConfig`.

Every problem in a file is collected, then one :class:`~haos.errors.ConfigError` lists them
all, each naming the file, a key path (``service_groups[2].members[1]``) and the reason.
Nothing of a bad file is returned. Durations are seconds as a number, or strings
``"500ms"``, ``"60s"``, ``"5m"``, ``"1h"``. Names are component-name segments
(``[a-z0-9][a-z0-9_.-]*``); component names are paths of them (``shelf1/slot1/node``).

The format (every table and key below; ``?`` marks optional keys, defaults in brackets)::

    [cluster]
    name = "cpci"
    [recovery]                       # cluster default recovery policy; all keys optional
    soft_reset_max = 1               # counts are integers >= 0
    restart_max = 2
    component_probation = "60s"      # windows and timeouts are durations > 0
    failover_max = 3
    group_probation = "5m"
    recovery_timeout = "10s"
    auto_repair = true
    reboot_node = true
    [correlation]                    # error correlator (CEC); all keys optional
    duplicate_window = "1s"
    container_window = "500ms"
    container_threshold = 2          # >= 2
    hold_time = "50ms"               # >= 0 and <= container_window
    escalate_count = 3               # >= 1
    escalate_window = "30s"
    [[classes]]                      # extra component sub-classes, in any order
    name = "hsp-node"
    base = "node"                    # a built-in class or another [[classes]] entry
    methods? = ["reset"]             # haos.model.classes.Method values [none]
    [[components]]                   # the containment tree, in any order
    name = "shelf1/slot1/node"       # its parent "shelf1/slot1" must be declared too
    class = "hsp-node"
    attributes? = { key = "value" }  # string values [{}]
    manager? = { kind = "systemd", unit = "web.service" }  # how its node's agent runs it
    #   [none: not run, e.g. hardware]; a managed component lies inside a node's component.
    #   systemd: unit = "x.service" (started while primary, else stopped)
    #   ocf: agent = "ocf:heartbeat:Dummy", params? = { state = "/run/d" }, promotable? = true
    #   client: command = ["python3", "app.py"], environment? = {...}, quiesce_timeout? = "5s"
    #   any kind: stop_timeout? = "10s" (then killed); promotable [from the agent's meta-data]
    [[nodes]]
    name = "n1"
    node_id = 1                      # 1 .. 2**32-1, unique
    component = "shelf1/slot1/node"  # a component whose class is a node class; one per node
    priority? = 10                   # higher wins master election [0]
    addresses? = ["10.10.0.1", "10.11.0.1"]   # IP addresses, unique in the cluster [[]]
    [[service_groups]]
    name = "hsp"
    redundancy = "2N"                # 2N | N+M | N-way-active | hot-restart | no-redundancy
    members = ["shelf1/slot1/node/hsp", "shelf2/slot1/node/hsp"]   # each in one group only
    active? = 1                      # N; see the per-model rules below
    standby? = 1                     # M
    failback? = false
    persistent_checkpoint? = false   # the group's checkpoint survives a whole-cluster outage
    recovery? = { restart_max = 0 }  # merged over [recovery]
    [[service_instances]]
    name = "hsp-si"
    group = "hsp"
    rank? = 0                        # >= 0; lower ranks are served first [0]
    actives? = 1                     # > 1 only under N-way-active, <= the group's active [1]
    [[audits]]
    component = "shelf1/slot1/node/hsp"
    name = "alive"                   # unique per component
    period = "1s"
    timeout = "500ms"                # shorter than period
    kind? = "command"                # command | http | callback ["command"]
    target = "/bin/true"             # command line, URL or callback name
    #   command: a command line, split as a shell would (no shell runs it)
    #   http: an http:// URL on this node (127.0.0.1, ::1 or localhost); a 2xx status passes
    #   callback: the name under which the component's own application registers an audit
    #     (haos.client's register_audit(name, ...)); it is run on this audit's schedule
    [fencing]                        # fence devices and self-fencing: see haos.config.fencing
    [boot]                           # how a release on trial is committed: see haos.config.boot
    [management]                     # the management daemon's endpoint: see haos.config.management

Per redundancy model (active, standby): 2N is exactly (1, 1), the defaults, and may have
fewer or more than two members (a degraded or spared configuration is legal); N+M needs both
set, each >= 1, with active + standby <= members; N-way-active defaults active to the number
of members and standby must be 0; hot-restart and no-redundancy default active to 1 and
standby must be 0. Outside 2N, active + standby may not exceed the members.

``ClusterConfig.classes`` holds only the file's classes (not the built-in ones), each after
its base, so adding them in turn to a ``ClassRegistry()`` rebuilds the registry.
``components`` is ordered parents first (by depth, file order within a depth); every other
tuple keeps the file's order.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from haos.config.audits import read_audits
from haos.config.boot import read_boot
from haos.config.declared import Declared as _Declared
from haos.config.declared import unique as _unique
from haos.config.declared import unique_field as _unique_field
from haos.config.fencing import read_fencing
from haos.config.management import read_management
from haos.config.model import ClusterConfig, CorrelationPolicy, ManagerSpec, NodeSpec
from haos.config.schema import (
    CLASS,
    CLUSTER,
    COMPONENT,
    COMPONENT_EXTRA,
    CORRELATION,
    GROUP,
    INSTANCE,
    NODE,
    RECOVERY,
    SECTIONS,
    Entry,
    Problems,
    Setting,
    check_keys,
    read_array,
    read_manager,
    read_table,
    short_repr,
)
from haos.config.schema import join as _key
from haos.errors import ConfigError, ConfigProblem
from haos.model.classes import BUILTIN_CLASSES, ClassRegistry, ComponentClass, Method
from haos.model.names import SEPARATOR, is_within, parent_of
from haos.model.redundancy import (
    RecoveryPolicy,
    RedundancyModel,
    ServiceGroup,
    ServiceInstance,
)
from haos.model.tree import Component

__all__ = [
    "build_config",
    "load_config",
    "parse_config",
]

# --- public entry points ---------------------------------------------------------------------


def load_config(path: str | Path) -> ClusterConfig:
    """Load and validate the TOML file at ``path``; raise ConfigError listing every problem."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError([ConfigProblem(source, "", f"cannot read: {e.strerror or e}")]) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(source, "", f"not UTF-8 text: {e}")]) from e
    return parse_config(text, source)


def parse_config(text: str, source: str) -> ClusterConfig:
    """Parse TOML ``text`` (``source`` names it in problems) into a validated ClusterConfig."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigProblem(source, "", f"TOML syntax error: {e}")]) from e
    except RecursionError as e:
        reason = "arrays or inline tables nested too deep for the TOML parser"
        raise ConfigError([ConfigProblem(source, "", reason)]) from e
    except ValueError as e:  # tomllib's int() of a literal past the interpreter's digit limit
        reason = _too_many_digits(text) if "digits" in str(e) else f"TOML value error: {e}"
        raise ConfigError([ConfigProblem(source, "", reason)]) from e
    return build_config(data, source)


def _too_many_digits(text: str) -> str:
    """The reason for an integer literal with more digits than Python converts, with its line."""
    limit = sys.get_int_max_str_digits()
    reason = f"an integer literal has more than {limit} digits"
    # An integer value follows "=", "[" or ","; a long run of digits in a string is harmless.
    found = re.search(r"[=\[,]\s*[+-]?[0-9][0-9_]{" + str(limit) + ",}", text)
    if found is None:
        return reason
    line = text.count("\n", 0, found.start() + 1) + 1
    key = text[text.rfind("\n", 0, found.start()) + 1 : found.start()].strip(" \t=")
    where = f"line {line}" + (f" (key {short_repr(key)})" if key else "")
    return f"{where}: {reason}"


def build_config(data: Mapping[str, object], source: str) -> ClusterConfig:
    """Validate already-parsed TOML ``data``; raise ConfigError listing every problem."""
    problems = Problems(source)
    check_keys(data, "", SECTIONS, problems)
    if "cluster" in data:
        cluster = read_table(data["cluster"], "cluster", CLUSTER, problems)
    else:
        problems.add("cluster", "missing required table [cluster]")
        cluster = Entry("cluster", {}, False)
    recovery, _ = _policy(
        data.get("recovery", {}), "recovery", RECOVERY, RecoveryPolicy(), problems
    )
    correlation = _correlation(data.get("correlation", {}), problems)
    classes, registry = _classes(data.get("classes"), problems)
    managers: dict[str, ManagerSpec] = {}
    tree = _components(data.get("components"), classes, managers, problems)
    nodes = _nodes(data.get("nodes"), tree, registry, problems)
    _managed_on_nodes(managers, tree, nodes, problems)
    groups = _groups(data.get("service_groups"), tree, recovery, problems, registry)
    instances = _instances(data.get("service_instances"), groups, problems)
    audits = read_audits(data.get("audits"), tree, problems)
    fencing = read_fencing(data.get("fencing"), nodes, problems)
    boot = read_boot(data.get("boot"), problems)
    management = read_management(data.get("management"), problems)
    problems.raise_if_any()
    return ClusterConfig(
        name=cluster.values["name"],
        classes=tuple(c for c in classes.built.values() if c not in BUILTIN_CLASSES),
        components=_parents_first(tree),
        nodes=nodes,
        groups=tuple(groups.built.values()),
        instances=instances,
        recovery=recovery,
        correlation=correlation,
        audits=audits,
        source=source,
        managers=managers,
        fencing=fencing,
        boot=boot,
        management=management,
    )


# --- sections --------------------------------------------------------------------------------

_Policy = TypeVar("_Policy", RecoveryPolicy, CorrelationPolicy)


def _policy(
    raw: object, path: str, settings: tuple[Setting, ...], default: _Policy, problems: Problems
) -> tuple[_Policy, bool]:
    """``default`` with the table's keys replaced; and whether the table was valid."""
    entry = read_table(raw, path, settings, problems)
    return dataclasses.replace(default, **entry.values), entry.complete


def _correlation(raw: object, problems: Problems) -> CorrelationPolicy:
    policy, ok = _policy(raw, "correlation", CORRELATION, CorrelationPolicy(), problems)
    # A report held past the pattern window can no longer join a pattern: holding is waste.
    if ok and policy.hold_time > policy.container_window:
        problems.add(
            "correlation.hold_time",
            f"must not exceed container_window ({policy.container_window}s), "
            f"not {policy.hold_time}s",
        )
    return policy


def _classes(raw: object, problems: Problems) -> tuple[_Declared[ComponentClass], ClassRegistry]:
    """Every class declared (built in first) and the registry of the valid ones."""
    classes = _Declared[ComponentClass]("class", built={c.name: c for c in BUILTIN_CLASSES})
    classes.paths.update((c.name, "the built-in classes") for c in BUILTIN_CLASSES)
    classes.note(raw)
    pending: dict[str, tuple[str, ComponentClass]] = {}
    for path, item in read_array(raw, "classes", problems):
        entry = read_table(item, path, CLASS, problems)
        classes.note(raw, entry)
        if _unique_field(entry, "name", classes.paths, "class name", problems) and entry.complete:
            methods = frozenset(Method(m) for m in entry.values.get("methods", ()))
            cls = ComponentClass(entry.values["name"], entry.values["base"], methods)
            pending[cls.name] = (path, cls)
    registry = ClassRegistry()
    progress = True
    while progress:  # add each class once its base is in; any order in the file works
        progress = False
        for name, (_, cls) in list(pending.items()):
            if cls.base in registry:
                registry.add(cls)
                classes.built[name] = cls
                del pending[name]
                progress = True
    for path, cls in pending.values():
        _report_unresolved(path, cls, pending, classes, problems)
    return classes, registry


def _report_unresolved(
    path: str,
    cls: ComponentClass,
    pending: Mapping[str, tuple[str, ComponentClass]],
    classes: _Declared[ComponentClass],
    problems: Problems,
) -> None:
    """Explain why ``cls`` never found its base: unknown, or a cycle it is part of."""
    assert cls.base is not None
    if cls.base not in classes.paths:
        classes.check_ref(cls.base, _key(path, "base"), problems)
        return
    chain = [cls.name]
    base: str | None = cls.base
    while base is not None and base in pending and base not in chain:
        chain.append(base)
        base = pending[base][1].base
    if base == cls.name:
        problems.add(
            _key(path, "base"), f"base classes form a cycle: {' -> '.join([*chain, cls.name])}"
        )
    # Otherwise it derives from a broken or cyclic class, which is reported where it is.


def _components(
    raw: object,
    classes: _Declared[ComponentClass],
    managers: dict[str, ManagerSpec],
    problems: Problems,
) -> _Declared[Component]:
    tree = _Declared[Component]("component")
    tree.note(raw)
    for path, item in read_array(raw, "components", problems):
        entry = read_table(item, path, COMPONENT + COMPONENT_EXTRA, problems)
        tree.note(raw, entry)
        cls = entry.values.get("cls")
        ok = cls is not None and classes.check_ref(cls, _key(path, "class"), problems)
        if _unique_field(entry, "name", tree.paths, "component name", problems) and ok:
            values = entry.values
            tree.built[values["name"]] = Component(
                values["name"], values["cls"], values.get("attributes", {})
            )
        if "manager" in entry.values:
            spec = read_manager(entry.values["manager"], _key(path, "manager"), problems)
            if spec is not None and "name" in entry.values:
                managers[entry.values["name"]] = spec
    for name, path in tree.paths.items():
        parent = parent_of(str(name))
        if parent is not None and parent not in tree.paths and tree.complete:
            problems.add(
                _key(path, "name"), f"parent component {short_repr(parent)} is not declared"
            )
    return tree


def _parents_first(tree: _Declared[Component]) -> tuple[Component, ...]:
    """Components by depth; within a depth in file order (the sort is stable)."""
    return tuple(sorted(tree.built.values(), key=lambda c: c.name.count(SEPARATOR)))


def _managed_on_nodes(
    managers: Mapping[str, ManagerSpec], tree: _Declared[Component], nodes: tuple[NodeSpec, ...],
    problems: Problems,
) -> None:  # fmt: skip
    """A managed component lies inside (or is) a node's component: that node's agent runs it."""
    for name in managers:
        if nodes and not any(is_within(name, n.component) for n in nodes):
            reason = (
                f"component {short_repr(name)} lies inside no node's component: "
                "no agent would run it"
            )
            problems.add(_key(tree.paths[name], "manager"), reason)


def _nodes(
    raw: object, tree: _Declared[Component], registry: ClassRegistry, problems: Problems
) -> tuple[NodeSpec, ...]:
    if raw is None or raw == []:
        problems.add("nodes", "a cluster needs at least one [[nodes]] entry")
    names: dict[object, str] = {}
    ids: dict[object, str] = {}
    owners: dict[object, str] = {}
    addresses: dict[object, str] = {}
    out: list[NodeSpec] = []
    for path, item in read_array(raw, "nodes", problems):
        entry = read_table(item, path, NODE, problems)
        ok = _unique_field(entry, "name", names, "node name", problems)
        ok = _unique_field(entry, "node_id", ids, "node_id", problems) and ok
        if _node_component(entry, tree, registry, problems):
            ok = _unique_field(entry, "component", owners, "node component", problems) and ok
        else:
            ok = False
        for i, address in enumerate(entry.values.get("addresses", ())):
            key = f"{_key(path, 'addresses')}[{i}]"
            ok = _unique(address, key, path, addresses, "address", problems) and ok
        if ok and entry.complete:
            out.append(NodeSpec(**entry.values))
    for inner in out:
        for outer in out:
            if inner is not outer and is_within(inner.component, outer.component):
                problems.add(
                    _key(names[inner.name], "component"),
                    f"lies inside {short_repr(outer.component)}, the component of node "
                    f"{outer.name!r}; nodes cannot nest",
                )
    return tuple(out)


def _node_component(
    entry: Entry, tree: _Declared[Component], registry: ClassRegistry, problems: Problems
) -> bool:
    name = entry.values.get("component")
    if name is None or not tree.check_ref(name, _key(entry.path, "component"), problems):
        return False
    cls = tree.built[name].cls
    if not registry.hosts_components(cls):
        problems.add(
            _key(entry.path, "component"),
            f"component {short_repr(name)} is of class {cls!r}, which is not a node class "
            "(a sub-class of 'node')",
        )
        return False
    return True


def _groups(
    raw: object,
    tree: _Declared[Component],
    default: RecoveryPolicy,
    problems: Problems,
    registry: ClassRegistry,
) -> _Declared[ServiceGroup]:
    groups = _Declared[ServiceGroup]("service group")
    groups.note(raw)
    member_of: dict[str, tuple[str, str]] = {}  # component -> (group path, group name)
    for path, item in read_array(raw, "service_groups", problems):
        entry = read_table(item, path, GROUP, problems)
        groups.note(raw, entry)
        ok = _unique_field(entry, "name", groups.paths, "service group name", problems)
        ok = _members(entry, tree, member_of, problems, registry) and ok
        recovery, good = _policy(
            entry.values.get("recovery", {}), _key(path, "recovery"), RECOVERY, default, problems
        )
        if not (entry.complete and good):
            continue
        model = RedundancyModel(entry.values["model"])
        members = entry.values["members"]
        active, standby = _shape(entry, model, len(members), problems)
        if ok and active is not None and standby is not None:
            name = entry.values["name"]
            groups.built[name] = ServiceGroup(
                name,
                model,
                members,
                active,
                standby,
                recovery,
                failback=entry.values.get("failback", False),
                persistent_checkpoint=entry.values.get("persistent_checkpoint", False),
            )
    return groups


def _members(
    entry: Entry,
    tree: _Declared[Component],
    member_of: dict[str, tuple[str, str]],
    problems: Problems,
    registry: ClassRegistry,
) -> bool:
    """Check each member is a declared component in no other group and not a node's board;
    claim it for this one."""
    ok = True
    group = (entry.path, entry.values.get("name", entry.path))
    for i, member in enumerate(entry.values.get("members", ())):
        key = f"{_key(entry.path, 'members')}[{i}]"
        if not tree.check_ref(member, key, problems):
            ok = False
        elif _is_node_class(tree, registry, member):
            # No agent runs a node's own component in a role (it is up while its node is a
            # member; the membership monitor elects node roles): it would never serve.
            problems.add(
                key,
                f"component {member!r} is of node class {tree.built[member].cls!r}: a node "
                "cannot be a service-group member; make a component inside it the member",
            )
            ok = False
        elif member in member_of:
            other = member_of[member]
            where = "this group" if other == group else f"group {other[1]!r} ({other[0]})"
            problems.add(key, f"component {member!r} is already a member of {where}")
            ok = False
        else:
            member_of[member] = group
    return ok


def _is_node_class(tree: _Declared[Component], registry: ClassRegistry, name: str) -> bool:
    comp = tree.built.get(name)
    return comp is not None and comp.cls in registry and registry.hosts_components(comp.cls)


# Per model: default (active, standby) given the number of members; None means "required".
_DEFAULT_SHAPE: dict[RedundancyModel, Callable[[int], tuple[int | None, int | None]]] = {
    RedundancyModel.TWO_N: lambda n: (1, 1),
    RedundancyModel.N_PLUS_M: lambda n: (None, None),
    RedundancyModel.N_WAY_ACTIVE: lambda n: (n, 0),
    RedundancyModel.HOT_RESTART: lambda n: (1, 0),
    RedundancyModel.NO_REDUNDANCY: lambda n: (1, 0),
}


def _shape(
    entry: Entry, model: RedundancyModel, members: int, problems: Problems
) -> tuple[int | None, int | None]:
    """The group's (active, standby) after defaults, or Nones after reporting problems."""
    default_active, default_standby = _DEFAULT_SHAPE[model](members)
    active = entry.values.get("active", default_active)
    standby = entry.values.get("standby", default_standby)
    found: list[tuple[str, str]] = []
    if active is None:
        found.append(("active", f"{model} needs active (N) set"))
    if standby is None:
        found.append(("standby", f"{model} needs standby (M) set"))
    if active is not None and standby is not None:
        found = _shape_rules(model, members, active, standby)
    for key, reason in found:
        problems.add(_key(entry.path, key), reason)
    return (None, None) if found else (active, standby)


def _shape_rules(
    model: RedundancyModel, members: int, active: int, standby: int
) -> list[tuple[str, str]]:
    if model is RedundancyModel.TWO_N:
        # Fewer or more than two members is legal (degraded, or spares); the shape is not.
        return [
            (key, f"2N has exactly one {key} member, not {value}")
            for key, value in (("active", active), ("standby", standby))
            if value != 1
        ]
    found: list[tuple[str, str]] = []
    if active < 1:
        found.append(("active", f"{model} needs at least one active member, not {active}"))
    if model is RedundancyModel.N_PLUS_M and standby < 1:
        found.append(("standby", f"N+M needs at least one standby member, not {standby}"))
    if not model.has_standby and standby != 0:
        found.append(("standby", f"{model} has no standby members; standby must be 0"))
    if not found and active + standby > members:
        found.append(
            ("active", f"active + standby = {active + standby} exceeds the {members} member(s)")
        )
    return found


def _instances(
    raw: object, groups: _Declared[ServiceGroup], problems: Problems
) -> tuple[ServiceInstance, ...]:
    names: dict[object, str] = {}
    out: list[ServiceInstance] = []
    for path, item in read_array(raw, "service_instances", problems):
        entry = read_table(item, path, INSTANCE, problems)
        ok = _unique_field(entry, "name", names, "service instance name", problems)
        group_name = entry.values.get("group")
        group = None
        if group_name is not None and groups.check_ref(group_name, _key(path, "group"), problems):
            group = groups.built[group_name]
        if group is not None and "actives" in entry.values:
            ok = _check_actives(path, group, entry.values["actives"], problems) and ok
        if ok and entry.complete and group is not None:
            out.append(ServiceInstance(**entry.values))
    return tuple(out)


def _check_actives(path: str, group: ServiceGroup, actives: int, problems: Problems) -> bool:
    key = _key(path, "actives")
    if actives > 1 and group.model is not RedundancyModel.N_WAY_ACTIVE:
        problems.add(
            key, f"actives > 1 needs an N-way-active group; group {group.name!r} is {group.model}"
        )
        return False
    if actives > group.active:
        problems.add(
            key,
            f"wants {actives} actives but group {group.name!r} has "
            f"{len(group.members)} member(s), {group.active} of them active",
        )
        return False
    return True
