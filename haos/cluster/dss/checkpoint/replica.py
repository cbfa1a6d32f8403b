"""CRC's pure state: who holds which checkpoint, each replica's content, and pending acks.

* The :class:`Directory` (every member of the CRC group holds it; replicated by agreed order,
  transferred to joiners): for each checkpoint, the nodes that opened it and in which role.
  ``ACTIVE`` opens to write; ``STANDBY`` opens to keep a replica that synchronous writes wait
  for. Holders whose node leaves the group are removed; a checkpoint with no holders is gone.
  A holder is *stale* from a writer's :class:`Drop` of it (it did not acknowledge a write in
  time) until its own :class:`Synced` (it installed a fresh state transfer): synchronous writes
  do not wait for it and it must not take over. A holder that opens a checkpoint whose every
  holder is stale is stale too (there is nobody to take a fresh copy from).
* A :class:`Replica` (only on holders): the checkpoint's sections. Every holder applies each
  write where it falls in the agreed order, so replicas agree. A holder that opens gets the
  content by state transfer from the lowest holder in sync, taken where its open sits in the
  order (per-checkpoint :class:`~haos.cluster.dss.messaging.statesync.SyncTracker`, whose
  "members" are the checkpoint's holders).
* :class:`AckTracker` (on a writer): for each synchronous write, the standbys that have not yet
  acknowledged it. The set is fixed where the write sits in the order: a standby that opens
  later gets the write in its snapshot and is not waited for; one that leaves is not waited for.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from haos.cluster.dss.messaging.statesync import SyncTracker


class Role(enum.IntEnum):
    ACTIVE = 1  # writes; keeps a copy, but writes do not wait for it
    STANDBY = 2  # keeps a replica that synchronous writes wait for


@dataclass(frozen=True)
class Open:
    name: str
    role: Role


@dataclass(frozen=True)
class Close:
    name: str


@dataclass(frozen=True)
class Members:
    members: tuple[int, ...]


@dataclass(frozen=True)
class Drop:
    """``origin`` stopped waiting for standby ``node`` of ``name``: that replica is stale."""

    name: str
    node: int


@dataclass(frozen=True)
class Synced:
    """``origin``'s stale replica of ``name`` installed a fresh state transfer."""

    name: str


@dataclass(frozen=True)
class DirEvent:
    """An event of the directory's history: ``origin`` opened/closed/dropped/resynchronised,
    or the group changed."""

    origin: int
    op: Open | Close | Members | Drop | Synced


@dataclass(frozen=True)
class HolderChange:
    """How one checkpoint's holders changed: what that checkpoint's replicas must be told."""

    name: str
    holders: tuple[int, ...]
    joined: tuple[int, ...] = ()
    left: tuple[int, ...] = ()
    stale: tuple[int, ...] = ()  # dropped: each must take a fresh state transfer


@dataclass(frozen=True)
class DirSnapshot:
    members: tuple[int, ...]
    checkpoints: tuple[tuple[str, tuple[tuple[int, Role], ...]], ...]
    stale: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclass
class Directory:
    """See the module docstring."""

    holders: dict[str, dict[int, Role]] = field(default_factory=dict)
    members: frozenset[int] = frozenset()
    stale: dict[str, set[int]] = field(default_factory=dict)  # checkpoint -> stale holders

    def standbys(self, name: str) -> set[int]:
        """The standbys that synchronous writes wait for: stale ones are not."""
        stale = self.stale.get(name, set())
        return {
            n for n, r in self.holders.get(name, {}).items() if r is Role.STANDBY and n not in stale
        }

    def synced(self, name: str) -> set[int]:
        """The holders whose replica holds the checkpoint's state (every holder but the stale)."""
        return set(self.holders.get(name, {})) - self.stale.get(name, set())

    def is_stale(self, name: str, node: int) -> bool:
        return node in self.stale.get(name, ())

    def role(self, name: str, node: int) -> Role | None:
        return self.holders.get(name, {}).get(node)

    def apply(self, event: DirEvent) -> list[HolderChange]:
        op = event.op
        if isinstance(op, Members):
            return self._set_members(op.members)
        if isinstance(op, Drop):
            return self._drop(op.name, op.node, event.origin)
        holders = self.holders.get(op.name, {})
        if isinstance(op, Synced):
            if event.origin in holders:
                self._unstale(op.name, {event.origin})
            return []
        before = dict(holders)
        if isinstance(op, Open):
            if before and event.origin not in before and not self.synced(op.name):
                self.stale.setdefault(op.name, set()).add(event.origin)  # nobody to copy from
            self.holders.setdefault(op.name, {})[event.origin] = op.role
        elif event.origin in before:
            del self.holders[op.name][event.origin]
            self._unstale(op.name, {event.origin})
        return self._changes({op.name: before})

    def _drop(self, name: str, node: int, origin: int) -> list[HolderChange]:
        holders = self.holders.get(name, {})
        if origin not in holders or holders.get(node) is not Role.STANDBY:
            return []  # a writer that closed, or a standby that closed or took over since
        if node in self.stale.get(name, ()):
            return []  # a second writer's drop, or a second write's: one resync is enough
        self.stale.setdefault(name, set()).add(node)
        return [HolderChange(name, tuple(sorted(holders)), stale=(node,))]

    def _unstale(self, name: str, nodes: set[int]) -> None:
        stale = self.stale.get(name)
        if stale is not None:
            stale -= nodes
            if not stale:
                del self.stale[name]

    def snapshot(self) -> DirSnapshot:
        checkpoints = tuple(
            (name, tuple(sorted(holders.items()))) for name, holders in sorted(self.holders.items())
        )
        stale = tuple((name, tuple(sorted(s))) for name, s in sorted(self.stale.items()) if s)
        return DirSnapshot(tuple(sorted(self.members)), checkpoints, stale)

    def install(self, snap: DirSnapshot) -> None:
        self.members = frozenset(snap.members)
        self.holders = {name: dict(h) for name, h in snap.checkpoints if h}
        self.stale = {
            name: set(nodes) & set(self.holders.get(name, {})) for name, nodes in snap.stale
        }
        self.stale = {name: nodes for name, nodes in self.stale.items() if nodes}

    def merge(self, snap: DirSnapshot) -> list[HolderChange]:
        """Union with the other side's directory after a partition heals (best effort; a
        replica stale on either side stays stale)."""
        before = {name: dict(self.holders.get(name, {})) for name in self._names(snap)}
        for name, theirs in snap.checkpoints:
            mine = self.holders.setdefault(name, {})
            for node, role in theirs:
                if node in self.members:
                    mine[node] = max(mine.get(node, role), role)
        for name, nodes in snap.stale:
            held = set(self.holders.get(name, {}))
            if held & set(nodes):
                self.stale.setdefault(name, set()).update(held & set(nodes))
        return self._changes(before)

    def _names(self, snap: DirSnapshot) -> list[str]:
        return sorted(self.holders.keys() | {name for name, _ in snap.checkpoints})

    def _set_members(self, members: Iterable[int]) -> list[HolderChange]:
        self.members = frozenset(members)
        before = {name: dict(h) for name, h in self.holders.items()}
        for name, holders in self.holders.items():
            gone = {n for n in holders if n not in self.members}
            for node in gone:
                del holders[node]
            self._unstale(name, gone)
        return self._changes(before)

    def _changes(self, before: dict[str, dict[int, Role]]) -> list[HolderChange]:
        changes = []
        for name, old in sorted(before.items()):
            new = self.holders.get(name, {})
            joined = tuple(sorted(new.keys() - old.keys()))
            left = tuple(sorted(old.keys() - new.keys()))
            if joined or left:
                changes.append(HolderChange(name, tuple(sorted(new)), joined, left))
            if not new:
                self.holders.pop(name, None)
                self.stale.pop(name, None)
        return changes


@dataclass(frozen=True)
class Section:
    data: bytes
    version: int  # the replica's write count when it was written: later writes are larger


@dataclass(frozen=True)
class Write:
    """A write (or, with ``data`` None, a delete) as delivered."""

    writer: int
    write_id: int
    section: str
    data: bytes | None
    sync: bool


@dataclass(frozen=True)
class Content:
    version: int
    sections: tuple[tuple[str, Section], ...]


@dataclass
class Replica:
    """One holder's copy of one checkpoint, with its state-transfer bookkeeping."""

    name: str
    me: int
    sections: dict[str, Section] = field(default_factory=dict)
    version: int = 0
    sync: SyncTracker[Write] = field(init=False)

    def __post_init__(self) -> None:
        self.sync = SyncTracker(self.me)

    def apply(self, write: Write) -> None:
        self.version += 1
        if write.data is None:
            self.sections.pop(write.section, None)
        else:
            self.sections[write.section] = Section(write.data, self.version)

    def read(self, section: str) -> bytes | None:
        found = self.sections.get(section)
        return None if found is None else found.data

    def snapshot(self) -> Content:
        return Content(self.version, tuple(sorted(self.sections.items())))

    def invalidate(self) -> None:
        """Dropped while in sync: forget the content and start over as a joiner, which the
        next offer naming this member fills (see ``Directory``)."""
        self.sections = {}
        self.sync = SyncTracker(self.me)

    def install(self, content: Content) -> None:
        self.version = content.version
        self.sections = dict(content.sections)

    def merge(self, content: Content) -> None:
        """Per section, the later write wins (then the larger data): the same on both sides."""
        for name, theirs in content.sections:
            mine = self.sections.get(name)
            if mine is None or (theirs.version, theirs.data) > (mine.version, mine.data):
                self.sections[name] = theirs
        self.version = max(self.version, content.version)


@dataclass
class AckTracker:
    """A writer's synchronous writes and the standbys each still waits for."""

    _waiting: dict[int, tuple[str, set[int]]] = field(default_factory=dict)

    def expect(self, write_id: int, name: str, nodes: Iterable[int]) -> bool:
        """Start waiting for ``nodes``; True if there is nobody to wait for."""
        waiting = set(nodes)
        if waiting:
            self._waiting[write_id] = (name, waiting)
        return not waiting

    def ack(self, write_id: int, node: int) -> bool:
        """``node`` stored the write; True if that was the last ack it waited for."""
        entry = self._waiting.get(write_id)
        if entry is None or node not in entry[1]:
            return False
        entry[1].discard(node)
        if not entry[1]:
            del self._waiting[write_id]
            return True
        return False

    def left(self, name: str, nodes: Iterable[int]) -> list[int]:
        """``nodes`` no longer hold ``name`` (closed it, or left the group): stop waiting for
        them; the writes that thereby completed."""
        gone = set(nodes)
        done = []
        for write_id, (ckpt, waiting) in list(self._waiting.items()):
            if ckpt == name:
                waiting -= gone
                if not waiting:
                    del self._waiting[write_id]
                    done.append(write_id)
        return done

    def forget(self, write_id: int) -> None:
        self._waiting.pop(write_id, None)

    def waiting(self, write_id: int) -> frozenset[int]:
        """The standbys ``write_id`` still waits for."""
        entry = self._waiting.get(write_id)
        return frozenset(entry[1]) if entry else frozenset()

    def __contains__(self, write_id: int) -> bool:
        return write_id in self._waiting
