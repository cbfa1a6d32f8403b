"""CRC on the in-memory bus: synchronous writes wait for every standby, a standby reads the last
checkpoint after the writer dies and takes over, joiners get the content and the directory by
state transfer (also under load and when the sender dies), and junk is dropped and counted."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.checkpoint import CheckpointService, Role, wire
from haos.cluster.dss.checkpoint.replica import (
    AckTracker,
    Close,
    Content,
    Directory,
    DirEvent,
    DirSnapshot,
    HolderChange,
    Members,
    Open,
    Section,
)
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.wire import Envelope, Service, WireError
from haos.errors import UnavailableError, UsageError
from haoslab.fakes.localnet import LocalNet, garble, inject

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0
Net = LocalNet[CheckpointService]


def writes_from(net: Net, node: int, writer: int) -> int:
    """WRITE messages from ``writer`` that ``node``'s service has been handed."""
    return sum(
        1
        for m in net.taps[node].messages(writer)
        if envelope.decode(m.payload).kind == wire.Kind.WRITE
    )


def test_a_sync_write_is_stored_by_every_standby_when_it_returns() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            standbys = [await b.open("db"), await c.open("db")]
            assert active.replicas == (2, 3)
            for i in range(20):
                await active.write("rows", f"version {i}".encode())
                assert [s.read("rows") for s in standbys] == [f"version {i}".encode()] * 2

    asyncio.run(go())


def test_a_sync_write_waits_for_a_slow_standby_and_an_async_one_does_not() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            fast, slow = await b.open("db"), await c.open("db")
            net.taps[3].hold()  # node 3's CRC stalls
            write = asyncio.create_task(active.write("rows", b"v1"))
            # The writer applied its own write and node 2 stored it, but node 3 has not:
            await net.wait_for(lambda: fast.read("rows") == b"v1" and writes_from(net, 1, 1) == 1)
            assert active.read("rows") == b"v1" and not write.done()
            await active.write("rows", b"v2", sync=False)  # returns once sent
            assert slow.read("rows") is None
            net.taps[3].release()
            async with asyncio.timeout(DEADLINE):
                await write
            assert slow.read("rows") in (b"v1", b"v2")
            await net.wait_for(lambda: slow.read("rows") == b"v2")

    asyncio.run(go())


def test_a_sync_write_stops_waiting_for_a_standby_that_dies() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            await b.open("db")
            await c.open("db")
            net.taps[3].hold()
            write = asyncio.create_task(active.write("rows", b"v1"))
            await net.wait_for(lambda: writes_from(net, 1, 1) == 1)
            assert not write.done()
            net.crash(3)
            async with asyncio.timeout(DEADLINE):
                await write
            assert active.replicas == (2,)

    asyncio.run(go())


def test_the_standby_reads_the_last_checkpoint_after_the_writer_dies_and_takes_over() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            standby = await b.open("db")
            for i in range(10):
                await active.write(f"s{i % 3}", f"{i}".encode(), sync=i % 2 == 0)
            await active.delete("s0")
            net.crash(1)
            await net.wait_for(lambda: standby.replicas == (2,) and 1 not in a_holders(b))
            assert standby.sections() == {"s1": b"7", "s2": b"8"}
            await standby.set_role(Role.ACTIVE)  # take-over: it read the checkpoint, now writes
            new_standby = await c.open("db")
            assert new_standby.sections() == {"s1": b"7", "s2": b"8"}
            await standby.write("s1", b"after take-over")
            assert new_standby.read("s1") == b"after take-over"
            assert standby.replicas == (3,)

    asyncio.run(go())


def a_holders(service: CheckpointService, name: str = "db") -> dict[int, Role]:
    return dict(service.directory.holders.get(name, {}))


def test_a_later_standby_gets_the_content_by_state_transfer_while_writes_race() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE)
            await b.open("db")
            for i in range(5):
                await active.write(f"s{i}", b"before")

            async def churn() -> None:
                for i in range(60):
                    await active.write(f"s{i % 5}", f"{i}".encode(), sync=i % 3 == 0)
                    await asyncio.sleep(0)  # let the open land mid-stream (not a synchronisation)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(churn())
                c = await net.start(3)  # a joiner of the group: the directory comes by transfer
                late = await c.open("db")
            await active.write("s0", b"final")  # sync: node 3 is a standby now, so it waits
            assert late.read("s0") == b"final"
            assert late.sections() == active.sections() == (await b.open("db")).sections()

    asyncio.run(go())


def test_a_standby_opening_gets_the_content_even_if_the_sender_dies_first() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            standby = await b.open("db")
            await active.write("s", b"kept")
            net.taps[1].hold()  # node 1 (the lowest holder, who would send the content) stalls
            opening = asyncio.create_task(c.open("db"))
            await net.wait_for(lambda: 3 in a_holders(b))
            net.crash(1)  # ...and dies before it sent anything
            async with asyncio.timeout(DEADLINE):
                late = await opening
            assert late.read("s") == b"kept" == standby.read("s")

    asyncio.run(go())


def test_a_writer_joining_later_waits_for_the_standbys_it_learned_of_by_transfer() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            (b,) = await net.start_all(2)
            standby = await b.open("db")
            a = await net.start(1)
            active = await a.open("db", Role.ACTIVE)
            assert active.replicas == (2,)
            await active.write("s", b"x")
            assert standby.read("s") == b"x"

    asyncio.run(go())


def test_closing_removes_the_holder_and_the_content_goes_with_the_last_one() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE)
            standby = await b.open("db")
            await active.write("s", b"x")
            await standby.close()
            await net.wait_for(lambda: active.replicas == ())
            with pytest.raises(UsageError):
                standby.read("s")
            await active.write("s", b"y")  # nobody to wait for
            await active.close()
            await net.wait_for(lambda: "db" not in b.directory.holders)
            fresh = await b.open("db")
            assert fresh.sections() == {}

    asyncio.run(go())


def test_closing_the_service_fails_a_waiting_write() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("db", Role.ACTIVE)
            await b.open("db")
            net.taps[2].hold()
            write = asyncio.create_task(active.write("s", b"x"))
            await net.wait_for(lambda: writes_from(net, 1, 1) == 1)
            await a.close()
            with pytest.raises(UnavailableError, match="closed"):
                await write
            net.taps[2].release()

    asyncio.run(go())


def test_directory_and_ack_rules() -> None:
    d = Directory()
    assert d.apply(DirEvent(0, Members((1, 2, 3)))) == []
    assert d.apply(DirEvent(1, Open("db", Role.ACTIVE))) == [HolderChange("db", (1,), (1,))]
    d.apply(DirEvent(2, Open("db", Role.STANDBY)))
    assert d.apply(DirEvent(2, Open("db", Role.STANDBY))) == []  # again: no change
    d.apply(DirEvent(3, Open("db", Role.STANDBY)))
    assert d.standbys("db") == {2, 3}
    assert d.apply(DirEvent(0, Members((1, 2)))) == [HolderChange("db", (1, 2), (), (3,))]
    d.apply(DirEvent(1, Close("db")))
    d.apply(DirEvent(2, Close("db")))
    assert d.holders == {}
    acks = AckTracker()
    assert acks.expect(7, "db", []) is True
    assert acks.expect(8, "db", [2, 3]) is False
    assert acks.ack(8, 2) is False and acks.ack(8, 9) is False
    assert acks.left("other", [3]) == [] and acks.left("db", [3]) == [8]
    d2 = Directory()
    d2.apply(DirEvent(0, Members((1, 2))))
    d2.apply(DirEvent(1, Open("db", Role.ACTIVE)))
    merged = d2.merge(DirSnapshot((1, 2), (("db", ((2, Role.STANDBY), (5, Role.STANDBY))),)))
    assert merged == [HolderChange("db", (1, 2), (2,))]  # 5 is not a member: dropped


def _valid() -> list[bytes]:
    content = Content(4, (("a", Section(b"x", 3)), ("b", Section(b"", 4))))
    msgs: list[wire.Msg] = [
        wire.OpenMsg("db", Role.STANDBY),
        wire.CloseMsg("db"),
        wire.WriteMsg(5, "db", "a", b"data", True),
        wire.WriteMsg(6, "db", "a", None, False),
        wire.AckMsg(2, 5, "db"),
        wire.ContentMsg("db", Offer(((2, 0),), (1,)), content),
        wire.SyncMsg(Offer(((2, 1),), (1,)), DirSnapshot((1, 2), (("db", ((1, Role.ACTIVE),)),))),
        wire.DropMsg(9, 2, "db"),
        wire.SyncedMsg("db"),
    ]
    return [envelope.encode(Envelope(Service.CRC, *wire.encode(m))) for m in msgs]


def is_malformed(data: bytes) -> bool:
    try:
        env = envelope.decode(data, expect=Service.CRC)
        wire.decode(env.kind, env.body)
    except WireError:
        return True
    return False


JUNK = st.one_of(
    st.binary(max_size=80),
    st.builds(
        garble,
        st.sampled_from(_valid()),
        st.integers(0, 3),
        st.integers(0, 999),
        st.integers(0, 255),
    ),
)
BENIGN = ("unexpected-write", "unexpected-content", "unexpected-sync")


@settings(max_examples=150, deadline=None)
@given(st.lists(JUNK, min_size=1, max_size=6))
def test_junk_is_dropped_and_counted_and_the_service_keeps_working(junk: list[bytes]) -> None:
    token = uuid.uuid4().bytes

    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b = await net.start_all(1, 2)
            active = await a.open("probe", Role.ACTIVE)
            standby = await b.open("probe")
            for data in junk:
                inject(net, 1, data)
            await active.write("s", token)
            assert standby.read("s") == token
            malformed = sum(map(is_malformed, junk))
            assert b.drops.total - sum(b.drops.counts[r] for r in BENIGN) == malformed
            assert b.drops.counts["handler-error"] == 0

    asyncio.run(go())


def test_after_a_partition_heals_replicas_of_both_sides_converge() -> None:
    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            s2, s3 = await b.open("db"), await c.open("db")
            await active.write("common", b"before")
            net.bus.partition([[1, 2], [3]])
            await net.wait_for(lambda: s3.replicas == (3,) and active.replicas == (2,))
            await active.write("left", b"l")
            await s3.set_role(Role.ACTIVE)  # the isolated side promotes its standby
            await s3.write("right", b"r")
            net.bus.heal()
            expected = {"common": b"before", "left": b"l", "right": b"r"}
            await net.wait_for(
                lambda: active.sections() == s2.sections() == s3.sections() == expected
            )
            await net.wait_for(lambda: a.directory.holders == c.directory.holders)

    asyncio.run(go())


def test_a_member_that_booted_alone_is_settled_only_once_the_other_side_merged() -> None:
    """A restarted node founds an empty directory while alone; when it meets the nodes that
    hold a checkpoint it is not settled until their directory reached it, and then it sees
    the checkpoint and gets its content (not a new, empty one) when it opens it."""

    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            net.bus.partition([[1], [2, 3]])  # node 1 will boot alone
            b, c = await net.start_all(2, 3)
            active, _ = await b.open("crim", Role.ACTIVE), await c.open("crim")
            await active.write("state", b"seq 194")
            a = await net.start(1)
            assert a.settled and "crim" not in a.directory.holders  # founded, alone
            # The membership service may see 2 and 3 before this group does.
            waiting = asyncio.create_task(a.wait_settled(covering=(1, 2, 3)))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            net.taps[2].hold()  # the other side is slow to react to the merge
            net.taps[3].hold()
            net.bus.heal()
            await net.wait_for(lambda: bool(net.taps[1].views()) and
                               net.taps[1].views()[-1].members == (1, 2, 3))  # fmt: skip
            assert not a.settled
            await asyncio.sleep(0.1)
            assert not waiting.done()  # an open now would have founded an empty "crim"
            net.taps[2].release()
            net.taps[3].release()
            await asyncio.wait_for(waiting, DEADLINE)
            assert set(a.directory.holders["crim"]) == {2, 3}
            mine = await a.open("crim", Role.ACTIVE)
            assert mine.read("state") == b"seq 194"
            # A fresh joiner holds nothing: its NEED settles the others at once.
            net.taps[2].hold()
            d = await net.start(4)
            await net.wait_for(lambda: net.taps[1].views()[-1].members == (1, 2, 3, 4))
            await asyncio.wait_for(a.wait_settled(), DEADLINE)
            assert d.settled
            net.taps[2].release()

    asyncio.run(go())


def test_a_member_that_booted_alone_opens_only_once_the_other_side_merged() -> None:
    """Made vice-master at once on rejoining, a restarted node opens the availability
    checkpoint while the holders' directory has not reached it: the open waits for it and
    joins the real holders, so the active's synchronous writes go on being acknowledged.
    (Opened at once, it founded an empty replica of its own and dropped the active's writes,
    which then waited for its acknowledgement for ever.)"""

    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            net.bus.partition([[1], [2, 3]])
            b, c = await net.start_all(2, 3)
            active, _ = await b.open("crim", Role.ACTIVE), await c.open("crim")
            await active.write("state", b"seq 9")
            a = await net.start(1)
            net.taps[2].hold()  # the holders are slow to react to the merge
            net.taps[3].hold()
            net.bus.heal()
            await net.wait_for(lambda: net.taps[1].views()[-1].members == (1, 2, 3))
            opening = asyncio.create_task(a.open("crim", covering=(1, 2, 3)))
            await asyncio.sleep(0.1)
            assert not opening.done()
            net.taps[2].release()
            net.taps[3].release()
            mine = await asyncio.wait_for(opening, DEADLINE)
            assert mine.read("state") == b"seq 9"
            assert active.replicas == (1, 3)
            await asyncio.wait_for(active.write("state", b"seq 10"), DEADLINE)
            assert mine.read("state") == b"seq 10"
            assert a.drops.counts["unexpected-write"] == 0

    asyncio.run(go())


def test_a_need_carries_nothing() -> None:
    kind, body = wire.encode(wire.NeedMsg())
    assert (kind, body) == (wire.Kind.NEED, b"")
    assert wire.decode(kind, body) == wire.NeedMsg()
    with pytest.raises(WireError):
        wire.decode(kind, b"\x00")
