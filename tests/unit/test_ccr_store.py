"""The CCR stores: SQLite (WAL, fsync per commit) and the in-memory one keep one contract."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss.ccr.model import (
    EMPTY,
    Change,
    Durable,
    Entry,
    Image,
    Item,
    RequestId,
    Version,
    content_hash,
)
from haos.cluster.dss.ccr.store import MemoryStore, SqliteStore, Store
from haos.errors import FatalError

REQ = RequestId(1, 2**63 + 5, 2**64 - 1)  # u64 ids beyond SQLite's signed range


def entry(revision: int, *changes: tuple[str, bytes | None], epoch: int = 1) -> Entry:
    return Entry(revision, epoch, REQ, tuple(Change(k, v) for k, v in changes))


def test_sqlite_store_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ccr.db")
    assert store.journal_mode == "wal"
    assert store.synchronous == 2  # FULL: the WAL is fsynced at every commit
    store.close()


def test_a_new_store_is_empty(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ccr.db")
    assert store.load() == EMPTY
    assert store.hash() == content_hash(0, [])
    store.close()


def test_everything_written_is_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ccr.db"
    store = SqliteStore(path)
    store.append([entry(1, ("/a", b"1"), ("/b", b"2")), entry(2, ("/a", None), epoch=3)])
    store.promise(7)
    before, hashed = store.load(), store.hash()
    store.close()

    again = SqliteStore(path)
    assert again.load() == before
    assert again.hash() == hashed
    assert before.image == Image(Version(3, 2), (Item("/b", b"2", 1),))
    assert before.promised_epoch == 7
    assert [e.request for e in before.log] == [REQ, REQ]
    again.close()


def test_an_append_that_returned_survives_the_process_being_killed(tmp_path: Path) -> None:
    path = tmp_path / "ccr.db"
    child = f"""
import os, signal, sys
from haos.cluster.dss.ccr.model import Change, Entry, RequestId
from haos.cluster.dss.ccr.store import SqliteStore
store = SqliteStore({str(path)!r})
store.append([Entry(1, 1, RequestId(1, 1, 1), (Change("/k", b"v"),))])
print("appended", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.stdout == "appended\n"
    assert proc.returncode == -9
    store = SqliteStore(path)
    assert store.load().image.items == (Item("/k", b"v", 1),)
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_an_append_that_fails_part_way_changes_nothing(tmp_path: Path, kind: str) -> None:
    store: Store = SqliteStore(tmp_path / "ccr.db") if kind == "sqlite" else MemoryStore()
    store.append([entry(1, ("/a", b"1"))])
    before = store.load()
    with pytest.raises(FatalError, match="does not follow"):
        store.append([entry(2, ("/a", b"2")), entry(4, ("/b", b"x"))])
    assert store.load() == before
    assert store.hash() == content_hash(1, before.image.items)
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_the_log_keeps_the_newest_entries_and_remembers_where_it_starts(
    tmp_path: Path, kind: str
) -> None:
    store: Store = (
        SqliteStore(tmp_path / "ccr.db", log_limit=3) if kind == "sqlite" else MemoryStore(3)
    )
    store.append([entry(r, (f"/k{r}", b"x"), epoch=r) for r in range(1, 6)])
    loaded = store.load()
    assert [e.revision for e in loaded.log] == [3, 4, 5]
    assert loaded.base == Version(2, 2)
    store.install(Image(Version(9, 40), (Item("/z", b"z", 40),)))
    loaded = store.load()
    assert (loaded.log, loaded.base, loaded.image.version) == ((), Version(9, 40), Version(9, 40))
    store.close()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ccr.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FatalError, match="cannot open"):
        SqliteStore(path)


def test_a_store_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ccr.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET format = 99")
    with pytest.raises(FatalError, match="format 99"):
        SqliteStore(path)


def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ccr.db")
    store.close()
    store.close()
    with pytest.raises(FatalError, match="closed"):
        store.load()


# -- the memory store is a faithful stand-in ------------------------------------------------

KEYS = st.sampled_from(["/a", "/a/b", "/b", "/c/d/e", "/ü/ñ"])
VALUES = st.one_of(st.none(), st.binary(max_size=8))
CHANGES = st.dictionaries(KEYS, VALUES, max_size=3)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(CHANGES, min_size=1, max_size=3)),
        st.tuples(st.just("install"), st.dictionaries(KEYS, st.binary(max_size=8), max_size=3)),
        st.tuples(st.just("promise"), st.integers(0, 20)),
    ),
    max_size=12,
)


def _run(store: Store, steps: list[tuple[str, object]]) -> Durable:
    epoch = 1
    for kind, arg in steps:
        revision = store.load().image.version.revision
        if kind == "append":
            assert isinstance(arg, list)
            store.append(
                [
                    Entry(
                        revision + i + 1,
                        epoch,
                        REQ,
                        tuple(Change(k, v) for k, v in sorted(c.items())),
                    )
                    for i, c in enumerate(arg)
                ]
            )
        elif kind == "install":
            assert isinstance(arg, dict)
            epoch += 1
            items = tuple(Item(k, v, revision + 1) for k, v in sorted(arg.items()))
            store.install(Image(Version(epoch, revision + 1), items))
        else:
            assert isinstance(arg, int)
            store.promise(arg)
    return store.load()


@settings(max_examples=60, deadline=None)
@given(STEPS)
def test_memory_and_sqlite_stores_end_up_the_same(steps: list[tuple[str, object]]) -> None:
    memory = MemoryStore(log_limit=4)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStore(Path(tmp) / "ccr.db", log_limit=4)
        assert _run(memory, steps) == _run(sqlite, steps)
        assert memory.hash() == sqlite.hash()
        loaded = sqlite.load()
        assert sqlite.hash() == content_hash(loaded.image.version.revision, loaded.image.items)
        sqlite.close()
