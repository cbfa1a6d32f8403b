"""The CRIM's runtime state: one immutable snapshot per decision."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from haos.cluster.crim.topology import Topology
from haos.model.redundancy import RecoveryPolicy
from haos.model.reports import RecoveryLevel
from haos.model.states import AdminState, AvailabilityState


class Health(enum.Enum):
    ABSENT = "absent"  # not running: never started, or lost with its node or container
    HEALTHY = "healthy"
    RECOVERING = "recovering"  # a soft reset or hot restart is in progress
    FAILED = "failed"  # taken off-line after a failure, waiting for repair

    def __str__(self) -> str:
        return self.value


class OfflineBy(enum.Enum):
    OPERATOR = "operator"
    SELF = "self"  # the component asked to be taken off-line (e.g. for diagnostics)


@dataclass(frozen=True)
class Recovery:
    level: RecoveryLevel
    started: float
    deadline: float


@dataclass(frozen=True)
class ComponentRuntime:
    state: AvailabilityState = AvailabilityState.OFFLINE
    health: Health = Health.ABSENT
    admin: AdminState = AdminState.UNLOCKED
    offline_by: OfflineBy | None = None
    instances: frozenset[str] = frozenset()  # instances it serves in its role
    recovery: Recovery | None = None
    soft_resets: tuple[float, ...] = ()  # start times, within the probation window
    restarts: tuple[float, ...] = ()


@dataclass(frozen=True)
class NodeRuntime:
    member: bool = False
    admin: AdminState = AdminState.UNLOCKED


@dataclass(frozen=True)
class GroupRuntime:
    admin: AdminState = AdminState.UNLOCKED
    failovers: tuple[float, ...] = ()


@dataclass(frozen=True)
class CrimState:
    components: Mapping[str, ComponentRuntime]
    nodes: Mapping[str, NodeRuntime]
    groups: Mapping[str, GroupRuntime]
    outages: Mapping[str, float] = field(default_factory=dict)  # instance -> since
    served: frozenset[str] = frozenset()  # instances served by a healthy primary

    def primaries(self, instance: str, topo: Topology) -> list[str]:
        return self._holders(instance, topo, AvailabilityState.PRIMARY)

    def secondaries(self, instance: str, topo: Topology) -> list[str]:
        return self._holders(instance, topo, AvailabilityState.SECONDARY)

    def _holders(self, instance: str, topo: Topology, role: AvailabilityState) -> list[str]:
        group = topo.groups[topo.instances[instance].group]
        out = []
        for m in group.members:
            rt = self.components.get(m)
            if rt is not None and rt.state is role and instance in rt.instances:
                out.append(m)
        return out


def initial_state(topo: Topology) -> CrimState:
    """Everything off-line and absent; nodes not yet members."""
    return CrimState(
        components=MappingProxyType({c.name: ComponentRuntime() for c in topo.tree}),
        nodes=MappingProxyType({n: NodeRuntime() for n in topo.nodes}),
        groups=MappingProxyType({g: GroupRuntime() for g in topo.groups}),
    )


def within(times: tuple[float, ...], now: float, window: float) -> tuple[float, ...]:
    """The entries of ``times`` no older than ``window`` seconds."""
    return tuple(t for t in times if now - t < window)


def prune(rt: ComponentRuntime, policy: RecoveryPolicy, now: float) -> ComponentRuntime:
    w = policy.component_probation
    resets, restarts = within(rt.soft_resets, now, w), within(rt.restarts, now, w)
    if resets == rt.soft_resets and restarts == rt.restarts:
        return rt
    return ComponentRuntime(
        rt.state, rt.health, rt.admin, rt.offline_by, rt.instances, rt.recovery, resets, restarts
    )
