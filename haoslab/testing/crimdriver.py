"""Drive the CRIM policy by hand in tests: feed events, keep the state, read the roles."""

from __future__ import annotations

from collections.abc import Iterable

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Action, Decision
from haos.cluster.crim.policy import decide
from haos.cluster.crim.state import CrimState, initial_state
from haos.cluster.crim.topology import Topology
from haos.config.model import ClusterConfig
from haos.model.states import AvailabilityState


class CrimDriver:
    def __init__(self, config: ClusterConfig) -> None:
        self.topo = Topology(config)
        self.state: CrimState = initial_state(self.topo)
        self.now = 0.0
        self.log: list[Decision] = []

    def go(self, event: ev.Event, at: float | None = None) -> Decision:
        if at is not None:
            self.now = at
        decision = decide(self.topo, self.state, event, self.now)
        self.state = decision.state
        self.log.append(decision)
        return decision

    def boot(self, order: Iterable[str] | None = None) -> None:
        """All nodes join, then every group member becomes available (in ``order`` if given)."""
        for node in self.topo.nodes:
            self.go(ev.NodeJoined(node))
        members = (
            list(order)
            if order is not None
            else [m for g in self.topo.groups.values() for m in g.members]
        )
        for m in members:
            self.go(ev.ComponentAvailable(m))

    def role(self, component: str) -> AvailabilityState:
        return self.state.components[component].state

    def roles(self, group: str) -> dict[str, str]:
        return {m: str(self.role(m)) for m in self.topo.groups[group].members}

    def primaries(self, instance: str) -> list[str]:
        return self.state.primaries(instance, self.topo)

    def secondaries(self, instance: str) -> list[str]:
        return self.state.secondaries(instance, self.topo)


def kinds(actions: Iterable[Action]) -> list[str]:
    """Action type names, for compact assertions."""
    return [type(a).__name__ for a in actions]
