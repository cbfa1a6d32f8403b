"""CRC's pure state: who holds which checkpoint, each replica's content, and pending acks.

* The :class:`Directory` (every member of the CRC group holds it; replicated by agreed order,
  transferred to joiners): for each checkpoint, the nodes that opened it and in which role.
  ``ACTIVE`` opens to write; ``STANDBY`` opens to keep a replica that synchronous writes wait
  for. Holders whose node leaves the group are removed; a checkpoint with no holders is gone.
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
class DirEvent:
    """An event of the directory's history: ``origin`` opened/closed, or the group changed."""

    origin: int
    op: Open | Close | Members


@dataclass(frozen=True)
class HolderChange:
    """How one checkpoint's holders changed: what that checkpoint's replicas must be told."""

    name: str
    holders: tuple[int, ...]
    joined: tuple[int, ...] = ()
    left: tuple[int, ...] = ()


@dataclass(frozen=True)
class DirSnapshot:
    members: tuple[int, ...]
    checkpoints: tuple[tuple[str, tuple[tuple[int, Role], ...]], ...]


@dataclass
class Directory:
    """See the module docstring."""

    holders: dict[str, dict[int, Role]] = field(default_factory=dict)
    members: frozenset[int] = frozenset()

    def standbys(self, name: str) -> set[int]:
        return {n for n, r in self.holders.get(name, {}).items() if r is Role.STANDBY}

    def role(self, name: str, node: int) -> Role | None:
        return self.holders.get(name, {}).get(node)

    def apply(self, event: DirEvent) -> list[HolderChange]:
        op = event.op
        if isinstance(op, Members):
            return self._set_members(op.members)
        before = dict(self.holders.get(op.name, {}))
        if isinstance(op, Open):
            self.holders.setdefault(op.name, {})[event.origin] = op.role
        elif event.origin in before:
            del self.holders[op.name][event.origin]
        return self._changes({op.name: before})

    def snapshot(self) -> DirSnapshot:
        checkpoints = tuple(
            (name, tuple(sorted(holders.items()))) for name, holders in sorted(self.holders.items())
        )
        return DirSnapshot(tuple(sorted(self.members)), checkpoints)

    def install(self, snap: DirSnapshot) -> None:
        self.members = frozenset(snap.members)
        self.holders = {name: dict(h) for name, h in snap.checkpoints if h}

    def merge(self, snap: DirSnapshot) -> list[HolderChange]:
        """Union with the other side's directory after a partition heals (best effort)."""
        before = {name: dict(self.holders.get(name, {})) for name in self._names(snap)}
        for name, theirs in snap.checkpoints:
            mine = self.holders.setdefault(name, {})
            for node, role in theirs:
                if node in self.members:
                    mine[node] = max(mine.get(node, role), role)
        return self._changes(before)

    def _names(self, snap: DirSnapshot) -> list[str]:
        return sorted(self.holders.keys() | {name for name, _ in snap.checkpoints})

    def _set_members(self, members: Iterable[int]) -> list[HolderChange]:
        self.members = frozenset(members)
        before = {name: dict(h) for name, h in self.holders.items()}
        for holders in self.holders.values():
            for node in [n for n in holders if n not in self.members]:
                del holders[node]
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
