"""The recovery ladder: soft reset -> hot restart -> fail-over -> node reboot.

Counters live per component (soft resets, restarts within ``component_probation``) and per
service group (fail-overs within ``group_probation``), as in OpenSAF's restart probation.
A report asks for at least some level (a crash cannot be fixed by a soft reset); the ladder
never does less, and climbs when the milder rungs are used up or not supported.
"""

from __future__ import annotations

from haos.cluster.crim.actions import RebootNode, RecoverComponent, Repair, TakeOffline
from haos.cluster.crim.assign import reconcile
from haos.cluster.crim.state import Health, Recovery, prune, within
from haos.cluster.crim.work import Work
from haos.model.classes import Method
from haos.model.reports import RecoveryInitiated, RecoveryLevel
from haos.model.states import AvailabilityState

_L = RecoveryLevel


def choose_level(work: Work, component: str, minimum: RecoveryLevel) -> RecoveryLevel:
    """The mildest rung at or above ``minimum`` that is supported and not used up."""
    topo = work.topo
    policy = topo.recovery_policy(component)
    rt = prune(work.rt(component), policy, work.now)
    work.components[component] = rt
    can_soft = topo.supports(component, Method.SOFT_RESET) or topo.supports(component, Method.RESET)
    if topo.is_node_component(component):
        return _L.REBOOT_NODE if policy.reboot_node else _L.FAILOVER
    if minimum <= _L.SOFT_RESET and can_soft and len(rt.soft_resets) < policy.soft_reset_max:
        return _L.SOFT_RESET
    if (
        minimum <= _L.RESTART
        and topo.supports(component, Method.RESTART)
        and len(rt.restarts) < policy.restart_max
    ):
        return _L.RESTART
    group = topo.group_of.get(component)
    failovers = 0
    if group is not None:
        failovers = len(within(work.groups[group].failovers, work.now, policy.group_probation))
    reboot_possible = policy.reboot_node and topo.host_of.get(component) is not None
    if minimum <= _L.FAILOVER and (failovers < policy.failover_max or not reboot_possible):
        return _L.FAILOVER
    return _L.REBOOT_NODE if reboot_possible else _L.FAILOVER


def recover(work: Work, component: str, minimum: RecoveryLevel, why: str) -> str:
    """Start recovery of ``component``; return a sentence saying what was done."""
    level = choose_level(work, component, minimum)
    work.emit_notice(RecoveryInitiated(component, level, work.now, why))
    if level in (_L.SOFT_RESET, _L.RESTART):
        _in_place(work, component, level)
        return f"{level} of {component} ({why})"
    if level is _L.FAILOVER:
        failover(work, component)
        return f"fail-over of {component}, taken off-line ({why})"
    node = work.topo.host_of.get(component) or work.topo.node_of_component(component)
    assert node is not None  # choose_level only picks a reboot for hosted components
    reboot(work, node, why)
    return f"reboot of node {node} for {component} ({why})"


def _in_place(work: Work, component: str, level: RecoveryLevel) -> None:
    policy = work.topo.recovery_policy(component)
    rt = work.rt(component)
    counters = (
        {"soft_resets": (*rt.soft_resets, work.now)}
        if level is _L.SOFT_RESET
        else {"restarts": (*rt.restarts, work.now)}
    )
    work.update(
        component,
        health=Health.RECOVERING,
        recovery=Recovery(level, work.now, work.now + policy.recovery_timeout),
        **counters,
    )
    work.interrupt(component)
    lose_contents(work, component, exclude_self=True)
    work.emit(RecoverComponent(component, level))


def failover(work: Work, component: str) -> None:
    """Take ``component`` (and what it contains) off-line and move its work to others."""
    rt = work.rt(component)
    group = work.topo.group_of.get(component)
    if group is not None and rt.state in (AvailabilityState.PRIMARY, AvailabilityState.SECONDARY):
        work.set_group(group, failovers=(*work.groups[group].failovers, work.now))
    work.update(component, health=Health.FAILED, recovery=None)
    lose_contents(work, component, exclude_self=True)
    work.strip(component, AvailabilityState.OFFLINE)
    work.emit(TakeOffline(component, "failed"))
    if group is not None:
        reconcile(work, group)
    if work.topo.recovery_policy(component).auto_repair and rt.offline_by is None:
        work.emit(Repair(component))


def reboot(work: Work, node: str, why: str) -> None:
    """Reboot ``node``: everything it hosts is lost now and its work moves elsewhere."""
    lost = work.topo.hosted[node]
    for comp in lost:
        work.update(comp, health=Health.ABSENT, recovery=None, soft_resets=(), restarts=())
    for comp in lost:
        if work.rt(comp).state is not AvailabilityState.OFFLINE:
            work.strip(comp, AvailabilityState.OFFLINE)
        work.touch(comp)
    work.emit(RebootNode(node, why))
    regroup(work, lost)


def lose_contents(work: Work, container: str, exclude_self: bool) -> None:
    """Everything inside ``container`` stops with it: absent and off-line, work moved."""
    inside = [c for c in work.topo.tree.subtree(container) if not (exclude_self and c == container)]
    for comp in inside:
        work.update(comp, health=Health.ABSENT, recovery=None)
        if work.rt(comp).state is not AvailabilityState.OFFLINE:
            work.strip(comp, AvailabilityState.OFFLINE)
        work.touch(comp)
    regroup(work, inside)


def regroup(work: Work, components: tuple[str, ...] | list[str]) -> None:
    groups = {work.topo.group_of[c] for c in components if c in work.topo.group_of}
    for g in sorted(groups):
        reconcile(work, g)


__all__ = ["Repair", "choose_level", "failover", "reboot", "recover"]
