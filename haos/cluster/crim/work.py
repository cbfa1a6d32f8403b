"""A decision in progress: a mutable working copy of the state plus the actions so far.

Every role change goes through :meth:`Work.set_role`, which checks the transition against
FIG 5 and records the action, so no decision can emit an illegal transition unnoticed.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from haos.cluster.crim.actions import Action, AssignRole, Decision, Publish
from haos.cluster.crim.state import (
    ComponentRuntime,
    CrimState,
    GroupRuntime,
    Health,
    NodeRuntime,
    on_probation,
)
from haos.cluster.crim.topology import Topology
from haos.model.reports import Notification, ServiceOutage, ServiceRestored, StateChanged
from haos.model.states import AdminState, AvailabilityState, check_transition

_PRIMARY = AvailabilityState.PRIMARY
_SECONDARY = AvailabilityState.SECONDARY


class Work:
    def __init__(self, topo: Topology, state: CrimState, now: float) -> None:
        self.topo = topo
        self.now = now
        self.components = dict(state.components)
        self.nodes = dict(state.nodes)
        self.groups = dict(state.groups)
        self.outages = dict(state.outages)
        self.served = set(state.served)
        self.reboot = state.reboot
        self.actions: list[Action] = []
        self.touched_groups: set[str] = set()
        # When the trouble this decision reacts to began; outages are dated from it.
        self.since = now
        self.interrupted: dict[str, float] = {}

    # --- reading -------------------------------------------------------------------------

    def rt(self, component: str) -> ComponentRuntime:
        return self.components[component]

    def eligible(self, component: str) -> bool:
        """May ``component`` take a new role right now?"""
        rt = self.components[component]
        if rt.health is not Health.HEALTHY or rt.offline_by is not None:
            return False
        return self.may_hold(component)

    def on_probation(self, component: str) -> bool:
        """Did ``component`` fail over recently? Then it is the last choice for a role."""
        policy = self.topo.recovery_policy(component)
        return on_probation(self.components[component], policy, self.now)

    def may_hold(self, component: str) -> bool:
        """May ``component`` keep a role it has (administratively and by membership)?"""
        rt = self.components[component]
        if rt.admin is AdminState.LOCKED or rt.offline_by is not None:
            return False
        if rt.health not in (Health.HEALTHY, Health.RECOVERING):
            return False
        node = self.topo.host_of.get(component)
        if node is not None:
            n = self.nodes[node]
            if not n.member or n.admin is AdminState.LOCKED:
                return False
        group = self.topo.group_of.get(component)
        return group is None or self.groups[group].admin is AdminState.UNLOCKED

    # --- writing -------------------------------------------------------------------------

    def update(self, component: str, **changes: Any) -> None:
        self.components[component] = dataclasses.replace(self.components[component], **changes)

    def set_role(
        self,
        component: str,
        new: AvailabilityState,
        instances: frozenset[str] = frozenset(),
        graceful: bool = False,
    ) -> None:
        """Give ``component`` state ``new`` serving ``instances``; emit the action."""
        rt = self.components[component]
        if rt.state is new and rt.instances == instances:
            return
        if rt.state is not new:
            check_transition(component, rt.state, new)
        if rt.state is _PRIMARY and not graceful:
            lost = rt.instances - (instances if new is _PRIMARY else frozenset())
            for inst in lost:
                self._interrupted(inst, component)
        self.update(component, state=new, instances=instances)
        self.emit(AssignRole(component, rt.state, new, tuple(sorted(instances)), graceful=graceful))
        if rt.state is not new:
            self.emit(Publish(StateChanged(component, str(rt.state), str(new), self.now)))
        group = self.topo.group_of.get(component)
        if group is not None:
            self.touched_groups.add(group)

    def strip(self, component: str, new: AvailabilityState, graceful: bool = False) -> None:
        """Remove every role of ``component``, leaving it spare or off-line."""
        self.set_role(component, new, frozenset(), graceful=graceful)

    def reassert(self, component: str) -> None:
        """Tell a component its unchanged role again (after it restarted in place)."""
        rt = self.components[component]
        self.emit(AssignRole(component, rt.state, rt.state, tuple(sorted(rt.instances))))

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def emit_notice(self, notification: Notification) -> None:
        self.actions.append(Publish(notification))

    def interrupt(self, component: str) -> None:
        """The component's primary work stopped (it is being recovered in place)."""
        rt = self.components[component]
        if rt.state is _PRIMARY:
            for inst in rt.instances:
                self._interrupted(inst, component)
        self.touch(component)

    def _interrupted(self, inst: str, component: str) -> None:
        """``component`` stopped serving ``inst``: an interruption unless others serve it."""
        group = self.topo.groups[self.topo.instances[inst].group]
        for m in group.members:
            rt = self.components[m]
            if (
                m != component
                and rt.state is _PRIMARY
                and inst in rt.instances
                and rt.health is Health.HEALTHY
            ):
                return
        self.interrupted.setdefault(inst, self.since)

    def touch(self, component: str) -> None:
        """Mark the component's group for service accounting at the end of the decision."""
        group = self.topo.group_of.get(component)
        if group is not None:
            self.touched_groups.add(group)

    def set_node(self, node: str, **changes: Any) -> None:
        self.nodes[node] = dataclasses.replace(self.nodes[node], **changes)

    def set_group(self, group: str, **changes: Any) -> None:
        self.groups[group] = dataclasses.replace(self.groups[group], **changes)

    # --- service accounting --------------------------------------------------------------

    def account_service(self, cause: str) -> None:
        """Publish outages and restorations of instances in the groups touched so far."""
        for group in sorted(self.touched_groups):
            for inst in self.topo.instances_of[group]:
                primaries = [
                    m
                    for m in self.topo.groups[group].members
                    if self.components[m].state is _PRIMARY
                    and inst in self.components[m].instances
                    and self.components[m].health is Health.HEALTHY
                ]
                since = min(self.interrupted.get(inst, self.now), self.now)
                if primaries and inst in self.served and inst in self.interrupted:
                    # Lost and taken over within this one decision: a short outage.
                    self.emit(Publish(ServiceOutage(inst, since, cause)))
                    self.emit(Publish(ServiceRestored(inst, self.now, tuple(primaries))))
                elif primaries and inst not in self.served:
                    self.served.add(inst)
                    if self.outages.pop(inst, None) is not None:
                        self.emit(Publish(ServiceRestored(inst, self.now, tuple(primaries))))
                elif not primaries and inst in self.served:
                    self.served.discard(inst)
                    self.outages[inst] = since
                    self.emit(Publish(ServiceOutage(inst, since, cause)))

    def finish(self, reason: str) -> Decision:
        self.account_service(reason)
        state = CrimState(
            components=MappingProxyType(self.components),
            nodes=MappingProxyType(self.nodes),
            groups=MappingProxyType(self.groups),
            outages=MappingProxyType(self.outages),
            served=frozenset(self.served),
            reboot=self.reboot,
        )
        return Decision(state, tuple(self.actions), reason)


__all__ = ["GroupRuntime", "NodeRuntime", "Work"]
