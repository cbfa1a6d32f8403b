"""The CRIM's runtime state: one immutable snapshot per decision."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from haos.cluster.crim.topology import Topology
from haos.model.redundancy import RecoveryPolicy
from haos.model.reports import RecoveryLevel
from haos.model.states import AdminState, AvailabilityState


class Health(enum.Enum):
    ABSENT = "absent"  # not running: never started, or lost with its node or container
    HEALTHY = "healthy"
    RECOVERING = "recovering"  # a soft reset or hot restart is in progress
    FAILED = "failed"  # taken off-line after a failure: waiting for repair, or held out

    def __str__(self) -> str:
        return self.value


class OfflineBy(enum.Enum):
    OPERATOR = "operator"
    SELF = "self"  # the component asked to be taken off-line (e.g. for diagnostics)
    # Out of service after a failure no automatic recovery may retry (a hard error, a failure
    # while on probation, a node reboot that could not be ordered): only an operator's
    # ``online`` brings it back.
    FAULT = "fault"


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
    # When it was failed over (taken off-line for a fault), within ``component_probation``:
    # while any is left the component is on probation (see :func:`on_probation`).
    failures: tuple[float, ...] = ()
    why: str = ""  # why it is out of service (or was last failed over); "" when healthy


@dataclass(frozen=True)
class NodeRuntime:
    member: bool = False
    admin: AdminState = AdminState.UNLOCKED


@dataclass(frozen=True)
class Failover:
    """One fail-over of a group: when, and the node of the member that failed ("" if none)."""

    at: float
    node: str = ""


@dataclass(frozen=True)
class GroupRuntime:
    admin: AdminState = AdminState.UNLOCKED
    failovers: tuple[Failover, ...] = ()


@dataclass(frozen=True)
class Reboot:
    """A node reboot ordered by the CRIM and not yet over (the node has not rejoined)."""

    node: str
    at: float
    reason: str = ""


@dataclass(frozen=True)
class CrimState:
    components: Mapping[str, ComponentRuntime]
    nodes: Mapping[str, NodeRuntime]
    groups: Mapping[str, GroupRuntime]
    outages: Mapping[str, float] = field(default_factory=dict)  # instance -> since
    served: frozenset[str] = frozenset()  # instances served by a healthy primary
    reboot: Reboot | None = None  # at most one node reboot is under way at a time

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
    failures = within(rt.failures, now, w)
    if resets == rt.soft_resets and restarts == rt.restarts and failures == rt.failures:
        return rt
    return replace(rt, soft_resets=resets, restarts=restarts, failures=failures)


def on_probation(rt: ComponentRuntime, policy: RecoveryPolicy, now: float) -> bool:
    """Whether ``rt`` failed over within ``component_probation`` and has not yet proved itself.

    A component on probation takes a role only when no other member can (it is the last
    choice for a take-over), and failing over again while on probation takes it out of
    service instead of repairing it once more.
    """
    return bool(within(rt.failures, now, policy.component_probation))
