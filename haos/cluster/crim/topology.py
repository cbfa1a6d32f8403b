"""Static indexes over a cluster configuration, computed once and shared by every decision."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from haos.config.model import ClusterConfig, NodeSpec
from haos.model.classes import ClassRegistry, Method
from haos.model.names import ancestors_of
from haos.model.redundancy import RecoveryPolicy, ServiceGroup, ServiceInstance
from haos.model.tree import Component, ContainmentTree


@dataclass(frozen=True)
class GroupShape:
    """Capacities derived from a group's redundancy model and its number of instances."""

    primary_capacity: int  # instances one component may serve as primary
    standby_capacity: int  # instances one component may back as secondary


class Topology:
    """Read-only view of the configuration the CRIM decides over."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.classes = ClassRegistry()
        for cls in config.classes:
            self.classes.add(cls)
        self.tree = ContainmentTree()
        for comp in config.components:
            self.tree.add(comp)
        self.nodes: dict[str, NodeSpec] = {n.name: n for n in config.nodes}
        self._node_by_component = {n.component: n.name for n in config.nodes}
        self.groups: dict[str, ServiceGroup] = {g.name: g for g in config.groups}
        self.instances: dict[str, ServiceInstance] = {i.name: i for i in config.instances}
        self.group_of: dict[str, str] = {}
        for g in config.groups:
            for m in g.members:
                self.group_of[m] = g.name
        self.member_rank: dict[str, int] = {
            m: i for g in config.groups for i, m in enumerate(g.members)
        }
        self.instances_of: dict[str, tuple[str, ...]] = {
            g.name: tuple(
                i.name
                for i in sorted(
                    (i for i in config.instances if i.group == g.name),
                    key=lambda i: (i.rank, i.name),
                )
            )
            for g in config.groups
        }
        self.host_of: dict[str, str | None] = {c.name: self._host(c) for c in config.components}
        hosted: dict[str, list[str]] = {n: [] for n in self.nodes}
        for name, node in self.host_of.items():
            if node is not None:
                hosted[node].append(name)
        self.hosted: Mapping[str, tuple[str, ...]] = {k: tuple(v) for k, v in hosted.items()}
        self.shapes = {g.name: self._shape(g) for g in config.groups}
        self._methods = {c.name: self.classes.methods(c.cls) for c in config.components}

    def _host(self, comp: Component) -> str | None:
        for name in [comp.name, *ancestors_of(comp.name)]:
            node = self._node_by_component.get(name)
            if node is not None:
                return node
        return None

    def _shape(self, group: ServiceGroup) -> GroupShape:
        count = max(1, len(self.instances_of[group.name]))
        return GroupShape(
            primary_capacity=math.ceil(count / max(1, group.active)),
            standby_capacity=math.ceil(count / max(1, group.standby)),
        )

    def spreads(self, group: str) -> bool:
        """Whether a member of ``group`` can ever hold more roles than its capacity allows
        (then work is spread onto members that come back, see ``assign``)."""
        spec, shape = self.groups[group], self.shapes[group]
        if not spec.model.exclusive_primary:
            return False
        count = len(self.instances_of[group])
        over_standby = spec.model.has_standby and shape.standby_capacity < count
        return shape.primary_capacity < count or over_standby

    def node_component(self, node: str) -> str:
        return self.nodes[node].component

    def supports(self, component: str, method: Method) -> bool:
        return method in self._methods[component]

    def recovery_policy(self, component: str) -> RecoveryPolicy:
        group = self.group_of.get(component)
        return self.groups[group].recovery if group else self.config.recovery

    def is_node_component(self, component: str) -> bool:
        return component in self._node_by_component

    def node_of_component(self, component: str) -> str | None:
        """The node whose node-class component is ``component`` itself."""
        return self._node_by_component.get(component)

    def resolve_target(self, name: str) -> tuple[str, str] | None:
        """Resolve an operator target to (kind, name): node, group, instance or component."""
        if name in self.nodes:
            return ("node", name)
        if name in self.groups:
            return ("group", name)
        if name in self.instances:
            return ("instance", name)
        if name in self.tree:
            return ("component", name)
        return None
