"""A replica's in-memory copy: items, version, and the recent change log. Pure, no I/O.

The copy answers reads, evaluates transactions deterministically (every member evaluates the
same transaction against the same copy and reaches the same result), and knows enough of its
history to tell whether another copy's version lies on it (:meth:`KvState.fits`) and to give
the entries after it (:meth:`KvState.entries_after`), so a lagging member can catch up by a
delta instead of a snapshot.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence

from haos.cluster.dss.ccr.model import (
    Change,
    Compare,
    Delete,
    DeletePrefix,
    Durable,
    Entry,
    Image,
    Item,
    Op,
    Put,
    RequestId,
    Version,
    content_hash,
    entry_bytes,
    in_prefix,
)


class KvState:
    """The copy of one replica. ``log_limit`` bounds the entries kept for deltas, and
    ``log_bytes`` the bytes of their changes (:func:`~.model.entry_bytes`): each entry holds
    the values it wrote, so a log of large values would otherwise hold many copies."""

    def __init__(self, durable: Durable, log_limit: int, log_bytes: int = 1 << 62) -> None:
        self._limit = max(1, log_limit)
        self._bytes = log_bytes
        self._held = 0
        self._items: dict[str, Item] = {}
        self.version = Version(0, 0)
        self.base = Version(0, 0)
        self._log: deque[Entry] = deque()
        self.install(durable.image)
        if durable.log:
            self.base = durable.base
            self._log.extend(durable.log)
            self._held = sum(entry_bytes(e) for e in self._log)
            self._trim()

    @property
    def revision(self) -> int:
        return self.version.revision

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        return self._items.get(key)

    def range(self, prefix: str) -> tuple[Item, ...]:
        return tuple(sorted((i for k, i in self._items.items() if in_prefix(prefix, k)), key=_key))

    def image(self) -> Image:
        return Image(self.version, tuple(sorted(self._items.values(), key=_key)))

    def hash(self) -> bytes:
        return content_hash(self.revision, self._items.values())

    # -- history ---------------------------------------------------------------------------

    def entry_at(self, revision: int) -> Entry | None:
        first = self.base.revision + 1
        if first <= revision <= self.revision:
            return self._log[revision - first]
        return None

    def find(self, request: RequestId) -> Entry | None:
        """The log entry of ``request``, if the log still holds it."""
        return next((e for e in reversed(self._log) if e.request == request), None)

    def fits(self, version: Version) -> bool:
        """Whether ``version`` is a point on this copy's known history (so a delta fits it)."""
        if version == self.version or version == self.base:
            return True
        entry = self.entry_at(version.revision)
        return entry is not None and entry.epoch == version.epoch

    def entries_after(self, revision: int) -> tuple[Entry, ...]:
        """The log entries after ``revision``; ``revision`` must be >= ``base.revision``."""
        assert revision >= self.base.revision, (revision, self.base)
        first = revision - self.base.revision
        if first >= len(self._log):
            return ()
        # from the end: the entries wanted are usually the last few of a long log
        return tuple(itertools.islice(reversed(self._log), len(self._log) - first))[::-1]

    # -- changes ---------------------------------------------------------------------------

    def evaluate(
        self, compares: Sequence[Compare], ops: Sequence[Op]
    ) -> tuple[Change, ...] | Compare:
        """What the transaction would change, or the first compare that fails."""
        for c in compares:
            item = self._items.get(c.key)
            if (item.mod_revision if item else 0) != c.mod_revision:
                return c
        after: dict[str, bytes | None] = {}

        def exists(key: str) -> bool:
            return after[key] is not None if key in after else key in self._items

        for op in ops:
            if isinstance(op, Put):
                after[op.key] = op.value
            elif isinstance(op, Delete):
                if exists(op.key):
                    after[op.key] = None
            elif isinstance(op, DeletePrefix):
                for key in [*self._items, *after]:
                    if in_prefix(op.prefix, key) and exists(key):
                        after[key] = None
        return tuple(
            Change(k, v) for k, v in sorted(after.items()) if v is not None or k in self._items
        )

    def apply(
        self, revision: int, epoch: int, request: RequestId, changes: Iterable[Change]
    ) -> Entry:
        """Apply the next transaction's changes as entry ``revision`` of ``epoch``."""
        entry = Entry(revision, epoch, request, tuple(changes))
        self.append(entry)
        return entry

    def append(self, entry: Entry) -> None:
        """Apply an entry that continues this history (its revision is the next one)."""
        assert entry.revision == self.revision + 1, (entry.revision, self.version)
        for change in entry.changes:
            if change.value is None:
                self._items.pop(change.key, None)
            else:
                self._items[change.key] = Item(change.key, change.value, entry.revision)
        self.version = Version(entry.epoch, entry.revision)
        self._log.append(entry)
        self._held += entry_bytes(entry)
        self._trim()

    def _trim(self) -> None:
        while len(self._log) > self._limit or (self._held > self._bytes and len(self._log) > 1):
            dropped = self._log.popleft()
            self._held -= entry_bytes(dropped)
            self.base = Version(dropped.epoch, dropped.revision)

    def install(self, image: Image) -> None:
        """Replace the whole copy by ``image``; the log starts afresh after it."""
        self._items = {i.key: i for i in image.items}
        self.version = image.version
        self.base = image.version
        self._log.clear()
        self._held = 0


def _key(item: Item) -> str:
    return item.key
