"""Build cluster configurations in code, for tests, benchmarks and the simulator.

A generated cluster has ``shelves`` chassis, each with ``nodes_per_shelf`` node boards in
slots, and on every node one application per service group that spans nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from haos.config.model import ClusterConfig, NodeSpec
from haos.model.redundancy import RecoveryPolicy, RedundancyModel, ServiceGroup, ServiceInstance
from haos.model.tree import Component


@dataclass(frozen=True)
class GroupPlan:
    """One service group to generate: an app named ``name`` on each of ``nodes``."""

    name: str
    model: RedundancyModel
    nodes: Sequence[int]  # 1-based node numbers hosting a member
    instances: int = 1
    active: int = 1
    standby: int = 1
    actives: int = 1  # per instance, N-way-active only


def generated_cluster(
    node_count: int,
    plans: Sequence[GroupPlan],
    recovery: RecoveryPolicy | None = None,
    nodes_per_shelf: int = 8,
) -> ClusterConfig:
    recovery = recovery or RecoveryPolicy()
    comps: list[Component] = []
    nodes: list[NodeSpec] = []
    shelves = (node_count + nodes_per_shelf - 1) // nodes_per_shelf
    for s in range(1, shelves + 1):
        comps.append(Component(f"shelf{s}", "chassis"))
    for n in range(1, node_count + 1):
        shelf = (n - 1) // nodes_per_shelf + 1
        slot = (n - 1) % nodes_per_shelf + 1
        comps.append(Component(f"shelf{shelf}/slot{slot}", "slot"))
        comps.append(Component(f"shelf{shelf}/slot{slot}/node", "node"))
        nodes.append(NodeSpec(f"n{n}", n, f"shelf{shelf}/slot{slot}/node", priority=0))
    groups: list[ServiceGroup] = []
    instances: list[ServiceInstance] = []
    for plan in plans:
        members = []
        for n in plan.nodes:
            node_comp = nodes[n - 1].component
            name = f"{node_comp}/{plan.name}"
            comps.append(Component(name, "application"))
            members.append(name)
        standby = plan.standby if plan.model.has_standby else 0
        active = plan.active
        if plan.model is RedundancyModel.TWO_N:
            active, standby = 1, 1
        groups.append(
            ServiceGroup(plan.name, plan.model, tuple(members), active, standby, recovery)
        )
        for i in range(plan.instances):
            instances.append(
                ServiceInstance(f"{plan.name}-si{i}", plan.name, rank=i, actives=plan.actives)
            )
    return ClusterConfig(
        name="generated",
        classes=(),
        components=tuple(comps),
        nodes=tuple(nodes),
        groups=tuple(groups),
        instances=tuple(instances),
        recovery=recovery,
    )
