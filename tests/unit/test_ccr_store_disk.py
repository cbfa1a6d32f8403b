"""The repository's store keeps its disk near the size of the data it holds: the change log is
bounded in bytes as well as entries (each entry repeats the values it wrote), pages freed by
trimming it or by installing a snapshot go back to the file system, and the WAL is cut back
after a snapshot install instead of staying as large as the snapshot."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from haos.cluster.dss.ccr.model import (
    EMPTY,
    MAX_VALUE_BYTES,
    Change,
    Entry,
    Image,
    Item,
    RequestId,
    Version,
    entry_bytes,
)
from haos.cluster.dss.ccr.state import KvState
from haos.cluster.dss.ccr.store import (
    DEFAULT_LOG_BYTES,
    JOURNAL_SIZE_LIMIT,
    MemoryStore,
    SqliteStore,
)

KiB = 1024
MiB = 1024 * KiB
KEYS = 80  # of MAX_VALUE_BYTES each: 20 MiB of values


def entry(revision: int, key: str, value: bytes) -> Entry:
    return Entry(revision, 1, RequestId(1, 1, revision), (Change(key, value),))


def fill(store: SqliteStore | MemoryStore, rounds: int) -> dict[str, bytes]:
    """Write every key ``rounds`` times; the values as they end."""
    values: dict[str, bytes] = {}
    revision = 0
    for _ in range(rounds):
        for k in range(KEYS):
            revision += 1
            values[f"/big/{k}"] = os.urandom(MAX_VALUE_BYTES)
            store.append([entry(revision, f"/big/{k}", values[f"/big/{k}"])])
    return values


def held(values: dict[str, bytes]) -> int:
    return sum(len(v) for v in values.values())


def test_a_store_of_rewritten_large_values_takes_little_more_disk_than_they_do(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "ccr.sqlite")
    values = fill(store, rounds=3)
    # Before the log was bounded in bytes it held 240 values beside the 80 (4.2 times).
    assert store.disk_bytes < 1.5 * held(values)
    durable = store.load()
    assert sum(entry_bytes(e) for e in durable.log) <= DEFAULT_LOG_BYTES
    assert durable.log[0].revision == durable.base.revision + 1  # the log continues its base
    assert {i.key: i.value for i in durable.image.items} == values
    store.close()


def test_a_snapshot_install_leaves_no_large_wal_and_no_free_pages(tmp_path: Path) -> None:
    sender = SqliteStore(tmp_path / "sender.sqlite")
    values = fill(sender, rounds=1)
    receiver = SqliteStore(tmp_path / "receiver.sqlite")
    receiver.append([entry(1, "/old", os.urandom(64 * KiB)) for _ in range(1)])
    image = Image(Version(1, KEYS), tuple(Item(k, v, 1) for k, v in sorted(values.items())))
    receiver.install(image)
    receiver.install(image)  # the second frees every page of the first
    wal = tmp_path / "receiver.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size <= JOURNAL_SIZE_LIMIT
    assert receiver.disk_bytes < 1.1 * held(values)
    assert receiver.disk_bytes < 1.5 * sender.disk_bytes
    assert {i.key: i.value for i in receiver.load().image.items} == values


def test_a_store_made_without_auto_vacuum_takes_it_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE x (a)")
    db.close()
    store = SqliteStore(path)
    assert store._conn().execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    store.close()


@pytest.mark.parametrize("log_bytes", [MiB, 2 * MiB])
def test_the_memory_store_and_the_copy_bound_their_log_in_bytes_too(log_bytes: int) -> None:
    store = MemoryStore(log_bytes=log_bytes)
    state = KvState(EMPTY, 1000, log_bytes)
    for revision in range(1, 41):
        e = entry(revision, f"/k/{revision % 4}", bytes(100 * KiB))
        store.append([e])
        state.append(e)
    log = store.load().log
    assert (
        sum(entry_bytes(e) for e in log) <= log_bytes < sum(entry_bytes(e) for e in log) + 101 * KiB
    )
    assert store.load().base.revision == log[0].revision - 1
    assert state.base == store.load().base
    assert state.entries_after(state.base.revision) == log
    # A copy loaded from a longer log keeps only what its bound allows.
    reloaded = KvState(store.load(), 1000, log_bytes // 2)
    assert reloaded.base.revision > store.load().base.revision
