"""Large checkpoint sections on the in-memory bus, with CPG's bound on a message enforced: a
section of megabytes is written and read back on every standby, and reaches a joiner by state
transfer, in fragments that each stay far below the bound; a chunked write is visible all at
once or not at all (its writer dying midway leaves nothing behind); a section over the limit is
refused before anything is sent; malformed fragment streams are dropped and counted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.checkpoint import Checkpoint, CheckpointService, Role, wire
from haos.cluster.dss.checkpoint.fragments import FRAGMENT_BYTES, Assembler, split
from haos.cluster.dss.checkpoint.replica import Content, Section
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.transport import GroupTransport, TransportEvent
from haos.cluster.dss.wire import WireError
from haos.errors import UnavailableError, UsageError
from haos.limits import MAX_CHECKPOINT_SECTION, MiB
from haoslab.fakes.localnet import LocalNet, Tap
from haoslab.testing.clock import FakeClock, until

pytestmark = pytest.mark.timeout(120)
DEADLINE = 20.0
CPG_BOUND = 1 * MiB  # corosync's IPC bound on one CPG message
BOUND = 0.25  # drop_after


class Bounded:
    """A member's transport that refuses a message over CPG's bound, as corosync does, and
    can stop sending (its process is dying) after ``cut`` more fragments."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.largest = 0
        self.sent = 0
        self.cut: int | None = None

    @property
    def node_id(self) -> int:
        return self.tap.node_id

    async def send(self, payload: bytes) -> None:
        self.post(payload)

    def post(self, payload: bytes) -> None:
        if len(payload) > CPG_BOUND:
            raise UnavailableError(f"CS_ERR_TOO_BIG: a message of {len(payload)} bytes")
        if self.cut is not None:
            if self.cut == 0:
                return  # the process is dying: nothing more leaves it
            self.cut -= 1
        self.largest = max(self.largest, len(payload))
        self.sent += 1
        self.tap.post(payload)

    async def next_event(self) -> TransportEvent:
        return await self.tap.next_event()

    async def close(self) -> None:
        await self.tap.close()


class Cluster:
    def __init__(self) -> None:
        self.links: dict[int, Bounded] = {}
        self.net: LocalNet[CheckpointService] = LocalNet(self._make)

    def _make(self, transport: GroupTransport) -> CheckpointService:
        assert isinstance(transport, Tap)
        link = self.links[transport.node_id] = Bounded(transport)
        return CheckpointService(link)

    async def db(self, *nodes: int) -> tuple[Checkpoint, list[Checkpoint]]:
        """Starts ``nodes``; the first opens the checkpoint "db" as its active, the others as
        its standbys."""
        first, *others = await self.net.start_all(*nodes)
        active = await first.open("db", Role.ACTIVE)
        return active, [await s.open("db") for s in others]

    def largest(self) -> int:
        """The largest message any member sent."""
        return max(link.largest for link in self.links.values())


def run(body: Callable[[Cluster], Awaitable[None]]) -> None:
    async def go() -> None:
        c = Cluster()
        async with c.net:
            await body(c)

    asyncio.run(go())


def blob(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("size", [1 * MiB, 8 * MiB, MAX_CHECKPOINT_SECTION])
def test_a_large_sync_write_is_read_back_on_every_standby(size: int) -> None:
    async def body(c: Cluster) -> None:
        active, standbys = await c.db(1, 2, 3)
        data = blob(size)
        async with asyncio.timeout(DEADLINE):
            await active.write("state", data)
        # Synchronous: stored by every standby when it returns.
        assert [s.read("state") for s in standbys] == [data, data]
        assert active.read("state") == data
        assert c.largest() <= FRAGMENT_BYTES + 64

    run(body)


def test_a_joiner_gets_large_sections_by_state_transfer_in_fragments() -> None:
    async def body(c: Cluster) -> None:
        active, _ = await c.db(1, 2)
        sections = {f"s{i}": blob(3 * MiB + i) for i in range(3)}
        for name, data in sections.items():
            await active.write(name, data)
        joiner = await (await c.net.start(3)).open("db")
        assert joiner.sections() == sections
        assert c.largest() <= FRAGMENT_BYTES + 64

    run(body)


def test_a_chunked_write_whose_writer_dies_midway_is_applied_nowhere() -> None:
    async def body(c: Cluster) -> None:
        active, standbys = await c.db(1, 2, 3)
        await active.write("state", b"before")
        c.links[1].cut = 5  # 5 of the 16 fragments leave, then the writer dies
        write = asyncio.create_task(active.write("state", blob(4 * MiB)))
        await c.net.wait_for(lambda: c.links[1].cut == 0)
        c.net.crash(1)
        with pytest.raises(UnavailableError):
            async with asyncio.timeout(DEADLINE):
                await write
        await c.net.wait_for(lambda: all(s.replicas == (2, 3) for s in standbys))
        assert [s.read("state") for s in standbys] == [b"before", b"before"]
        # The survivors carry on: a take-over writes a large section again.
        await standbys[0].set_role(Role.ACTIVE)
        data = blob(2 * MiB)
        await standbys[0].write("state", data)
        assert standbys[1].read("state") == data

    run(body)


def test_a_section_over_the_limit_is_refused_before_anything_is_sent() -> None:
    async def body(c: Cluster) -> None:
        active, (standby,) = await c.db(1, 2)
        await active.write("state", b"kept")
        sent = c.links[1].sent
        with pytest.raises(UsageError, match=f"over the limit of {MAX_CHECKPOINT_SECTION}"):
            await active.write("state", bytes(MAX_CHECKPOINT_SECTION + 1))
        assert c.links[1].sent == sent
        assert standby.read("state") == b"kept"

    run(body)


def test_two_writers_fragments_interleave_and_both_arrive_whole() -> None:
    async def body(c: Cluster) -> None:
        a, b, s3 = await c.net.start_all(1, 2, 3)
        one, two = await a.open("one", Role.ACTIVE), await b.open("two", Role.ACTIVE)
        reader_one, reader_two = await s3.open("one"), await s3.open("two")
        d1, d2 = blob(3 * MiB), blob(3 * MiB + 7)
        await asyncio.gather(one.write("s", d1), two.write("s", d2))
        assert (reader_one.read("s"), reader_two.read("s")) == (d1, d2)

    run(body)


def fragment(msg_id: int, index: int, count: int, piece: bytes = b"x") -> wire.FragmentMsg:
    return wire.FragmentMsg(msg_id, index, count, wire.Kind.WRITE, piece)


@pytest.mark.parametrize(
    ("frags", "error"),
    [
        ([fragment(1, 1, 3)], "first fragment did not come"),
        ([fragment(1, 0, 3), fragment(1, 2, 3)], "expected fragment 1"),
        ([fragment(1, 0, 3), fragment(2, 1, 3)], "first fragment did not come"),
        ([fragment(1, 0, 3), fragment(2, 0, 3)], "message 1 was cut off"),
        ([fragment(1, 3, 3)], "index out of range"),
        ([wire.FragmentMsg(1, 0, 2, wire.Kind.FRAGMENT, b"")], "cannot be fragmented"),
        ([wire.FragmentMsg(1, 0, 2, 99, b"")], "cannot be fragmented"),
        ([fragment(1, 0, 3, bytes(2 * MiB))], "over 1048576"),
        ([fragment(1, 0, 3, bytes(MiB)), fragment(1, 1, 3, bytes(MiB))], "a message over"),
    ],
)
def test_a_fragment_that_does_not_continue_its_message_is_refused(
    frags: list[wire.FragmentMsg], error: str
) -> None:
    assembler = Assembler(max_message=MiB + 10)
    with pytest.raises(WireError, match=error):
        for frag in frags:
            assembler.add(7, frag)
    assert assembler.held == 0  # what the sender sent so far is forgotten


def test_fragments_round_trip_through_the_wire_and_reassemble() -> None:
    data = blob(FRAGMENT_BYTES * 2 + 5)
    kind, parts = wire.encode_parts(wire.WriteMsg(9, "db", "s", data, True))
    assembler = Assembler()
    bodies = list(split(4, kind, parts))
    assert len(bodies) == 3
    whole = None
    for body in bodies:
        decoded = wire.decode(wire.Kind.FRAGMENT, body)
        assert isinstance(decoded, wire.FragmentMsg)
        whole = assembler.add(2, decoded)
    assert whole is not None and whole[0] == wire.Kind.WRITE
    assert wire.decode(*whole) == wire.WriteMsg(9, "db", "s", data, True)
    # The hand-made bodies are those of the one-message encoding.
    assert b"".join(parts) == wire.encode(wire.WriteMsg(9, "db", "s", data, True))[1]


def test_a_message_cut_off_by_another_from_its_sender_is_dropped_and_counted() -> None:
    async def body(c: Cluster) -> None:
        active, (standby,) = await c.db(1, 2)
        await active.write("s", b"kept")
        head = wire.encode(fragment(77, 0, 2))[1]
        c.links[1].post(envelope.encode(envelope.Envelope(envelope.Service.CRC, 10, head)))
        await active.write("s", b"next")
        assert standby.read("s") == b"next"
        assert c.net[2].drops.counts.get("cut-off") == 1

    run(body)


def test_a_content_made_in_pieces_is_the_content_made_whole() -> None:
    content = Content(7, (("a", Section(b"x" * 10, 3)), ("b", Section(blob(FRAGMENT_BYTES), 7))))
    msg = wire.ContentMsg("db", Offer(((3, 1),), (1, 2)), content)
    kind, parts = wire.encode_parts(msg)
    assert (kind, b"".join(parts)) == wire.encode(msg)
    assert wire.decode(kind, b"".join(parts)) == msg


def test_a_large_write_drops_a_silent_standby_at_the_bound_from_its_last_fragment() -> None:
    clock = FakeClock(100.0)

    async def go() -> None:
        def make(t: GroupTransport) -> CheckpointService:
            return CheckpointService(t, clock=clock, drop_after=BOUND)

        async with LocalNet(make) as net:
            a, b, c = await net.start_all(1, 2, 3)
            active = await a.open("db", Role.ACTIVE)
            fast, slow = await b.open("db"), await c.open("db")
            net.taps[3].hold()  # node 3 stops: a holder, but silent
            data = blob(4 * MiB)
            write = asyncio.create_task(active.write("state", data))
            deadline = clock.t + BOUND  # the bound runs from the write's (last fragment's) order
            await until(lambda: clock.waiting_until == deadline, DEADLINE)
            assert fast.read("state") == data and not write.done()
            clock.advance(BOUND)
            await asyncio.wait_for(write, DEADLINE)
            assert a.directory.is_stale("db", 3) and active.replicas == (2,)
            # Node 3 runs again: it takes a fresh transfer (in fragments) and is waited for.
            net.taps[3].release()
            await net.wait_for(lambda: slow.synced and not a.directory.stale)
            assert slow.read("state") == data
            assert list(active.replicas) == [2, 3]

    asyncio.run(go())
