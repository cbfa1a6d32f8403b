"""Persistent checkpoints on the in-memory bus with an in-memory durable store: a synchronous
write returns only once saved, saves are serialised and coalesced (never an older state after
a newer one), asynchronous writes are saved in the background, a failed save fails the write,
and after every member stopped an ACTIVE open continues from the last save."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from haos.cluster.dss.checkpoint import CheckpointService, Role
from haos.cluster.dss.checkpoint.durable import Saver
from haos.cluster.dss.messaging.localnet import LocalNet
from haos.cluster.dss.transport import GroupTransport
from haos.errors import ConflictError, UnavailableError, UsageError
from haos.testing.clock import FakeClock, until
from haos.testing.durable import MemoryStore

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0
Net = LocalNet[CheckpointService]
Factory = Callable[[GroupTransport], CheckpointService]


def with_store(store: MemoryStore) -> Factory:
    def make(t: GroupTransport) -> CheckpointService:
        return CheckpointService(t, durable=store)

    return make


def test_a_sync_write_returns_only_once_a_save_covering_it_completed() -> None:
    store = MemoryStore()

    async def go() -> None:
        async with LocalNet(with_store(store)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            standby = await b.open("db")
            assert active.persistent and not standby.persistent
            store.hold()
            write = asyncio.create_task(active.write("rows", b"v1"))
            await net.wait_for(lambda: standby.read("rows") == b"v1")  # acknowledged...
            await until(lambda: store.in_flight == 1, DEADLINE)
            assert not write.done()  # ...but not yet durable
            store.release()
            await asyncio.wait_for(write, DEADLINE)
            assert store.saved["db"] == {"rows": b"v1"}
            await active.delete("rows")
            assert store.saved["db"] == {}

    asyncio.run(go())


def test_saves_are_serialised_and_coalesced_and_never_go_back() -> None:
    store = MemoryStore()

    async def go() -> None:
        async with LocalNet(with_store(store)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            await b.open("db")
            store.hold()
            first = asyncio.create_task(active.write("n", b"1"))
            await until(lambda: store.in_flight == 1, DEADLINE)
            later = [asyncio.create_task(active.write("n", str(i).encode())) for i in range(2, 9)]
            await asyncio.sleep(0.05)  # the later writes are acknowledged and wait for a save
            assert store.in_flight == 1 and not any(w.done() for w in [first, *later])
            store.release()
            await asyncio.wait_for(asyncio.gather(first, *later), DEADLINE)
            assert [s["n"] for _, s in store.history] == [b"1", b"8"]  # two saves for 8 writes
            assert active.saver is not None and active.saver.saves == 2

    asyncio.run(go())


def test_a_failed_save_fails_the_sync_write_and_the_next_save_carries_it() -> None:
    store = MemoryStore()

    async def go() -> None:
        async with LocalNet(with_store(store)) as net:
            (a,) = await net.start_all(1)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            store.fail = UnavailableError("the repository has no quorum")
            with pytest.raises(UnavailableError, match="no quorum"):
                await active.write("rows", b"v1")
            assert active.read("rows") == b"v1"  # replicated, not durable
            store.fail = None
            await active.write("other", b"x")
            assert store.saved["db"] == {"rows": b"v1", "other": b"x"}

    asyncio.run(go())


def test_async_writes_are_saved_in_the_background() -> None:
    store = MemoryStore()

    async def go() -> None:
        async with LocalNet(with_store(store)) as net:
            (a,) = await net.start_all(1)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            for i in range(10):
                await active.write("n", str(i).encode(), sync=False)
            await until(lambda: store.saved.get("db") == {"n": b"9"}, DEADLINE)
            versions = [int(s["n"]) for _, s in store.history]
            assert versions == sorted(versions)

    asyncio.run(go())


def test_after_every_member_stopped_an_active_open_continues_from_the_last_save() -> None:
    store = MemoryStore()

    async def go() -> None:
        async with LocalNet(with_store(store)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("counter", Role.ACTIVE, persistent=True)
            await b.open("counter", persistent=True)
            for i in range(1, 6):
                await active.write("value", str(i).encode())
            await active.write("gone", b"x")
            await active.delete("gone")
            await active.write("last", b"async", sync=False)
            await until(lambda: store.saved["counter"].get("last") == b"async", DEADLINE)
        # The whole cluster lost power: a new run, with only the durable store left.
        async with LocalNet(with_store(store)) as net:
            a, b, c = await net.start_all(1, 2, 3)
            early = await b.open("counter")  # a standby that opened first holds nothing yet
            active = await c.open("counter", Role.ACTIVE, persistent=True)
            assert active.sections() == {"value": b"5", "last": b"async"}
            assert early.sections() == active.sections()  # written to every holder
            late = await a.open("counter")
            assert late.read("value") == b"5"
            await active.write("value", b"6")
            assert store.saved["counter"]["value"] == b"6"
            # Held by a member of the view: an ACTIVE open takes the holders' state, not the
            # durable copy (which lags the asynchronous writes).
            store.saved["counter"] = {"value": b"stale"}
            await active.close()
            again = await a.open("counter", Role.ACTIVE, persistent=True)
            assert again.read("value") == b"6"
            await again.close(forget=True)
            assert "counter" not in store.saved

    asyncio.run(go())


def test_persistence_needs_a_durable_store() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            (a,) = await net.start_all(1)
            with pytest.raises(UsageError, match="no durable store"):
                await a.open("db", Role.ACTIVE, persistent=True)

    asyncio.run(go())


def test_the_saver_retries_after_a_cancelled_save_and_raises_a_failed_one() -> None:
    store = MemoryStore()
    state = {"version": 1}

    def snapshot() -> tuple[int, dict[str, bytes]]:
        return state["version"], {"v": str(state["version"]).encode()}

    async def go() -> None:
        saver = Saver(store, "db", snapshot)
        store.hold()
        first = asyncio.create_task(saver.through(1))
        await until(lambda: store.in_flight == 1)
        second = asyncio.create_task(saver.through(1))
        await asyncio.sleep(0)
        first.cancel()  # the writer that was saving goes away: the other one saves
        store.release()
        await asyncio.wait_for(second, DEADLINE)
        assert saver.saved == 1 and store.saved["db"] == {"v": b"1"}
        state["version"] = 2
        store.fail = ConflictError("lost a compare-and-swap")
        with pytest.raises(ConflictError):
            await saver.through(2)
        assert saver.saved == 1

    asyncio.run(go())


def test_a_persistent_sync_write_with_a_silent_standby_returns_once_dropped_and_saved() -> None:
    store = MemoryStore()
    clock = FakeClock()

    def make(t: GroupTransport) -> CheckpointService:
        return CheckpointService(t, durable=store, clock=clock, drop_after=0.25)

    async def go() -> None:
        async with LocalNet(make) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            standby = await b.open("db")
            net.taps[2].hold()
            write = asyncio.create_task(active.write("rows", b"v1"))
            await until(lambda: clock.waiting_until == 0.25, DEADLINE)
            assert "db" not in store.saved  # a save starts only once the replicas are settled
            clock.advance(0.25)
            await asyncio.wait_for(write, DEADLINE)
            assert store.saved["db"] == {"rows": b"v1"}
            assert a.directory.is_stale("db", 2)
            net.taps[2].release()
            await net.wait_for(lambda: standby.synced and not a.directory.stale)
            assert standby.read("rows") == b"v1"

    asyncio.run(go())
