"""The CRIM's policy core: ``decide(topology, state, event, now) -> Decision``.

Pure: no I/O, no clock reads, no logging. Each handler works on a :class:`Work` copy of the
state and ends with a reason sentence that logs, ``STATUS=`` lines and tests all read.
An invalid or disallowed event gives a refused decision that changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision, Repair, TakeOffline
from haos.cluster.crim.assign import reconcile
from haos.cluster.crim.ladder import (
    hard_error,
    lose_contents,
    misconfigured,
    recover,
    regroup,
)
from haos.cluster.crim.state import ComponentRuntime, CrimState, Health, OfflineBy
from haos.cluster.crim.topology import Topology
from haos.cluster.crim.work import Work
from haos.model.names import ancestors_of
from haos.model.reports import ErrorKind, RecoveryLevel
from haos.model.states import AdminState, AvailabilityState

_P = AvailabilityState.PRIMARY
_S = AvailabilityState.SECONDARY
_SPARE = AvailabilityState.SPARE
_OFF = AvailabilityState.OFFLINE


class Refused(Exception):
    """Raised inside a handler to refuse the event; nothing of the work is kept."""


def decide(topo: Topology, state: CrimState, event: ev.Event, now: float) -> Decision:
    handler = _HANDLERS[type(event)]
    work = Work(topo, state, now)
    try:
        reason = handler(work, event)
    except Refused as e:
        return Decision(state, (), f"refused: {e}", refused=True)
    return work.finish(reason)


def next_deadline(state: CrimState, topo: Topology | None = None) -> float | None:
    """When a Tick is next needed: the earliest recovery deadline, and (given ``topo``) the
    earliest end of probation of a member of a group that fails back or spreads its work
    (a member off probation may then take work back)."""
    deadlines = [rt.recovery.deadline for rt in state.components.values() if rt.recovery]
    if topo is not None:
        deadlines += [
            end for c, end in _probation_ends(topo, state.components.items()) if c in topo.group_of
        ]
    return min(deadlines) if deadlines else None


def _probation_ends(
    topo: Topology, components: Iterable[tuple[str, ComponentRuntime]]
) -> list[tuple[str, float]]:
    """(component, end of its probation) of healthy members on probation in groups that
    fail back or spread their work."""
    out = []
    for c, rt in components:
        group = topo.group_of.get(c)
        if group is None or not rt.failures or rt.health is not Health.HEALTHY:
            continue
        if topo.groups[group].failback or topo.spreads(group):
            out.append((c, max(rt.failures) + topo.recovery_policy(c).component_probation))
    return out


# --- components ----------------------------------------------------------------------------


def _known(work: Work, component: str) -> None:
    if component not in work.components:
        raise Refused(f"unknown component {component!r}")


def _on_available(work: Work, e: ev.ComponentAvailable) -> str:
    c = e.component
    _known(work, c)
    node = work.topo.host_of.get(c)
    if node is not None and not work.nodes[node].member:
        raise Refused(f"{c} reported available but its node {node} is not a member")
    rt = work.rt(c)
    held = _held(work, c)
    if held is not None:
        if rt.offline_by is OfflineBy.SELF:
            # Its own off-line time is over: it stays stopped only for its container's sake,
            # and starts again with it (see ``_on_operator_online``).
            work.update(c, offline_by=None)
        work.emit(TakeOffline(c, held))
        return f"{c} started but is out of service ({held}); stopping it"
    if rt.health is Health.HEALTHY:
        return f"{c} already available"
    was_recovering = rt.health is Health.RECOVERING
    # Back from a recovery in place, a repair or its own off-line time, it lost what it
    # contains (``lose_contents``); a first start (with its node, or after an operator's
    # online) does not, as its node or the operator starts the contents too.
    came_back = rt.health in (Health.RECOVERING, Health.FAILED) or rt.offline_by is OfflineBy.SELF
    work.update(c, health=Health.HEALTHY, recovery=None, offline_by=None, why="")
    work.touch(c)
    if was_recovering and rt.state in (_P, _S):
        work.reassert(c)
    _place(work, c)
    if came_back:
        _restart_contents(work, c)
    if was_recovering:
        return f"{c} recovered and resumed as {work.rt(c).state}"
    return f"{c} available, now {work.rt(c).state}"


def _held(work: Work, component: str) -> str | None:
    """Why ``component`` must stay stopped (it, or a container of it, is held off-line)."""
    rt = work.rt(component)
    if rt.offline_by is OfflineBy.OPERATOR:
        return "off-line by operator"
    if rt.offline_by is OfflineBy.FAULT:
        return rt.why or "out of service after a fault"
    for container in ancestors_of(component):
        if container in work.components and work.rt(container).offline_by in (
            OfflineBy.OPERATOR,
            OfflineBy.FAULT,
        ):
            return f"{container} is off-line"
    return None


def _restart_contents(work: Work, container: str) -> None:
    """Start again what ``container`` holds and lost with it.

    Only what the CRIM holds absent, not held off-line itself or by a container, and not a
    node's own component. A start ordered now precedes any role order for that component
    (it gets one only once it reports available), so a start the node also made is harmless.
    """
    for inside in work.topo.tree.subtree(container):
        if inside == container or work.topo.is_node_component(inside):
            continue
        rt = work.rt(inside)
        node = work.topo.host_of.get(inside)
        if node is not None and not work.nodes[node].member:
            continue
        if rt.health is Health.ABSENT and rt.offline_by is None and _held(work, inside) is None:
            work.emit(Repair(inside))


def _place(work: Work, component: str) -> None:
    """Let the component's group (or, without a group, the component alone) settle."""
    group = work.topo.group_of.get(component)
    if group is not None:
        reconcile(work, group)
    else:
        rt = work.rt(component)
        ok = rt.health is Health.HEALTHY and rt.offline_by is None
        work.set_role(component, _SPARE if ok else _OFF)


def _on_error(work: Work, e: ev.ErrorReported) -> str:
    r = e.report
    _known(work, r.component)
    rt = work.rt(r.component)
    # A component back from its own off-line time that cannot start (a definitive error)
    # is held out of service like any other, else it would stay off-line unnoticed.
    returning = rt.offline_by is OfflineBy.SELF and r.kind.definitive
    if rt.offline_by is not None and not returning:
        return f"ignored report about {r.component}: already off-line ({rt.offline_by.value})"
    # A definitive error is a verdict even about a component being started (repaired, or
    # made ready on a node that came back): it is then held out of service with the reason.
    if rt.health in (Health.ABSENT, Health.FAILED) and not r.kind.definitive:
        return f"ignored report about {r.component}: already out of service ({rt.health})"
    if rt.recovery is not None and r.observed_at <= rt.recovery.started:
        return f"ignored stale report about {r.component}: its recovery is under way"
    work.since = min(r.observed_at, work.now)
    if r.kind is ErrorKind.MISCONFIGURED:
        return misconfigured(work, r)
    if r.kind is ErrorKind.HARD:
        return hard_error(work, r)
    minimum = r.minimum_level()
    if rt.recovery is not None:
        # The component failed again while recovering: the current rung did not work.
        minimum = max(minimum, RecoveryLevel(min(rt.recovery.level + 1, RecoveryLevel.REBOOT_NODE)))
    return recover(work, r.component, minimum, f"{r.kind} reported by {r.source or 'unknown'}")


def _on_tick(work: Work, e: ev.Tick) -> str:
    expired = sorted(
        (rt.recovery.deadline, c)
        for c, rt in work.components.items()
        if rt.recovery is not None and rt.recovery.deadline <= work.now
    )
    done = []
    for _, c in expired:
        rt = work.rt(c)
        if rt.recovery is None or rt.health is not Health.RECOVERING:
            continue  # a previous escalation in this tick already dealt with it
        nxt = RecoveryLevel(min(rt.recovery.level + 1, RecoveryLevel.REBOOT_NODE))
        done.append(recover(work, c, nxt, f"{rt.recovery.level} did not complete in time"))
    for c, end in _probation_ends(work.topo, list(work.components.items())):
        if end <= work.now:
            work.update(c, failures=())
            reconcile(work, work.topo.group_of[c])
            done.append(f"{c} is off probation")
    return "; ".join(done) if done else "nothing due"


def _go_offline(work: Work, c: str, by: OfflineBy) -> None:
    rt = work.rt(c)
    work.update(c, offline_by=by)
    healthy = rt.health is Health.HEALTHY
    if rt.state in (_P, _S):
        work.strip(c, _SPARE if healthy else _OFF, graceful=healthy)
        group = work.topo.group_of.get(c)
        if group is not None:
            reconcile(work, group)
    work.update(c, health=Health.ABSENT, recovery=None)
    lose_contents(work, c, exclude_self=True)
    work.set_role(c, _OFF)
    work.touch(c)
    work.emit(TakeOffline(c, f"off-line by {by.value}"))


def _on_offline_requested(work: Work, e: ev.OfflineRequested) -> str:
    _known(work, e.component)
    if work.rt(e.component).offline_by is not None:
        return f"{e.component} already off-line"
    _go_offline(work, e.component, OfflineBy.SELF)
    return f"{e.component} taken off-line at its own request ({e.reason or 'no reason given'})"


def _on_operator_offline(work: Work, e: ev.OperatorOffline) -> str:
    _known(work, e.component)
    if work.rt(e.component).offline_by is OfflineBy.OPERATOR:
        return f"{e.component} already off-line"
    _go_offline(work, e.component, OfflineBy.OPERATOR)
    return f"{e.component} taken off-line by operator"


def _on_operator_online(work: Work, e: ev.OperatorOnline) -> str:
    """Bring an off-line component back; for one held after a fault, clear the fault too.

    Clearing forgets the component's failure history (its probation and ladder counters),
    as the operator says the cause is fixed. What the component contains (for a node's own
    component: what the node hosts) is started again too, unless itself off-line.
    """
    c = e.component
    _known(work, c)
    rt = work.rt(c)
    if rt.offline_by is None:
        raise Refused(f"{c} is not off-line")
    work.update(c, offline_by=None)
    work.emit(Repair(c))
    for inside in work.topo.tree.subtree(c):
        inner = work.rt(inside)
        if inside != c and inner.offline_by is None and inner.health is Health.ABSENT:
            work.emit(Repair(inside))
    if rt.offline_by is not OfflineBy.FAULT:
        return f"{c} brought on-line; starting it"
    work.update(c, why="", failures=(), soft_resets=(), restarts=())
    return f"{c} brought on-line, its fault ({rt.why or 'unknown'}) cleared; starting it"


# --- nodes ---------------------------------------------------------------------------------


def _on_node_joined(work: Work, e: ev.NodeJoined) -> str:
    if e.node not in work.nodes:
        raise Refused(f"unknown node {e.node!r}")
    if work.nodes[e.node].member:
        return f"node {e.node} already a member"
    work.set_node(e.node, member=True)
    if work.reboot is not None and work.reboot.node == e.node:
        work.reboot = None  # the reboot is over: another may be ordered
    comp = work.topo.node_component(e.node)
    if work.rt(comp).offline_by is None:
        work.update(comp, health=Health.HEALTHY, recovery=None)
    _place(work, comp)
    return f"node {e.node} joined"


def _on_node_left(work: Work, e: ev.NodeLeft) -> str:
    if e.node not in work.nodes:
        raise Refused(f"unknown node {e.node!r}")
    if not work.nodes[e.node].member:
        return f"node {e.node} already gone"
    work.set_node(e.node, member=False)
    if e.at is not None:
        work.since = min(e.at, work.now)
    lost = work.topo.hosted[e.node]
    for c in lost:
        work.update(c, health=Health.ABSENT, recovery=None)
        if work.rt(c).state is not _OFF:
            work.strip(c, _OFF)
        work.touch(c)
    regroup(work, lost)
    return f"node {e.node} left; {len(lost)} components lost, their work moved"


# --- administration ------------------------------------------------------------------------


def _target(work: Work, name: str) -> tuple[str, str]:
    t = work.topo.resolve_target(name)
    if t is None:
        raise Refused(f"unknown target {name!r} (not a node, group, instance or component)")
    return t


def _set_admin(work: Work, name: str, admin: AdminState) -> str:
    kind, target = _target(work, name)
    if kind == "instance":
        raise Refused(f"{name} is a service instance; lock its group or components instead")
    if kind == "node":
        work.set_node(target, admin=admin)
        affected = list(work.topo.hosted[target])
    elif kind == "group":
        work.set_group(target, admin=admin)
        affected = list(work.topo.groups[target].members)
    else:
        affected = list(work.topo.tree.subtree(target))
        for c in affected:
            work.update(c, admin=admin)
    for c in affected:
        work.touch(c)
    regroup(work, affected)
    for c in affected:
        if c not in work.topo.group_of:
            _place(work, c)
    return f"{kind} {target} {admin}"


def _on_lock(work: Work, e: ev.OperatorLock) -> str:
    return _set_admin(work, e.target, AdminState.LOCKED)


def _on_unlock(work: Work, e: ev.OperatorUnlock) -> str:
    return _set_admin(work, e.target, AdminState.UNLOCKED)


def _on_switchover(work: Work, e: ev.OperatorSwitchover) -> str:
    kind, target = _target(work, e.target)
    if kind == "instance":
        primaries = [
            m
            for m in work.topo.groups[work.topo.instances[target].group].members
            if work.rt(m).state is _P and target in work.rt(m).instances
        ]
        if not primaries:
            raise Refused(f"instance {target} has no primary to switch over")
        old = primaries[0]
    elif kind == "component":
        old = target
        if work.rt(old).state is not _P:
            raise Refused(f"{old} is {work.rt(old).state}, not primary")
    else:
        raise Refused(f"switchover needs a service instance or a primary component, not a {kind}")
    group = work.topo.group_of[old]
    moved = sorted(work.rt(old).instances)
    work.strip(old, _SPARE, graceful=True)
    reconcile(work, group, avoid=frozenset({old}), failback=False)
    served = all(
        any(
            inst in work.rt(m).instances and work.rt(m).state is _P
            for m in work.topo.groups[group].members
        )
        for inst in moved
    )
    if not served:
        raise Refused(f"no healthy standby can take over from {old}")
    # What the operator named stays moved; other instances the old primary gave up may come
    # back to it when the taker would otherwise be over its capacity.
    asked = frozenset({target}) if kind == "instance" else frozenset(moved)
    reconcile(work, group, failback=False, pinned=asked)
    still = work.rt(old).instances if work.rt(old).state is _P else frozenset()
    gone = [i for i in moved if i not in still]
    new = sorted(
        {
            m
            for m in work.topo.groups[group].members
            if work.rt(m).state is _P and set(gone) & work.rt(m).instances
        }
    )
    return f"switchover of {', '.join(gone)} from {old} to {', '.join(new)}"


_HANDLERS: dict[type, Callable[[Work, Any], str]] = {
    ev.ComponentAvailable: _on_available,
    ev.ErrorReported: _on_error,
    ev.OfflineRequested: _on_offline_requested,
    ev.NodeJoined: _on_node_joined,
    ev.NodeLeft: _on_node_left,
    ev.OperatorLock: _on_lock,
    ev.OperatorUnlock: _on_unlock,
    ev.OperatorOffline: _on_operator_offline,
    ev.OperatorOnline: _on_operator_online,
    ev.OperatorSwitchover: _on_switchover,
    ev.Tick: _on_tick,
}
