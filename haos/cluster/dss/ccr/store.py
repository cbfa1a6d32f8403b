"""Where a replica keeps its copy across restarts: the :class:`Store` contract, SQLite, memory.

:class:`SqliteStore` is the real one: one SQLite file in WAL mode with ``synchronous=FULL``,
so every committed transaction is fsynced before the call returns. :class:`MemoryStore` keeps
the same contract in memory for unit tests (an instance that outlives a replica stands for
its disk). Both keep the newest ``log_limit`` entries as the change log, and of those no more
than ``log_bytes`` of changes (see :func:`~.model.entry_bytes`): every log entry repeats the
values it wrote, so a log of 1000 entries of 256 KiB values held 250 MB beside the values
themselves, and a store took several times the disk of the data it keeps.

Disk: the SQLite file frees the pages that trimming the log or installing a snapshot leaves
empty (``auto_vacuum=INCREMENTAL``, run once a quarter of the file is free), its WAL is cut
back to ``journal_size_limit`` after each checkpoint, and a snapshot install (one transaction
as large as the whole copy) is checkpointed at once and its WAL truncated.
"""

from __future__ import annotations

import os
import sqlite3
from collections import deque
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
    entry_bytes,
)
from haos.cluster.dss.ccr.wire import decode_changes, encode_changes
from haos.cluster.dss.wire import WireError
from haos.errors import FatalError

DEFAULT_LOG_LIMIT = 1000
# Bytes of changes the log keeps at most: a lagging replica further behind gets a snapshot
# instead of a delta. Well above the writes of a few seconds of ordinary traffic (settings,
# names, intents: small values), and a fifth of the 20 MB a repository of large values held.
DEFAULT_LOG_BYTES = 4 * 1024 * 1024
# The WAL is cut back to this size after each checkpoint (SQLite leaves it at its largest).
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
# Free pages are returned to the file system once they are this share of the file.
FREE_SHARE = 0.25


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

    def __init__(
        self, log_limit: int = DEFAULT_LOG_LIMIT, log_bytes: int = DEFAULT_LOG_BYTES
    ) -> None:
        self._limit = max(1, log_limit)
        self._bytes = log_bytes
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
        held = sum(entry_bytes(e) for e in log)
        while len(log) > self._limit or (held > self._bytes and len(log) > 1):
            dropped = log.pop(0)
            held -= entry_bytes(dropped)
            base = Version(dropped.epoch, dropped.revision)
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

    def __init__(
        self,
        path: Path | str,
        log_limit: int = DEFAULT_LOG_LIMIT,
        log_bytes: int = DEFAULT_LOG_BYTES,
    ) -> None:
        self.path = Path(path)
        self._limit = max(1, log_limit)
        self._bytes = log_bytes
        self._sizes: deque[tuple[int, int, int]] | None = None  # log: (revision, epoch, bytes)
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                os.fspath(self.path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before the first table
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise FatalError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            self._db.executescript(_SCHEMA)
            if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                self._db.execute("VACUUM")  # a store made before: takes the setting once
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
            self._trim(db, entries)
        self._release()

    def _trim(self, db: sqlite3.Connection, entries: Sequence[Entry]) -> None:
        """Drop the oldest log entries beyond ``log_limit`` entries or ``log_bytes``."""
        sizes = self._sizes
        if sizes is None:
            rows = db.execute("SELECT revision, epoch, length(changes) FROM log ORDER BY revision")
            sizes = deque((int(r), int(e), int(b)) for r, e, b in rows)
        else:
            sizes.extend((e.revision, e.epoch, entry_bytes(e)) for e in entries)
        held = sum(b for _, _, b in sizes)
        cutoff: tuple[int, int] | None = None
        while len(sizes) > self._limit or (held > self._bytes and len(sizes) > 1):
            revision, epoch, size = sizes.popleft()
            held -= size
            cutoff = (revision, epoch)
        if cutoff is not None:
            db.execute("DELETE FROM log WHERE revision <= ?", (cutoff[0],))
            db.execute("UPDATE meta SET base_revision = ?, base_epoch = ?", cutoff)
        self._sizes = sizes

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
        self._sizes = deque()
        self._release(always=True)
        with self._guard("checkpoint"):
            # The install went through the WAL whole: write it back and empty the WAL now.
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

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

    @property
    def disk_bytes(self) -> int:
        """The store's size on disk: the database file and its WAL."""
        files = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    # -- internals ---------------------------------------------------------------------------

    def _release(self, *, always: bool = False) -> None:
        """Give free pages back to the file system once they are a large share of the file
        (or ``always``): pages freed by trimming the log are reused by the next writes, so
        this runs only after a large trim or an install."""
        with self._guard("vacuum"):
            db = self._conn()
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            if free and (always or free > pages * FREE_SHARE):
                db.execute("PRAGMA incremental_vacuum")

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
                self._sizes = None  # read again from the log as committed
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
