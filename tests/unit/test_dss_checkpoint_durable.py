"""Persistent checkpoints on the in-memory bus with an in-memory durable store: a synchronous
write returns once saved, or once the bound passed with the durable copy behind (it catches up
in the background, never going back, with one warning per period behind); saves are
serialised and coalesced; a failing store degrades writes and recovers; a save the store
refuses fails the write; asynchronous writes are saved in the background; and after every
member stopped an ACTIVE open continues from the last save."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from haos.cluster.dss.checkpoint import CheckpointService, Role
from haos.cluster.dss.checkpoint.durable import RETRY_FIRST, RETRY_MAX, Saver
from haos.cluster.dss.transport import GroupTransport
from haos.errors import UnavailableError, UsageError
from haoslab.fakes.localnet import LocalNet
from haoslab.testing.clock import FakeClock, until
from haoslab.testing.durable import MemoryStore

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0
WAIT = 0.25  # the service's durable_wait in these tests
Net = LocalNet[CheckpointService]
Factory = Callable[[GroupTransport], CheckpointService]
BEHIND = "durable copy behind"
CAUGHT_UP = "caught up"


def with_store(store: MemoryStore, clock: FakeClock | None = None) -> Factory:
    """Services on ``store``, on a clock that tests advance (a fresh one if not given)."""
    on = clock or FakeClock()

    def make(t: GroupTransport) -> CheckpointService:
        return CheckpointService(t, durable=store, clock=on, durable_wait=WAIT)

    return make


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


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


def test_a_held_store_bounds_the_sync_write_and_the_copy_catches_up_without_going_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(with_store(store, clock)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            standby = await b.open("db")
            for period in (1, 2):
                store.hold()  # the repository stalls
                first = asyncio.create_task(active.write("n", f"{period}.0".encode()))
                await until(lambda: store.in_flight == 1 and clock.idle(1), DEADLINE)
                assert not first.done() and not active.durable_behind
                clock.advance(WAIT)
                await asyncio.wait_for(first, DEADLINE)  # within the bound, not the stall
                assert active.durable_behind and active.durable_unsaved == 1
                # The store is known stuck: later writes do not wait for it at all.
                for i in range(1, 5):
                    await asyncio.wait_for(active.write("n", f"{period}.{i}".encode()), DEADLINE)
                assert standby.read("n") == f"{period}.4".encode()  # the replicas hold them
                assert active.durable_behind and active.durable_unsaved == 5
                assert len(logged(caplog, BEHIND)) == period  # one warning per period
                clock.advance(1.0)
                store.release()
                await until(lambda: not active.durable_behind, DEADLINE)
                assert store.saved["db"] == {"n": f"{period}.4".encode()}
                assert active.durable_unsaved == 0
                assert len(logged(caplog, CAUGHT_UP)) == period
            # Every save carried a newer state than the one before: the copy never went back.
            saved = [tuple(map(int, s["n"].split(b"."))) for _, s in store.history]
            assert saved == sorted(saved) and len(saved) == len(set(saved))
            assert saved[-1] == (2, 4)
            # Caught up: a write waits for its save again.
            store.hold()
            write = asyncio.create_task(active.write("n", b"3.0"))
            await until(lambda: store.in_flight == 1 and clock.idle(1), DEADLINE)
            assert not write.done()
            store.release()
            await asyncio.wait_for(write, DEADLINE)
            assert store.saved["db"] == {"n": b"3.0"} and not active.durable_behind

    caplog.set_level(logging.INFO)
    asyncio.run(go())
    assert logged(caplog, BEHIND)[0] == (
        "checkpoint db: durable copy behind, the durable store did not save within 250 ms;"
        " 1 writes pending"
    )
    assert logged(caplog, CAUGHT_UP)[0] == "durable copy of checkpoint db caught up after 1.00 s"


def test_a_failing_store_degrades_the_writes_and_the_copy_recovers_in_the_background(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(with_store(store, clock)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            await b.open("db")
            store.fail = UnavailableError("the repository has no quorum")
            for i in range(3):  # none waits: the store said it is down
                await asyncio.wait_for(active.write("rows", str(i).encode()), DEADLINE)
            assert active.durable_behind and active.read("rows") == b"2"
            # Retried with a backoff, doubling up to its most.
            retries: list[float] = []
            tried = store.attempts
            for _ in range(6):
                await until(lambda: clock.idle(1), DEADLINE)
                assert clock.deadlines[0] is not None
                retries.append(round(clock.deadlines[0] - clock.t, 3))
                clock.advance(retries[-1])
                await until(lambda: store.attempts == tried + len(retries), DEADLINE)
            assert retries == [RETRY_FIRST, 0.2, 0.4, 0.8, RETRY_MAX, RETRY_MAX]
            assert active.durable_behind and "db" not in store.saved
            store.fail = None
            await until(lambda: clock.idle(1), DEADLINE)
            clock.advance(RETRY_MAX)
            await until(lambda: not active.durable_behind, DEADLINE)
            assert store.saved["db"] == {"rows": b"2"}
            await active.write("rows", b"3")  # waits for its save again
            assert store.saved["db"] == {"rows": b"3"}

    caplog.set_level(logging.INFO)
    asyncio.run(go())
    assert logged(caplog, BEHIND) == [
        "checkpoint db: durable copy behind, the last save failed (the repository has no"
        " quorum); 1 writes pending"
    ]
    assert len(logged(caplog, "saving the durable copy failed")) == 1
    assert len(logged(caplog, CAUGHT_UP)) == 1


def test_a_save_the_store_refuses_fails_the_write_and_a_later_one_is_saved() -> None:
    store = MemoryStore(limit=100)

    async def go() -> None:
        async with LocalNet(with_store(store)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            standby = await b.open("db")
            await active.write("small", b"x")
            with pytest.raises(UsageError, match="more than 100"):
                await asyncio.wait_for(active.write("big", b"y" * 200), DEADLINE)
            assert standby.read("big") == b"y" * 200  # replicated, never durable
            assert not active.durable_behind  # nothing was acknowledged without its save
            assert store.saved["db"] == {"small": b"x"}
            await active.delete("big")  # a later write that fits is saved
            assert store.saved["db"] == {"small": b"x"}
            await active.write("small", b"z")
            assert store.saved["db"] == {"small": b"z"} and not active.durable_behind

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


def test_the_saver_saves_in_the_background_whoever_waits_and_bounds_the_wait() -> None:
    store = MemoryStore()
    clock = FakeClock()
    state = {"version": 1}

    def snapshot() -> tuple[int, dict[str, bytes]]:
        return state["version"], {"v": str(state["version"]).encode()}

    async def go() -> None:
        async with asyncio.TaskGroup() as group:

            def spawn(coro: Coroutine[Any, Any, None]) -> None:
                group.create_task(coro)

            saver = Saver(store, "db", snapshot, clock=clock, spawn=spawn, wait=WAIT)
            store.hold()
            first = asyncio.create_task(saver.through(1, clock.now() + 10.0))
            await until(lambda: store.in_flight == 1)
            second = asyncio.create_task(saver.through(1, clock.now() + 10.0))
            await asyncio.sleep(0)
            first.cancel()  # a writer that goes away does not take the save with it
            store.release()
            assert await asyncio.wait_for(second, DEADLINE)
            assert saver.saved == 1 and store.saved["db"] == {"v": b"1"}
            # The save in flight bounds the wait, whatever the waiter's own deadline.
            store.hold()
            state["version"] = 2
            late = asyncio.create_task(saver.through(2, clock.now() + 10.0))
            await until(lambda: store.in_flight == 1 and clock.idle(1))
            clock.advance(WAIT)
            assert not await asyncio.wait_for(late, DEADLINE)
            assert saver.behind and not await saver.through(2, clock.now() + 10.0)
            store.release()
            await until(lambda: not saver.behind)
            assert saver.saved == 2 and saver.saves == 2

    asyncio.run(go())


def test_a_persistent_sync_write_with_a_silent_standby_is_saved_while_it_waits() -> None:
    store = MemoryStore()
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(with_store(store, clock)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            standby = await b.open("db")
            net.taps[2].hold()
            write = asyncio.create_task(active.write("rows", b"v1"))
            await until(lambda: clock.waiting_until == 0.25, DEADLINE)
            await until(lambda: "db" in store.saved, DEADLINE)  # saved while it waits
            assert not write.done()
            clock.advance(0.25)
            await asyncio.wait_for(write, DEADLINE)
            assert store.saved["db"] == {"rows": b"v1"} and not active.durable_behind
            assert a.directory.is_stale("db", 2)
            net.taps[2].release()
            await net.wait_for(lambda: standby.synced and not a.directory.stale)
            assert standby.read("rows") == b"v1"

    asyncio.run(go())


def test_a_silent_standby_and_a_stalled_store_together_cost_one_bound() -> None:
    """The node of the repository's sequencer holds a standby too: when its daemon stops,
    the drop and the durable wait run on the same clock, from the write's delivery."""
    store = MemoryStore()
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(with_store(store, clock)) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE, persistent=True)
            await b.open("db")
            net.taps[2].hold()
            store.hold()
            write = asyncio.create_task(active.write("rows", b"v1"))
            await until(lambda: clock.waiting_until == 0.25 and store.in_flight == 1, DEADLINE)
            clock.advance(0.25)  # one bound: the standby is dropped and the save not awaited
            await asyncio.wait_for(write, DEADLINE)
            assert clock.t == 0.25 and active.durable_behind
            store.release()
            await until(lambda: not active.durable_behind, DEADLINE)
            net.taps[2].release()

    asyncio.run(go())
