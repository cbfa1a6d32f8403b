"""The recovery ladder: soft reset -> hot restart -> fail-over -> node reboot.

Counters live per component (soft resets, restarts within ``component_probation``) and per
service group (fail-overs within ``group_probation``), as in OpenSAF's restart probation.
A report asks for at least some level (a crash cannot be fixed by a soft reset); the ladder
never does less, and climbs when the milder rungs are used up or not supported.

A node is rebooted only when the node itself is implicated, never for a fault that follows
one component from node to node:

* a report about the node's own component (the CEC blames the node when several of its
  components fail within ``container_window``) reboots it, if the policy allows reboots;
* for any other component, the last rung is a reboot of its node only when every fail-over
  its group counted within ``group_probation`` was of a member on that same node (the fault
  stays on the node); a reboot the group caused counts as a fail-over on the node rebooted.
  Fail-overs spread over several nodes mean the fault travels with the component: the
  ladder ends in a fail-over, and a member failing again while on probation is then taken
  out of service (see :func:`failover`) instead of rebooting anything.

A reboot is ordered only when it is safe for the cluster (:func:`reboot_blocker`): no other
ordered reboot is still under way (the node has not rejoined), and the members left during
the reboot still hold quorum. A reboot that may not be ordered takes the component (for the
node's own component: everything the node hosts) out of service with that reason instead.
"""

from __future__ import annotations

from haos.cluster.crim.actions import RebootNode, RecoverComponent, Repair, TakeOffline
from haos.cluster.crim.assign import reconcile
from haos.cluster.crim.state import (
    Failover,
    Health,
    OfflineBy,
    Reboot,
    Recovery,
    on_probation,
    prune,
    within,
)
from haos.cluster.crim.work import Work
from haos.config.model import ManagerSpec
from haos.model.classes import Method
from haos.model.reports import (
    ComponentMisconfigured,
    ComponentOutOfService,
    ErrorReport,
    RecoveryInitiated,
    RecoveryLevel,
)
from haos.model.states import AvailabilityState

_L = RecoveryLevel

# A reboot still not over (its node not back as a member) this long after it was ordered is
# taken as lost (say, the order never reached the node): it no longer blocks another. The
# quorum rule still counts the node by its actual membership.
REBOOT_GIVEN_UP_AFTER = 600.0


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
    node = topo.host_of.get(component)
    recent: list[Failover] = []
    if group is not None:
        window = policy.group_probation
        recent = [f for f in work.groups[group].failovers if work.now - f.at < window]
    # The node is implicated only when the group's failures stayed on it.
    reboot_possible = (
        policy.reboot_node and node is not None and all(f.node == node for f in recent)
    )
    if minimum <= _L.FAILOVER and (len(recent) < policy.failover_max or not reboot_possible):
        return _L.FAILOVER
    return _L.REBOOT_NODE if reboot_possible else _L.FAILOVER


def recover(work: Work, component: str, minimum: RecoveryLevel, why: str) -> str:
    """Start recovery of ``component``; return a sentence saying what was done."""
    level = choose_level(work, component, minimum)
    node = None
    hold = None
    if level is _L.REBOOT_NODE:
        node = work.topo.host_of.get(component) or work.topo.node_of_component(component)
        assert node is not None  # choose_level only picks a reboot for hosted components
        blocked = reboot_blocker(work, node)
        if blocked is not None:
            level, hold = _L.FAILOVER, f"reboot of {node} not ordered: {blocked} ({why})"
    work.emit_notice(RecoveryInitiated(component, level, work.now, why))
    if level in (_L.SOFT_RESET, _L.RESTART):
        _in_place(work, component, level)
        return f"{level} of {component} ({why})"
    if level is _L.FAILOVER:
        if node is not None and hold is not None and work.topo.is_node_component(component):
            hold_node(work, node, hold)
            return f"everything on node {node} taken out of service: {hold}"
        held = failover(work, component, why, hold=hold)
        if held is not None:
            return f"fail-over of {component}, taken out of service: {held}"
        return f"fail-over of {component}, taken off-line ({why})"
    assert node is not None
    group = work.topo.group_of.get(component)
    if group is not None:
        # The reboot moves the group's work as a fail-over does, and counts as one on that
        # node: the group's faults showing up on another node within ``group_probation``
        # then follow the component, and reboot no second node.
        failovers = (*work.groups[group].failovers, Failover(work.now, node))
        work.set_group(group, failovers=failovers)
    reboot(work, node, why)
    return f"reboot of node {node} for {component} ({why})"


def reboot_blocker(work: Work, node: str) -> str | None:
    """Why ``node`` may not be rebooted now, or None when it may.

    One reboot at a time: a node rebooted earlier that has not rejoined blocks another (for
    at most ``REBOOT_GIVEN_UP_AFTER`` seconds). And quorum: the members left while ``node``
    reboots must be a strict majority of the configured nodes; a two-node cluster may reboot
    one of two members (corosync's ``two_node`` keeps the survivor quorate), but never its
    last member.
    """
    pending = work.reboot
    if pending is not None and work.now - pending.at < REBOOT_GIVEN_UP_AFTER:
        return f"the reboot of {pending.node} ordered at {pending.at:.3f} s is not over yet"
    total = len(work.topo.nodes)
    left = sum(1 for n, rt in work.nodes.items() if rt.member and n != node)
    if left == 0:
        return f"{node} is the last member of the cluster"
    if 2 * left > total or (total == 2 and left == 1):
        return None
    return f"it would cost the cluster its quorum ({left} of {total} nodes would be left)"


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


def failover(work: Work, component: str, why: str, hold: str | None = None) -> str | None:
    """Take ``component`` (and what it contains) off-line and move its work to others.

    The failed unit is repaired (started again to come back as a spare) unless ``hold``
    says why it must stay out of service, or it failed over before within
    ``component_probation`` (a fault that came back after a repair would only bounce
    between the members). A held unit stays off-line until an operator brings it on-line.
    Returns the reason it is held, or None when it is repaired (or left off-line as is).
    """
    rt = work.rt(component)
    policy = work.topo.recovery_policy(component)
    group = work.topo.group_of.get(component)
    if group is not None and rt.state in (AvailabilityState.PRIMARY, AvailabilityState.SECONDARY):
        node = work.topo.host_of.get(component) or ""
        work.set_group(group, failovers=(*work.groups[group].failovers, Failover(work.now, node)))
    if hold is None and on_probation(rt, policy, work.now):
        last = max(rt.failures)
        hold = (
            f"failed again {work.now - last:.3f} s after its fail-over at {last:.3f} s, within "
            f"its {policy.component_probation:g} s probation ({why})"
        )
    failures = (*within(rt.failures, work.now, policy.component_probation), work.now)
    work.update(component, failures=failures)
    if hold is not None:
        take_out(work, component, hold)
        return hold
    work.update(component, health=Health.FAILED, recovery=None, why=why)
    _remove(work, component, "failed")
    if policy.auto_repair and rt.offline_by is None:
        work.emit(Repair(component))
    return None


def take_out(work: Work, component: str, why: str) -> None:
    """Hold ``component`` out of service (stopped, not repaired) until an operator's online."""
    work.update(component, health=Health.FAILED, recovery=None, offline_by=OfflineBy.FAULT, why=why)
    _remove(work, component, why)
    work.emit_notice(ComponentOutOfService(component, work.now, why))


def _remove(work: Work, component: str, why: str) -> None:
    lose_contents(work, component, exclude_self=True)
    work.strip(component, AvailabilityState.OFFLINE)
    work.emit(TakeOffline(component, why))
    group = work.topo.group_of.get(component)
    if group is not None:
        reconcile(work, group)


def hold_node(work: Work, node: str, why: str) -> None:
    """Take everything ``node`` hosts out of service without rebooting it."""
    comp = work.topo.node_component(node)
    work.update(comp, health=Health.FAILED, recovery=None, offline_by=OfflineBy.FAULT, why=why)
    lose_contents(work, comp, exclude_self=True, stop=why)
    work.strip(comp, AvailabilityState.OFFLINE)
    work.emit_notice(ComponentOutOfService(comp, work.now, why))


def reboot(work: Work, node: str, why: str) -> None:
    """Reboot ``node``: everything it hosts is lost now and its work moves elsewhere."""
    lost = work.topo.hosted[node]
    for comp in lost:
        work.update(comp, health=Health.ABSENT, recovery=None, soft_resets=(), restarts=())
    for comp in lost:
        if work.rt(comp).state is not AvailabilityState.OFFLINE:
            work.strip(comp, AvailabilityState.OFFLINE)
        work.touch(comp)
    work.reboot = Reboot(node, work.now, why)
    work.emit(RebootNode(node, why))
    regroup(work, lost)


def lose_contents(work: Work, container: str, exclude_self: bool, stop: str = "") -> None:
    """Everything inside ``container`` stops with it: absent and off-line, work moved.

    Each component that was running is also told to stop (for the reason ``stop``, or that
    its container stopped), so that none keeps running unaccounted for: the CRIM holds it
    absent, and only a start it orders (when the container is back, see
    ``policy._restart_contents``) or one of its node brings it back. A node's own component
    is left alone: it follows its node's membership.
    """
    inside = [c for c in work.topo.tree.subtree(container) if not (exclude_self and c == container)]
    for comp in inside:
        running = work.rt(comp).health in (Health.HEALTHY, Health.RECOVERING)
        work.update(comp, health=Health.ABSENT, recovery=None)
        if work.rt(comp).state is not AvailabilityState.OFFLINE:
            work.strip(comp, AvailabilityState.OFFLINE)
        if running and not work.topo.is_node_component(comp):
            work.emit(TakeOffline(comp, stop or f"{container} stopped"))
        work.touch(comp)
    regroup(work, inside)


def regroup(work: Work, components: tuple[str, ...] | list[str]) -> None:
    groups = {work.topo.group_of[c] for c in components if c in work.topo.group_of}
    for g in sorted(groups):
        reconcile(work, g)


def hard_error(work: Work, report: ErrorReport) -> str:
    """A hard error: it would fail again on this node, so no retry here and no repair."""
    c = report.component
    why = f"hard error reported by {report.source or 'unknown'}: {report.detail or report.kind}"
    work.emit_notice(RecoveryInitiated(c, _L.FAILOVER, work.now, why))
    failover(work, c, why, hold=why)
    return f"fail-over of {c}, taken out of service until an operator brings it on-line ({why})"


def misconfigured(work: Work, report: ErrorReport) -> str:
    """A configuration error: stop every member run the same way, and raise the alarm."""
    c = report.component
    topo = work.topo
    group = topo.group_of.get(c)
    spec = topo.config.manager(c)
    same = [c] + [
        m
        for m in (topo.groups[group].members if group is not None else ())
        if m != c and _runs_like(spec, topo.config.manager(m))
    ]
    detail = report.detail or f"reported by {report.source or 'unknown'}"
    why = f"misconfigured ({detail}); stopped on every node until an operator brings it on-line"
    stopped = [c] + [m for m in same[1:] if work.rt(m).offline_by is not OfflineBy.FAULT]
    for m in stopped[1:]:
        # out of the running first, so that no work moves onto a member about to stop
        work.update(m, health=Health.FAILED, recovery=None, offline_by=OfflineBy.FAULT)
    work.emit_notice(RecoveryInitiated(c, _L.FAILOVER, work.now, why))
    failover(work, c, why, hold=why)
    for m in stopped[1:]:
        take_out(work, m, why)
    work.emit_notice(ComponentMisconfigured(c, work.now, detail, tuple(stopped)))
    return f"{c} is misconfigured: stopped {', '.join(stopped)} ({detail})"


def _runs_like(a: ManagerSpec | None, b: ManagerSpec | None) -> bool:
    """Whether two members are run by the same program (same agent, unit or command)."""
    if a is None or b is None:
        return a is b
    return (a.kind, a.agent, a.unit, a.command) == (b.kind, b.agent, b.unit, b.command)


__all__ = [
    "Repair",
    "choose_level",
    "failover",
    "hard_error",
    "misconfigured",
    "reboot",
    "recover",
    "take_out",
]
