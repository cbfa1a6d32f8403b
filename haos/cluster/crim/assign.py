"""Assignment of components to service instances under each redundancy model.

``reconcile`` brings one service group to its wanted shape with as few changes as
possible: roles are first removed from components that may no longer hold them, then each
instance lacking a primary gets one (its own secondary first, since that one holds the
checkpointed state), then each instance lacking a standby gets one. A primary role never
turns directly into a secondary one (FIG 5), and an exclusive instance (2N, N+M,
hot-restart, no-redundancy) never gets a second primary.

Serving comes first: an instance is never left without a primary while any healthy spare
(or, failing that, a secondary of another instance) could serve it. A member on probation
(it failed over recently, see :func:`~haos.cluster.crim.state.on_probation`) is the last
choice: it takes a role only when no member off probation can, so a fault that follows the
component is not handed straight back to the member that just had it.

Capacity (N+M and the other models with one primary per instance): a component serves at
most ``ceil(instances / active)`` instances as primary and backs at most
``ceil(instances / standby)`` as secondary. While members are missing a component may carry
more, since serving comes first; once an idle member is there again the excess is *spread*
onto it (:func:`_spread`), whatever order the members became available in. A served instance
moves only then, gracefully, and only onto a healthy member off probation: an instance is
never moved merely to even out loads that are within capacity, and an overloaded primary is
relieved by a spare, never by taking a secondary off its standby duty.
"""

from __future__ import annotations

from collections.abc import Iterable

from haos.cluster.crim.state import Health
from haos.cluster.crim.work import Work
from haos.model.redundancy import RedundancyModel
from haos.model.states import AvailabilityState

_P = AvailabilityState.PRIMARY
_S = AvailabilityState.SECONDARY
_SPARE = AvailabilityState.SPARE
_OFF = AvailabilityState.OFFLINE


def release_ineligible(work: Work, group: str) -> None:
    """Strip roles from members that may no longer hold them."""
    for m in work.topo.groups[group].members:
        rt = work.rt(m)
        if rt.state in (_P, _S) and not work.may_hold(m):
            healthy = rt.health is Health.HEALTHY
            work.strip(m, _SPARE if healthy else _OFF, graceful=healthy)


def reconcile(
    work: Work,
    group: str,
    avoid: frozenset[str] = frozenset(),
    failback: bool = True,
    pinned: frozenset[str] = frozenset(),
) -> None:
    """Assign roles in ``group``; members in ``avoid`` are not made primary.

    Without ``avoid``, served work may also move, gracefully: with the group's ``failback``
    set (and ``failback`` here) one instance per call moves back to a better-ranked healthy
    member, and roles beyond a member's capacity are spread onto idle members; the group is
    then settled again. A switchover passes ``failback=False`` and the instances it moved as
    ``pinned``, so that the operator's move is not undone at once: a spread moves other
    instances only.
    """
    _settle(work, group, avoid)
    if avoid:
        return
    if failback and work.topo.groups[group].failback and _fail_back(work, group):
        _settle(work, group, avoid)
    if _spread(work, group, pinned):
        _settle(work, group, avoid)


def _settle(work: Work, group: str, avoid: frozenset[str]) -> None:
    release_ineligible(work, group)
    spec = work.topo.groups[group]
    for inst in work.topo.instances_of[group]:
        nway = spec.model is RedundancyModel.N_WAY_ACTIVE
        want = work.topo.instances[inst].actives if nway else 1
        _fill_primaries(work, group, inst, want, avoid)
    if spec.model.has_standby:
        for inst in work.topo.instances_of[group]:
            _fill_secondary(work, group, inst)
    _settle_spares(work, group)


def _members(work: Work, group: str, state: AvailabilityState) -> list[str]:
    return [m for m in work.topo.groups[group].members if work.rt(m).state is state]


def _load(work: Work, component: str) -> int:
    return len(work.rt(component).instances)


def _fill_primaries(work: Work, group: str, inst: str, want: int, avoid: frozenset[str]) -> None:
    for _ in range(want):
        have = [m for m in _members(work, group, _P) if inst in work.rt(m).instances]
        if len(have) >= want:
            return
        pick = _pick_primary(work, group, inst, avoid, exclude=set(have))
        if pick is None:
            return
        rt = work.rt(pick)
        if rt.state is _P:
            work.set_role(pick, _P, rt.instances | {inst})
        else:
            # A promoted secondary gives up its other standby duties (one state per component).
            work.set_role(pick, _P, frozenset({inst}))


def _pick_primary(
    work: Work, group: str, inst: str, avoid: frozenset[str], exclude: set[str]
) -> str | None:
    for trusted in (True, False):
        pick = _pick_primary_among(work, group, inst, avoid, exclude, trusted)
        if pick is not None:
            return pick
    return None


def _pick_primary_among(
    work: Work, group: str, inst: str, avoid: frozenset[str], exclude: set[str], trusted: bool
) -> str | None:
    """The best primary for ``inst``; with ``trusted``, among members off probation only."""
    spec = work.topo.groups[group]
    cap = work.topo.shapes[group].primary_capacity

    def ok(m: str) -> bool:
        if m in avoid or m in exclude or not work.eligible(m):
            return False
        return not (trusted and work.on_probation(m))

    primaries = [m for m in _members(work, group, _P) if ok(m)]
    spares = [m for m in _members(work, group, _SPARE) + _members(work, group, _OFF) if ok(m)]
    secondaries = [m for m in _members(work, group, _S) if ok(m)]
    own_standby = [m for m in secondaries if inst in work.rt(m).instances]
    with_room = sorted(
        (m for m in primaries if _load(work, m) < cap),
        key=lambda m: (_load(work, m), work.topo.member_rank[m]),
    )
    n_primary = len(_members(work, group, _P))
    for tier in (
        own_standby,
        with_room,
        spares if n_primary < spec.active else [],
        spares,  # degraded: more primaries than N, but the instance is served
        _least_loaded(work, secondaries),
        _least_loaded(work, primaries),  # overloaded, but served
    ):
        if tier:
            return tier[0]
    return None


def _least_loaded(work: Work, members: Iterable[str]) -> list[str]:
    return sorted(members, key=lambda m: (_load(work, m), work.topo.member_rank[m]))


def _fill_secondary(work: Work, group: str, inst: str) -> None:
    if any(inst in work.rt(m).instances for m in _members(work, group, _S)):
        return
    for trusted in (True, False):
        if _fill_secondary_among(work, group, inst, trusted):
            return


def _fill_secondary_among(work: Work, group: str, inst: str, trusted: bool) -> bool:
    spec = work.topo.groups[group]
    cap = work.topo.shapes[group].standby_capacity

    def ok(m: str) -> bool:
        return work.eligible(m) and not (trusted and work.on_probation(m))

    secondaries = [m for m in _members(work, group, _S) if ok(m)]
    spares = [m for m in _members(work, group, _SPARE) + _members(work, group, _OFF) if ok(m)]
    with_room = _least_loaded(work, (m for m in secondaries if _load(work, m) < cap))
    n_secondary = len(_members(work, group, _S))
    for tier in (
        with_room,
        spares if n_secondary < spec.standby else [],
        spares,
        _least_loaded(work, secondaries),
    ):
        if tier:
            pick = tier[0]
            work.set_role(pick, _S, work.rt(pick).instances | {inst})
            return True
    return False


def _settle_spares(work: Work, group: str) -> None:
    """Healthy members without a role are spare; the rest are off-line."""
    for m in work.topo.groups[group].members:
        rt = work.rt(m)
        if rt.state in (_P, _S):
            continue
        healthy = rt.health is Health.HEALTHY and rt.offline_by is None
        node = work.topo.host_of.get(m)
        if node is not None and not work.nodes[node].member:
            healthy = False
        work.set_role(m, _SPARE if healthy else _OFF)


def _fail_back(work: Work, group: str) -> bool:
    """Move one instance to a better-ranked idle member; True if something moved."""
    spec = work.topo.groups[group]
    if not spec.model.exclusive_primary:
        return False
    rank = work.topo.member_rank
    for inst in work.topo.instances_of[group]:
        holders = [m for m in _members(work, group, _P) if inst in work.rt(m).instances]
        if len(holders) != 1:
            continue
        current = holders[0]
        better = [
            m
            for m in spec.members
            if rank[m] < rank[current]
            and work.rt(m).state in (_S, _SPARE)
            and work.eligible(m)
            and not work.on_probation(m)
        ]
        if not better:
            continue
        moved = work.rt(current).instances
        work.strip(current, _SPARE, graceful=True)
        work.set_role(better[0], _P, moved)
        return True
    return False


def _spread(work: Work, group: str, pinned: frozenset[str] = frozenset()) -> bool:
    """Move roles beyond a member's capacity onto idle members; True if something moved.

    Each move takes one instance from a member over capacity to one that stays within it,
    so the total excess falls with every move and the loop ends.
    """
    if not work.topo.spreads(group):
        return False
    moved = False
    while _spread_one(work, group, _P, pinned) or _spread_one(work, group, _S, pinned):
        moved = True
    return moved


def _spread_one(work: Work, group: str, role: AvailabilityState, pinned: frozenset[str]) -> bool:
    spec, shape = work.topo.groups[group], work.topo.shapes[group]
    cap = shape.primary_capacity if role is _P else shape.standby_capacity
    wanted = spec.active if role is _P else spec.standby
    holders = _members(work, group, role)
    over = [m for m in holders if _load(work, m) > cap and work.rt(m).health is Health.HEALTHY]
    if not over:
        return False
    # An idle spare while the model wants more members in this role, else one with room.
    spares = [
        m for m in _members(work, group, _SPARE) if work.eligible(m) and not work.on_probation(m)
    ]
    with_room = [m for m in holders if _load(work, m) < cap and work.eligible(m)]
    targets = _least_loaded(work, with_room) if len(holders) >= wanted else spares + with_room
    if not targets:
        return False
    for source in sorted(over, key=lambda m: (-_load(work, m), work.topo.member_rank[m])):
        # The last-ranked instance moves: the better-ranked ones stay where they are served.
        movable = [
            i
            for i in work.topo.instances_of[group]
            if i in work.rt(source).instances and (role is _S or i not in pinned)
        ]
        if movable:
            inst, target = movable[-1], targets[0]
            work.set_role(source, role, work.rt(source).instances - {inst}, graceful=role is _P)
            work.set_role(target, role, work.rt(target).instances | {inst})
            return True
    return False
