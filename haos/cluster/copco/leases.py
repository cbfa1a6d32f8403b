"""Operation locks as leases: the pure decisions (no I/O, no clock reads).

A lock covers a *sub-tree* of the containment tree, named by a component name prefix
(``shelf1/slot2`` covers ``shelf1/slot2`` and everything below it, not ``shelf1/slot20``).
Two locks conflict when one sub-tree contains the other, unless one owner holds both: an
operation may lock a sub-tree and a part of it.

A lock is a :class:`Lease`: its owner (the node that took it and the operation's id), the
operation's kind, the reason given, and when it expires (wall-clock seconds). An expired
lease holds nothing: it is ignored by every decision, and the acquisition that passes over
it deletes it in the same write (so its late renewal cannot bring it back). A lease whose
owner's node left the cluster is dropped (:func:`of_node`).

The decisions take what the repository holds (``held``) and ``now``, and say what to write:
:func:`acquire` (all of several sub-trees or none), :func:`renew`, :func:`release` (by its
owner), :func:`release_maintenance` (an operator's maintenance lock, by sub-tree),
:func:`break_lock` (forced, by an operator), :func:`expired` and :func:`of_node`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from haos.errors import HaosError, UsageError

MAINTENANCE = "maintenance"  # the kind of an operator's lock (haosctl lock-ops take)
MAX_TEXT = 512  # characters of a reason, a kind, an owner's node or operation


class LockedError(HaosError):
    """An operation needs a sub-tree another operation holds; nothing was applied. The
    message names the holder, its operation, its reason and when its lock expires."""

    code = "locked"


class LockLostError(HaosError):
    """A lease this node held is gone (expired and taken, released, broken)."""

    code = "lock-lost"


def subtree(name: object) -> str:
    """``name`` as a sub-tree (a relative component path); UsageError naming the problem."""
    if not isinstance(name, str) or not name.strip("/"):
        raise UsageError(f"a sub-tree is a component name such as shelf1/slot2, not {name!r}")
    path = name.strip("/")
    for segment in path.split("/"):
        if not segment or segment in (".", ".."):
            raise UsageError(f"sub-tree {name!r} has an empty, '.' or '..' segment")
        if not segment.isprintable() or any(c.isspace() for c in segment):
            raise UsageError(f"sub-tree {name!r} has a blank or unprintable character")
    return path


def contains(outer: str, inner: str) -> bool:
    """Whether sub-tree ``outer`` contains ``inner`` (or is it)."""
    return inner == outer or inner.startswith(outer + "/")


def overlap(a: str, b: str) -> bool:
    """Whether two sub-trees conflict: one contains the other."""
    return contains(a, b) or contains(b, a)


def _text(what: str, value: object, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty) or len(value) > MAX_TEXT:
        size = "" if empty else "non-empty "
        raise UsageError(f"{what} must be {size}text of at most {MAX_TEXT} characters")
    return value


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: a node (by name) and the id of the operation running there."""

    node: str
    operation: str

    def __str__(self) -> str:
        return f"{self.operation} on {self.node}"


@dataclass(frozen=True)
class Lease:
    subtree: str
    owner: Owner
    kind: str  # switchover, lock, ..., maintenance, upgrade, extraction
    reason: str
    taken: float  # wall-clock seconds
    expires: float  # wall-clock seconds: from then on it holds nothing

    def live(self, now: float) -> bool:
        return now < self.expires

    def describe(self) -> str:
        """Who holds it, doing what, why, until when: what a refused operation is told."""
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.expires))
        return (
            f"{self.subtree} is locked by {self.owner.node} ({self.kind}, operation "
            f"{self.owner.operation}): {self.reason}; the lock expires at {until}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "subtree": self.subtree,
            "node": self.owner.node,
            "operation": self.owner.operation,
            "kind": self.kind,
            "reason": self.reason,
            "taken": self.taken,
            "expires": self.expires,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()


def lease(name: str, owner: Owner, kind: str, reason: str, now: float, ttl: float) -> Lease:
    """A new lease on ``name`` for ``ttl`` seconds from ``now``; UsageError for bad input."""
    if not ttl > 0:
        raise UsageError(f"a lock must last a positive time, not {ttl!r} s")
    owner = Owner(_text("owner's node", owner.node), _text("operation", owner.operation))
    return Lease(
        subtree(name), owner, _text("kind", kind), _text("reason", reason, True), now, now + ttl
    )


def decode(raw: bytes | str) -> Lease:
    """A stored lease; UsageError naming what is wrong with it."""
    try:
        obj = json.loads(raw)
        owner = Owner(_text("node", obj["node"]), _text("operation", obj["operation"]))
        taken, expires = float(obj["taken"]), float(obj["expires"])
        kind, reason = _text("kind", obj["kind"]), _text("reason", obj["reason"], True)
        return Lease(subtree(obj["subtree"]), owner, kind, reason, taken, expires)
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"stored lock is not a lease: {e!r}") from None


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Granted:
    """Write ``leases``; delete ``clean`` (expired leases in their way), in one transaction."""

    leases: tuple[Lease, ...]
    clean: tuple[Lease, ...]


@dataclass(frozen=True)
class Refused:
    """``holder`` (live, another owner's) overlaps what was asked for."""

    holder: Lease
    wanted: str

    @property
    def reason(self) -> str:
        return f"{self.wanted}: {self.holder.describe()}"


def acquire(held: Iterable[Lease], wants: Sequence[Lease], now: float) -> Granted | Refused:
    """Every lease of ``wants`` (one owner), or none of them: refused by the first live
    lease of another owner that overlaps one of them."""
    owners = {w.owner for w in wants}
    if len(owners) != 1:
        raise UsageError("one acquisition is of one owner's leases")
    clean: list[Lease] = []
    for have in sorted(held, key=lambda h: h.subtree):
        for want in wants:
            if not overlap(have.subtree, want.subtree):
                continue
            if not have.live(now):
                if have not in clean:
                    clean.append(have)
            elif have.owner not in owners:
                return Refused(have, want.subtree)
    return Granted(tuple(wants), tuple(clean))


@dataclass(frozen=True)
class Lost:
    reason: str


def renew(held: Iterable[Lease], mine: Lease, until: float, now: float) -> Lease | Lost:
    """``mine`` (as stored) lasting until ``until``; Lost if it is no longer held as it was
    taken (released, broken, or expired: an expired lease is not brought back)."""
    current = next((h for h in held if h.subtree == mine.subtree), None)
    if current is None or current.owner != mine.owner:
        return Lost(f"the lock on {mine.subtree} is no longer held by {mine.owner}")
    if not current.live(now):
        return Lost(f"the lock on {mine.subtree} expired before it was renewed")
    return Lease(current.subtree, current.owner, current.kind, current.reason, current.taken, until)


def release(held: Iterable[Lease], mine: Lease) -> Lease | None:
    """The stored lease to delete: ``mine`` if its owner still holds it."""
    return next((h for h in held if h.subtree == mine.subtree and h.owner == mine.owner), None)


def release_maintenance(held: Iterable[Lease], name: str, now: float) -> Lease:
    """An operator's maintenance lock on exactly ``name``, to delete; UsageError if there is
    none (an operation's lock is broken, not released: see :func:`break_lock`)."""
    path = subtree(name)
    found = next((h for h in held if h.subtree == path and h.live(now)), None)
    if found is None:
        raise UsageError(f"no lock is held on {path}{_nearby(held, path, now)}")
    if found.kind != MAINTENANCE:
        raise UsageError(
            f"the lock on {path} is not a maintenance lock but a running operation's "
            f"({found.describe()}); 'break' it to force it"
        )
    return found


def break_lock(held: Iterable[Lease], name: str) -> Lease:
    """The lease on exactly ``name`` (live or expired), to delete by force; UsageError if
    there is none."""
    path = subtree(name)
    found = next((h for h in held if h.subtree == path), None)
    if found is None:
        raise UsageError(f"no lock is held on {path}{_nearby(held, path, None)}")
    return found


def _nearby(held: Iterable[Lease], path: str, now: float | None) -> str:
    near = sorted(
        h.subtree for h in held if overlap(h.subtree, path) and (now is None or h.live(now))
    )
    return f" (locks that overlap it: {', '.join(near)})" if near else ""


def expired(held: Iterable[Lease], now: float) -> tuple[Lease, ...]:
    """The leases that hold nothing any more, to clean up."""
    return tuple(h for h in held if not h.live(now))


def of_node(held: Iterable[Lease], node: str) -> tuple[Lease, ...]:
    """The leases of a node that left the cluster: released with it."""
    return tuple(h for h in held if h.owner.node == node)


def live(held: Iterable[Lease], now: float) -> tuple[Lease, ...]:
    """The leases that hold, by sub-tree."""
    return tuple(sorted((h for h in held if h.live(now)), key=lambda h: h.subtree))
