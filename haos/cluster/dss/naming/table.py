"""The CNS binding table: a pure state machine that every member applies in agreed order.

Names are hierarchical paths (``/svc/db/primary``); each is bound to an opaque handle and to
the node that owns the binding. Rules, applied identically everywhere:

* ``bind`` of a free name binds it; of a name bound to the same (handle, owner) is a no-op
  success; of a name bound otherwise is a conflict.
* ``rebind`` (take-over) binds the name whatever it was bound to: the new active rebinds after
  a fail-over and, being ordered after the old binding, wins.
* ``unbind`` removes a binding; with an expected handle, only if the name still has it (so a
  late unbind from the old active cannot remove the new active's binding).
* A binding's owner must be a member when the request is applied; when a membership change
  shows the owner gone, its bindings go.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from haos.errors import ConflictError, HaosError, UnavailableError, UsageError

MAX_NAME = 1024  # bytes of UTF-8


def validate_name(name: str, *, prefix: bool = False) -> None:
    """Raise UsageError unless ``name`` is an absolute '/'-path (or, with ``prefix``, '/')."""
    if prefix and name == "/":
        return
    if not name.startswith("/") or name.endswith("/") or "//" in name:
        raise UsageError(f"name {name!r} is not an absolute path like /svc/db")
    if not name.isprintable() or len(name.encode("utf-8", "replace")) > MAX_NAME:
        raise UsageError(f"name {name!r} is not printable or longer than {MAX_NAME} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"name {name!r} is not valid UTF-8") from None


def under(name: str, prefix: str) -> bool:
    """True if ``name`` is ``prefix`` or below it in the hierarchy."""
    return prefix == "/" or name == prefix or name.startswith(prefix + "/")


@dataclass(frozen=True)
class Binding:
    name: str
    handle: bytes
    owner: int  # node id
    stamp: int  # the table's change count when it was made: a later binding has a larger one


class Reason(enum.Enum):
    BOUND = "bound"
    REBOUND = "rebound"
    UNBOUND = "unbound"
    OWNER_LEFT = "owner-left"
    SYNCED = "synced"  # state transfer or partition merge


@dataclass(frozen=True)
class Change:
    """What a watcher sees: a name's binding before and after."""

    name: str
    old: Binding | None
    new: Binding | None
    reason: Reason


@dataclass(frozen=True)
class Bind:
    name: str
    handle: bytes
    owner: int
    replace: bool = False  # rebind


@dataclass(frozen=True)
class Unbind:
    name: str
    expect: bytes | None = None  # only if the name is bound to this handle


@dataclass(frozen=True)
class Request:
    """An operation as delivered, with who asked (to answer them)."""

    origin: int
    req_id: int
    op: Bind | Unbind


@dataclass(frozen=True)
class Members:
    """A membership change, as an event in the table's history."""

    members: tuple[int, ...]


Event = Request | Members


@dataclass(frozen=True)
class Outcome:
    """The answer to a request: the binding now (None if unbound), or the error."""

    binding: Binding | None = None
    error: HaosError | None = None
    changed: bool = False


@dataclass(frozen=True)
class Snapshot:
    stamp: int
    members: tuple[int, ...]
    bindings: tuple[Binding, ...]


def _rank(b: Binding) -> tuple[int, int, bytes]:
    return (b.stamp, b.owner, b.handle)


@dataclass
class NameTable:
    """See the module docstring. Pure: no I/O, no clock."""

    bindings: dict[str, Binding] = field(default_factory=dict)
    stamp: int = 0
    members: frozenset[int] = frozenset()

    def resolve(self, name: str) -> Binding | None:
        return self.bindings.get(name)

    def bindings_under(self, prefix: str = "/") -> list[Binding]:
        return sorted(
            (b for n, b in self.bindings.items() if under(n, prefix)), key=lambda b: b.name
        )

    def apply(self, event: Event) -> tuple[Outcome | None, list[Change]]:
        """Apply one delivered event; the outcome is for a request's origin."""
        if isinstance(event, Members):
            return None, self._set_members(event.members)
        if isinstance(event.op, Bind):
            return self._bind(event.op)
        return self._unbind(event.op)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.stamp, tuple(sorted(self.members)), tuple(self.bindings_under()))

    def install(self, snap: Snapshot) -> list[Change]:
        """Replace the table with ``snap``."""
        before = dict(self.bindings)
        self.bindings = {b.name: b for b in snap.bindings}
        self.stamp = snap.stamp
        self.members = frozenset(snap.members)
        return self._diff(before)

    def merge(self, snap: Snapshot) -> list[Change]:
        """Merge the other side's table after a partition heals: per name the later binding
        (then the larger owner, then handle) wins; bindings of non-members are dropped."""
        before = dict(self.bindings)
        for theirs in snap.bindings:
            mine = self.bindings.get(theirs.name)
            if mine is None or _rank(theirs) > _rank(mine):
                self.bindings[theirs.name] = theirs
        self.bindings = {n: b for n, b in self.bindings.items() if b.owner in self.members}
        self.stamp = max(self.stamp, snap.stamp)
        return self._diff(before)

    # -- internals ---------------------------------------------------------------------------

    def _set_members(self, members: Iterable[int]) -> list[Change]:
        self.members = frozenset(members)
        gone = [b for b in self.bindings.values() if b.owner not in self.members]
        for b in gone:
            del self.bindings[b.name]
        return [Change(b.name, b, None, Reason.OWNER_LEFT) for b in gone]

    def _bind(self, op: Bind) -> tuple[Outcome, list[Change]]:
        old = self.bindings.get(op.name)
        if op.owner not in self.members:
            return Outcome(old, UnavailableError(f"owner node {op.owner} is not a member")), []
        if old is not None and (old.handle, old.owner) == (op.handle, op.owner):
            return Outcome(old), []
        if old is not None and not op.replace:
            error = ConflictError(f"{op.name} is bound by node {old.owner}")
            return Outcome(old, error), []
        self.stamp += 1
        new = Binding(op.name, op.handle, op.owner, self.stamp)
        self.bindings[op.name] = new
        reason = Reason.BOUND if old is None else Reason.REBOUND
        return Outcome(new, changed=True), [Change(op.name, old, new, reason)]

    def _unbind(self, op: Unbind) -> tuple[Outcome, list[Change]]:
        old = self.bindings.get(op.name)
        if old is None:
            return Outcome(None), []
        if op.expect is not None and op.expect != old.handle:
            return Outcome(old, ConflictError(f"{op.name} is bound to another handle")), []
        self.stamp += 1
        del self.bindings[op.name]
        return Outcome(None, changed=True), [Change(op.name, old, None, Reason.UNBOUND)]

    def _diff(self, before: dict[str, Binding]) -> list[Change]:
        changes = []
        for name in sorted(before.keys() | self.bindings.keys()):
            old, new = before.get(name), self.bindings.get(name)
            if old != new:
                changes.append(Change(name, old, new, Reason.SYNCED))
        return changes
