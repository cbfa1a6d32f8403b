"""State transfer for a state replicated over an agreed-order group: pure bookkeeping.

Every member applies the same operations in the same order, so every member that holds the
state ("in sync") holds the same state at the same point of the order. A member that joins
holds nothing; it gets a *snapshot* from one member that does, and must know exactly which
point of the order that snapshot was taken at, so it can apply what came after.

The protocol, driven by membership changes ("marks") and offers:

* On a membership change, the lowest in-sync member takes a snapshot *right there* (after
  applying the change) and multicasts an :class:`Offer` with it. The offer names each member
  still out of sync with the number of marks it has seen since it joined, which is how the
  joiner finds the snapshot's point in its own history (both saw the same marks since).
* Until it is in sync, a member logs every operation and mark instead of applying them. On the
  first offer that names it, it installs the snapshot and replays the log after that mark.
* A member whose first membership has only itself founds the state (it is empty). So does an
  out-of-sync member that finds no in-sync member left: it keeps what it has and replays.
* Partition heal: each side sees the other join and each side's lowest member offers. A member
  that was in sync before the offer's sender joined its membership, and is named by that
  offer, was on the other side: it *merges* the snapshot (the service defines merge; this is
  best effort — an unbind on one side can be undone by the other side's copy). Any other offer
  naming a member already in sync is a late duplicate (sent before the sender learned of an
  earlier one) and is ignored.

This class holds only the bookkeeping; the service holds the state, takes snapshots and applies
operations. It is pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

E = TypeVar("E")


@dataclass(frozen=True)
class Offer:
    """Sent with a snapshot: who should install it and where it sits in their history."""

    targets: tuple[tuple[int, int], ...]  # (member, marks it had seen since joining, at capture)
    synced: tuple[int, ...]  # members in sync at capture, the sender included


class Outcome(enum.Enum):
    NONE = "none"
    INSTALL = "install"  # replace the state with the snapshot, then apply ``replay``
    MERGE = "merge"  # merge the snapshot into the state (the other side of a healed partition)
    FOUND = "found"  # nobody holds the state: keep this member's own, then apply ``replay``
    REJECT = "reject"  # an offer that cannot be placed in this member's history


@dataclass(frozen=True)
class Step(Generic[E]):
    """What the service must do after telling the tracker something."""

    outcome: Outcome = Outcome.NONE
    replay: tuple[E, ...] = ()
    offer: Offer | None = None  # take a snapshot now and multicast it with this offer
    reason: str = ""


@dataclass(frozen=True)
class _Mark:
    pass


_MARK = _Mark()


@dataclass
class SyncTracker(Generic[E]):
    """The state-transfer bookkeeping of one member (see the module docstring)."""

    me: int
    in_sync: bool = False
    members: frozenset[int] = frozenset()
    _synced: set[int] = field(default_factory=set)
    _joined_at: dict[int, int] = field(default_factory=dict)  # out-of-sync member -> mark
    # Positions in half-marks: 2m is "at mark m", 2m+1 is "after mark m, before the next".
    _since: dict[int, int] = field(default_factory=dict)  # member -> when it joined us
    _synced_at: int = -1
    _marks: int = -1
    _seen_first: bool = False
    _log: list[E | _Mark] = field(default_factory=list)

    @property
    def synced(self) -> frozenset[int]:
        """The members this member knows to be in sync."""
        return frozenset(self._synced)

    def deliver(self, event: E) -> bool:
        """True: apply ``event`` now. False: it was logged to replay after the snapshot."""
        if self.in_sync:
            return True
        self._log.append(event)
        return False

    def membership(
        self, members: Iterable[int], joined: Iterable[int] = (), left: Iterable[int] = ()
    ) -> Step[E]:
        """A membership change, after the service applied its effect (if in sync) or logged it."""
        del left  # implied by ``members``; kept for symmetry with View
        self._marks += 1
        mark = self._marks
        self.members = frozenset(members)
        joined_set = set(joined) - {self.me}
        self._since = {n: self._since.get(n, 2 * mark) for n in self.members}
        for n in joined_set:
            self._since[n] = 2 * mark
        if not self._seen_first:
            self._seen_first = True
            if self.members == {self.me}:
                self._synced = set()
                return self._found("alone in the first membership: founding")
            # Members that were there before us are assumed in sync until an offer says better.
            self._synced = set(self.members) - joined_set - {self.me}
        self._synced &= self.members
        self._joined_at = {n: m for n, m in self._joined_at.items() if n in self.members}
        for n in joined_set:
            self._synced.discard(n)
            self._joined_at[n] = mark
        if not self.in_sync:
            self._log.append(_MARK)
            if not self._synced:
                return self._found("no member in sync is left: founding")
            return Step()
        return Step(offer=self._offer(mark))

    def on_offer(self, sender: int, offer: Offer) -> Step[E]:
        """An offer was delivered (this member's own included)."""
        targets = dict(offer.targets)
        listed = set(targets) | set(offer.synced) | {sender}
        if self.in_sync:
            merge = (
                self.me in targets
                and sender != self.me
                and self._since.get(sender, -1) >= self._synced_at
            )
            self._mark_synced(listed if merge else set(targets))
            if merge:
                return Step(Outcome.MERGE, reason=f"node {sender} offered from another side")
            return Step()
        if self.me not in targets:
            self._mark_synced(listed)
            return Step()
        replay = self._after_mark(targets[self.me])
        if replay is None:
            return Step(Outcome.REJECT, reason=f"offer from {sender} is after {self._marks} marks")
        self.in_sync = True
        self._synced_at = 2 * self._marks + 1
        self._log.clear()
        self._synced.add(self.me)
        self._mark_synced(listed)
        return Step(Outcome.INSTALL, replay, reason=f"installed the snapshot of node {sender}")

    # -- internals ---------------------------------------------------------------------------

    def _offer(self, mark: int) -> Offer | None:
        unsynced = self.members - self._synced
        if not unsynced or self.me != min(self._synced & self.members):
            return None
        targets = tuple(sorted((n, mark - self._joined_at.get(n, mark)) for n in unsynced))
        return Offer(targets, tuple(sorted(self._synced)))

    def _found(self, reason: str) -> Step[E]:
        replay = tuple(e for e in self._log if not isinstance(e, _Mark))
        self._log.clear()
        self.in_sync = True
        self._synced_at = 2 * self._marks
        self._synced.add(self.me)
        return Step(Outcome.FOUND, replay, offer=self._offer(self._marks), reason=reason)

    def _mark_synced(self, nodes: set[int]) -> None:
        for n in nodes & self.members:
            self._synced.add(n)
            self._joined_at.pop(n, None)

    def _after_mark(self, index: int) -> tuple[E, ...] | None:
        seen = -1
        for i, entry in enumerate(self._log):
            if isinstance(entry, _Mark):
                seen += 1
                if seen == index:
                    rest = self._log[i + 1 :]
                    return tuple(e for e in rest if not isinstance(e, _Mark))
        return None
