"""A slow standby degrades a checkpoint, it does not stall it: a synchronous write drops a
standby that has not acknowledged it within the bound (on a fake clock here), every member
marks that replica stale at the same point of the order, the stale replica resynchronises
once it runs again, and until then it can neither be read nor take over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.checkpoint import CheckpointService, Role, wire
from haos.cluster.dss.checkpoint.replica import (
    Close,
    Directory,
    DirEvent,
    DirSnapshot,
    Drop,
    HolderChange,
    Members,
    Open,
    Synced,
)
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.transport import GroupTransport, Message, TransportEvent
from haos.errors import UnavailableError, UsageError
from haoslab.fakes.localnet import LocalNet
from haoslab.testing.clock import FakeClock, until

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0
BOUND = 0.25
Net = LocalNet[CheckpointService]
Factory = Callable[[GroupTransport], CheckpointService]


def on_clock(clock: FakeClock) -> Factory:
    def make(t: GroupTransport) -> CheckpointService:
        return CheckpointService(t, clock=clock, drop_after=BOUND)

    return make


def kind_of(event: TransportEvent) -> wire.Kind | None:
    if isinstance(event, Message):
        return wire.Kind(envelope.decode(event.payload).kind)
    return None


async def dropped_write(net: Net, clock: FakeClock, active_node: int = 1) -> asyncio.Task[None]:
    """Start a sync write while node 3 is held; return it once its bound is being waited."""
    active = net[active_node]._handles["db"]
    write = asyncio.create_task(active.write("rows", b"v1"))
    deadline = clock.t + BOUND
    await until(lambda: clock.waiting_until == deadline, DEADLINE)
    return write


def test_a_standby_that_never_acknowledges_is_dropped_within_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(100.0)

    async def go() -> None:
        async with LocalNet(on_clock(clock)) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            fast, slow = await b.open("db"), await c.open("db")
            await active.write("rows", b"v0")
            net.taps[3].hold()  # node 3's daemon stops: a member and a holder, but silent
            write = await dropped_write(net, clock)
            assert fast.read("rows") == b"v1" and not write.done()
            clock.advance(BOUND - 0.01)
            await asyncio.sleep(0.01)
            assert not write.done()  # waits for node 3 up to the bound...
            clock.advance(0.01)
            await asyncio.wait_for(write, DEADLINE)  # ...and no longer: node 3 is dropped
            assert clock.t == 100.0 + BOUND
            for service in (a, b):  # every running member knows node 3's replica is stale
                assert service.directory.is_stale("db", 3)
                assert service.directory.synced("db") == {1, 2}
            assert active.replicas == (2,) and fast.synced
            for i in range(5):  # later writes wait for node 2 only, without the clock moving
                await asyncio.wait_for(active.write("rows", f"v{i + 2}".encode()), DEADLINE)
            assert slow.synced  # node 3 has not run since: it does not know yet
            # Node 3 runs again: it learns it is stale before the writes after its drop...
            seen: list[tuple[wire.Kind | None, bool]] = []
            net.taps[3].on_resume = lambda e: seen.append((kind_of(e), slow.synced))
            net.taps[3].release()
            await net.wait_for(lambda: slow.synced and not a.directory.stale)
            first_stale = next(i for i, (_, synced) in enumerate(seen) if not synced)
            assert seen[first_stale][0] is wire.Kind.DROP
            with_drop = [k for k, _ in seen]
            assert wire.Kind.CONTENT in with_drop[first_stale:]
            # ...then holds the latest state, and synchronous writes wait for it again.
            assert slow.read("rows") == b"v6" == active.read("rows")
            assert list(active.replicas) == [2, 3]
            assert not b.directory.stale and not c.directory.stale
            net.taps[3].hold()
            write = await dropped_write(net, clock)
            assert slow.read("rows") == b"v6"  # it is waited for again
            net.taps[3].release()
            await asyncio.wait_for(write, DEADLINE)
            assert slow.read("rows") == b"v1"

    with caplog.at_level(logging.WARNING):
        asyncio.run(go())
    drops = [r for r in caplog.records if "dropped from the replica set" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]
    text = drops[0].getMessage()
    assert "checkpoint db" in text and "node 3" in text and "250 ms" in text


def test_a_stale_replica_is_unreadable_until_it_resynchronised() -> None:
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(on_clock(clock)) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            await b.open("db")
            slow = await c.open("db")
            net.taps[3].hold()
            write = await dropped_write(net, clock)
            clock.advance(BOUND)
            await asyncio.wait_for(write, DEADLINE)
            tap = net.taps[3]

            def pause_after_drop(event: TransportEvent) -> None:
                if kind_of(event) is wire.Kind.DROP:
                    tap.hold()  # node 3 stalls again right after it handled its drop

            tap.on_resume = pause_after_drop
            tap.release()
            await net.wait_for(lambda: c.directory.is_stale("db", 3))
            assert not slow.synced
            with pytest.raises(UnavailableError, match="stale"):
                slow.read("rows")
            with pytest.raises(UnavailableError, match="stale"):
                await slow.write("rows", b"from a stale replica")
            with pytest.raises(UnavailableError, match="stale"):
                slow.sections()
            assert c.directory.synced("db") == {1, 2}
            tap.on_resume = None
            tap.release()  # the fresh copy the writer sent when it handled the drop is next
            await net.wait_for(lambda: slow.synced)
            assert slow.read("rows") == b"v1"
            assert active.replicas == (2, 3)

    asyncio.run(go())


def test_a_stale_replica_cannot_take_over_when_no_fresh_holder_is_left() -> None:
    """Node 3 is dropped; the holders that would have resynchronised it die first: its copy
    may lack acknowledged writes, so it refuses to be read or to take over."""
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(on_clock(clock)) as net:
            a, b, c, d = await net.start_all(1, 2, 3, 4)
            active = await b.open("db", Role.ACTIVE)
            other = await a.open("db")
            slow = await c.open("db")
            await active.write("rows", b"v0")
            net.taps[3].hold()
            write = await dropped_write(net, clock, active_node=2)
            assert other.read("rows") == b"v1"
            net.taps[1].hold()  # node 1, which would send node 3 its fresh copy, stalls...
            clock.advance(BOUND)
            await asyncio.wait_for(write, DEADLINE)
            net.crash(1)  # ...and dies, and so does the writer
            net.crash(2)
            net.taps[3].release()
            await net.wait_for(lambda: set(c.directory.holders.get("db", {})) == {3})
            assert c.directory.is_stale("db", 3) and not slow.synced
            with pytest.raises(UnavailableError, match="no holder that is not stale"):
                await asyncio.wait_for(slow.set_role(Role.ACTIVE), DEADLINE)
            assert slow.role is Role.STANDBY
            with pytest.raises(UnavailableError, match="stale"):
                slow.read("rows")
            # Another member opening it now cannot take over either: nobody has a fresh copy.
            with pytest.raises(UnavailableError, match="stale"):
                await asyncio.wait_for(d.open("db", Role.ACTIVE), DEADLINE)
            await net.wait_for(lambda: 4 not in c.directory.holders.get("db", {}))

    asyncio.run(go())


def test_a_take_over_waits_until_the_replica_holds_every_write_ordered_before_it() -> None:
    """Promoted while it has not run since it was dropped, a standby still believes itself
    fresh; the take-over returns only once its own OPEN came back through the order, and by
    then it has learned of the drop, resynchronised and holds the last write."""
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(on_clock(clock)) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            await b.open("db")
            slow = await c.open("db")
            await active.write("rows", b"v0")
            net.taps[3].hold()
            write = await dropped_write(net, clock)
            clock.advance(BOUND)
            await asyncio.wait_for(write, DEADLINE)
            await active.write("rows", b"v2")
            assert slow.synced and slow.read("rows") == b"v0"  # not run yet: old data
            take_over = asyncio.create_task(slow.set_role(Role.ACTIVE))
            await asyncio.sleep(0.05)
            assert not take_over.done()
            net.taps[3].release()
            await asyncio.wait_for(take_over, DEADLINE)
            assert slow.synced and slow.role is Role.ACTIVE
            assert slow.read("rows") == b"v2"
            assert c.directory.role("db", 3) is Role.ACTIVE and not c.directory.stale

    asyncio.run(go())


def test_a_sync_write_fails_naming_the_silent_standby_when_not_even_its_drop_is_delivered() -> None:
    async def go() -> None:
        factory = lambda t: CheckpointService(t, ack_timeout=0.5, drop_after=0.05)  # noqa: E731
        async with LocalNet(factory) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE)
            await b.open("db")
            net.taps[2].hold()
            write = asyncio.create_task(active.write("rows", b"x"))
            await net.wait_for(lambda: any(p.delivered_at for p in a._writes.pending.values()))
            net.taps[1].hold()  # the writer's own deliveries stop: its DROP never comes back
            with pytest.raises(
                UnavailableError, match=r"db/rows: no acknowledgement from node\(s\) \[2\]"
            ):
                await write
            net.taps[1].release()
            net.taps[2].release()
            await asyncio.wait_for(active.write("rows", b"y"), DEADLINE)

    asyncio.run(go())


def test_the_bound_must_be_under_the_write_deadline() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            (a,) = await net.start_all(1)
            with pytest.raises(UsageError, match="drop_after"):
                CheckpointService(net.taps[1], drop_after=20.0)
            with pytest.raises(UsageError, match="drop_after"):
                CheckpointService(net.taps[1], drop_after=0)
            del a

    asyncio.run(go())


def test_directory_rules_for_stale_replicas() -> None:
    d = Directory()
    d.apply(DirEvent(0, Members((1, 2, 3, 4))))
    d.apply(DirEvent(1, Open("db", Role.ACTIVE)))
    d.apply(DirEvent(2, Open("db", Role.STANDBY)))
    d.apply(DirEvent(3, Open("db", Role.STANDBY)))
    assert d.apply(DirEvent(4, Drop("db", 2))) == []  # not from a holder
    assert d.apply(DirEvent(1, Drop("db", 1))) == []  # the active is never dropped
    assert d.apply(DirEvent(1, Drop("db", 2))) == [HolderChange("db", (1, 2, 3), stale=(2,))]
    assert d.apply(DirEvent(3, Drop("db", 2))) == []  # already stale: one resync is enough
    assert d.standbys("db") == {3} and d.synced("db") == {1, 3}
    assert d.snapshot().stale == (("db", (2,)),)
    d.apply(DirEvent(2, Open("db", Role.ACTIVE)))  # a role change does not make it fresh
    assert d.is_stale("db", 2)
    assert d.apply(DirEvent(2, Synced("db"))) == [] and not d.stale
    d.apply(DirEvent(1, Drop("db", 3)))
    d.apply(DirEvent(0, Members((1, 2, 4))))  # a stale holder that leaves is forgotten
    assert not d.stale
    d.apply(DirEvent(1, Drop("db", 9)))  # not a holder: nothing
    assert not d.stale
    # Every holder stale: a new holder has nobody to copy from, so it is stale too.
    d2 = Directory()
    d2.apply(DirEvent(0, Members((1, 2, 3))))
    d2.apply(DirEvent(1, Open("db", Role.ACTIVE)))
    d2.apply(DirEvent(2, Open("db", Role.STANDBY)))
    d2.apply(DirEvent(1, Drop("db", 2)))
    d2.apply(DirEvent(1, Close("db")))
    assert d2.synced("db") == set()
    d2.apply(DirEvent(3, Open("db", Role.ACTIVE)))
    assert d2.stale == {"db": {2, 3}}
    copy = Directory()
    copy.install(d2.snapshot())
    assert copy.stale == d2.stale and copy.holders == d2.holders


def test_drop_synced_and_stale_holders_on_the_wire() -> None:
    for msg in (wire.DropMsg(7, 3, "db"), wire.SyncedMsg("db")):
        assert wire.decode(*wire.encode(msg)) == msg
    snap = DirSnapshot(
        (1, 2, 3),
        (("a", ((1, Role.ACTIVE), (2, Role.STANDBY))), ("b", ((3, Role.STANDBY),))),
        (("a", (2,)),),
    )
    sync = wire.SyncMsg(Offer(((3, 0),), (1,)), snap)
    assert wire.decode(*wire.encode(sync)) == sync


def test_a_standby_dropped_while_still_opening_and_the_one_that_would_fill_it_both_resync() -> None:
    """Node 1 (a standby, the lowest holder: it sends joiners their copy) stalls while node 3
    opens; the writer's next write drops both. Each gets a copy taken at a point of the order
    it can place (node 3 keeps waiting for the one of its open, or takes a later one), and
    both end fresh with the latest state."""
    clock = FakeClock()

    async def go() -> None:
        async with LocalNet(on_clock(clock)) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await b.open("db", Role.ACTIVE)
            first = await a.open("db")
            await active.write("rows", b"v0")
            net.taps[1].hold()
            opening = asyncio.create_task(c.open("db"))
            await net.wait_for(lambda: 3 in b.directory.holders.get("db", {}))
            write = await dropped_write(net, clock, active_node=2)
            assert not opening.done()
            clock.advance(BOUND)
            await asyncio.wait_for(write, DEADLINE)
            # Node 3 may be fresh again already: the writer (the lowest holder in sync once
            # node 1 was dropped) sent it a copy too.
            assert b.directory.is_stale("db", 1) and 1 not in active.replicas
            net.taps[1].release()
            late = await asyncio.wait_for(opening, DEADLINE)
            await net.wait_for(lambda: not b.directory.stale and first.synced and late.synced)
            assert first.read("rows") == late.read("rows") == b"v1"
            assert list(active.replicas) == [1, 3]
            await active.write("rows", b"v2")  # waits for both again
            assert first.read("rows") == late.read("rows") == b"v2"

    asyncio.run(go())
