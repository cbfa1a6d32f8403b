"""Where a replica keeps its copy across restarts: the :class:`Store` contract, SQLite, memory.

:class:`SqliteStore` is the real one: one SQLite file in WAL mode with ``synchronous=FULL``,
so every committed transaction is fsynced before the call returns. :class:`MemoryStore` keeps
the same contract in memory for unit tests (an instance that outlives a replica stands for
its disk). Both keep the newest ``log_limit`` entries as the change log.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from haos.cluster.dss.ccr.model import (
    EMPTY,
    Durable,
    Entry,
    Image,
    Item,
    RequestId,
    Version,
    content_hash,
)
from haos.cluster.dss.ccr.wire import decode_changes, encode_changes
from haos.cluster.dss.wire import WireError
from haos.errors import FatalError

DEFAULT_LOG_LIMIT = 1000


class Store(Protocol):
    """A replica's durable copy. Every method is synchronous and blocking.

    Writes are atomic (all or nothing, also across a crash) and durable when they return.
    Any failure raises :class:`~haos.errors.FatalError`: the replica's memory is then ahead of
    its disk and it must stop.
    """

    def load(self) -> Durable:
        """The copy as last written (:data:`~.model.EMPTY` for a new store)."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Apply entries that continue the copy (the first has the next revision)."""
        ...

    def install(self, image: Image) -> None:
        """Replace the copy by ``image``; the log starts afresh after it."""
        ...

    def promise(self, epoch: int) -> None:
        """Record that this replica will take part in no epoch below ``epoch``."""
        ...

    def hash(self) -> bytes:
        """:func:`~.model.content_hash` of the stored copy."""
        ...

    def close(self) -> None:
        """Release the store. Idempotent."""
        ...


class MemoryStore:
    """The :class:`Store` contract in memory."""

    def __init__(self, log_limit: int = DEFAULT_LOG_LIMIT) -> None:
        self._limit = max(1, log_limit)
        self._durable = EMPTY
        self._items: dict[str, Item] = {}

    def load(self) -> Durable:
        return self._durable

    def append(self, entries: Sequence[Entry]) -> None:
        d = self._durable
        items = dict(self._items)
        version = d.image.version
        log = list(d.log)
        for entry in entries:
            if entry.revision != version.revision + 1:
                raise FatalError(f"entry {entry.revision} does not follow revision {version}")
            for c in entry.changes:
                if c.value is None:
                    items.pop(c.key, None)
                else:
                    items[c.key] = Item(c.key, c.value, entry.revision)
            version = Version(entry.epoch, entry.revision)
            log.append(entry)
        base = d.base
        if len(log) > self._limit:
            dropped = log[-self._limit - 1]
            base = Version(dropped.epoch, dropped.revision)
            log = log[-self._limit :]
        self._items = items
        image = Image(version, tuple(sorted(items.values(), key=lambda i: i.key)))
        self._durable = Durable(image, d.promised_epoch, base, tuple(log))

    def install(self, image: Image) -> None:
        self._items = {i.key: i for i in image.items}
        self._durable = Durable(image, self._durable.promised_epoch, image.version, ())

    def promise(self, epoch: int) -> None:
        d = self._durable
        self._durable = Durable(d.image, max(epoch, d.promised_epoch), d.base, d.log)

    def hash(self) -> bytes:
        return content_hash(self._durable.image.version.revision, self._items.values())

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY, epoch INTEGER NOT NULL,
    node INTEGER NOT NULL, incarnation INTEGER NOT NULL, seq INTEGER NOT NULL,
    changes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0), format INTEGER NOT NULL,
    revision INTEGER NOT NULL, epoch INTEGER NOT NULL, promised_epoch INTEGER NOT NULL,
    base_revision INTEGER NOT NULL, base_epoch INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta VALUES (0, 1, 0, 0, 0, 0, 0);
"""
_I64 = 2**63  # SQLite integers are signed 64-bit: u64 ids are stored shifted


class SqliteStore:
    """The :class:`Store` contract in one SQLite file (WAL, ``synchronous=FULL``).

    Opening creates the file and its tables if needed; a file that is not a CCR store, or is
    corrupt, raises FatalError. Not for concurrent use: one call at a time (from any thread).
    """

    def __init__(self, path: Path | str, log_limit: int = DEFAULT_LOG_LIMIT) -> None:
        self.path = Path(path)
        self._limit = max(1, log_limit)
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                os.fspath(self.path), isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise FatalError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            fmt = self._db.execute("SELECT format FROM meta").fetchone()[0]
        except sqlite3.Error as e:
            raise FatalError(f"{self.path}: cannot open the CCR store: {e}") from e
        if fmt != 1:
            raise FatalError(f"{self.path}: unknown CCR store format {fmt}")

    @property
    def journal_mode(self) -> str:
        return str(self._conn().execute("PRAGMA journal_mode").fetchone()[0])

    @property
    def synchronous(self) -> int:
        return int(self._conn().execute("PRAGMA synchronous").fetchone()[0])

    def load(self) -> Durable:
        with self._guard("load"):
            db = self._conn()
            revision, epoch, promised, base_rev, base_epoch = db.execute(
                "SELECT revision, epoch, promised_epoch, base_revision, base_epoch FROM meta"
            ).fetchone()
            items = tuple(
                Item(k, bytes(v), r)
                for k, v, r in db.execute("SELECT key, value, mod_rev FROM kv ORDER BY key")
            )
            log = tuple(
                self._entry(row)
                for row in db.execute(
                    "SELECT revision, epoch, node, incarnation, seq, changes FROM log"
                    " ORDER BY revision"
                )
            )
        image = Image(Version(epoch, revision), items)
        return Durable(image, promised, Version(base_epoch, base_rev), log)

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._transaction("append") as db:
            (revision,) = db.execute("SELECT revision FROM meta").fetchone()
            for entry in entries:
                if entry.revision != revision + 1:
                    raise FatalError(f"entry {entry.revision} does not follow revision {revision}")
                self._write(db, entry)
                revision = entry.revision
            last = entries[-1]
            db.execute("UPDATE meta SET revision = ?, epoch = ?", (last.revision, last.epoch))
            cutoff = revision - self._limit
            row = db.execute("SELECT epoch FROM log WHERE revision = ?", (cutoff,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM log WHERE revision <= ?", (cutoff,))
                db.execute("UPDATE meta SET base_revision = ?, base_epoch = ?", (cutoff, row[0]))

    def install(self, image: Image) -> None:
        v = image.version
        with self._transaction("install") as db:
            db.execute("DELETE FROM kv")
            db.execute("DELETE FROM log")
            db.executemany(
                "INSERT INTO kv VALUES (?, ?, ?)",
                ((i.key, i.value, i.mod_revision) for i in image.items),
            )
            db.execute(
                "UPDATE meta SET revision = ?, epoch = ?, base_revision = ?, base_epoch = ?",
                (v.revision, v.epoch, v.revision, v.epoch),
            )

    def promise(self, epoch: int) -> None:
        with self._transaction("promise") as db:
            db.execute("UPDATE meta SET promised_epoch = max(promised_epoch, ?)", (epoch,))

    def hash(self) -> bytes:
        with self._guard("hash"):
            db = self._conn()
            (revision,) = db.execute("SELECT revision FROM meta").fetchone()
            items = [
                Item(k, bytes(v), r) for k, v, r in db.execute("SELECT key, value, mod_rev FROM kv")
            ]
        return content_hash(revision, items)

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # -- internals ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise FatalError(f"{self.path}: the CCR store is closed")
        return self._db

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, WireError) as e:
            raise FatalError(f"{self.path}: CCR store {what} failed: {e}") from e

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._guard(what):
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")  # with synchronous=FULL: fsynced when this returns

    @staticmethod
    def _write(db: sqlite3.Connection, entry: Entry) -> None:
        for c in entry.changes:
            if c.value is None:
                db.execute("DELETE FROM kv WHERE key = ?", (c.key,))
            else:
                db.execute(
                    "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE"
                    " SET value = excluded.value, mod_rev = excluded.mod_rev",
                    (c.key, c.value, entry.revision),
                )
        r = entry.request
        db.execute(
            "INSERT INTO log VALUES (?, ?, ?, ?, ?, ?)",
            (
                entry.revision,
                entry.epoch,
                r.node,
                r.incarnation - _I64,
                r.seq - _I64,
                encode_changes(entry.changes),
            ),
        )

    @staticmethod
    def _entry(row: tuple[int, int, int, int, int, bytes]) -> Entry:
        revision, epoch, node, incarnation, seq, changes = row
        request = RequestId(node, incarnation + _I64, seq + _I64)
        return Entry(revision, epoch, request, decode_changes(bytes(changes)))
