"""AM on the in-memory bus: unicast reaches only its destination, "all" reaches every member,
order is kept, a full inbox drops and counts, and junk is dropped and counted."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.messaging import am
from haos.cluster.dss.messaging.am import ALL, AmMessage, MessageService
from haos.cluster.dss.wire import Envelope, Service, WireError
from haos.errors import UnavailableError
from haoslab.fakes.localnet import LocalNet, garble, inject

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0


async def recv(service: MessageService, n: int = 1) -> list[AmMessage]:
    async with asyncio.timeout(DEADLINE):
        return [await service.recv() for _ in range(n)]


def test_a_unicast_reaches_its_destination_only_and_to_all_reaches_everyone() -> None:
    async def go() -> None:
        async with LocalNet(MessageService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            await a.send(2, b"for two")
            await c.send(ALL, b"for all")
            assert await recv(b, 2) == [
                AmMessage(1, b"for two", False),
                AmMessage(3, b"for all", True),
            ]
            assert await recv(a) == [AmMessage(3, b"for all", True)]
            assert await recv(c) == [AmMessage(3, b"for all", True)]
            assert a.receive().get_nowait() is None and c.receive().get_nowait() is None
            assert (a.not_for_us, c.not_for_us) == (1, 1)  # silently, not as drops
            assert a.drops.total == b.drops.total == c.drops.total == 0

    asyncio.run(go())


def test_messages_from_one_sender_arrive_in_order() -> None:
    async def go() -> None:
        async with LocalNet(MessageService) as net:
            a, b = await net.start_all(1, 2)
            for i in range(100):
                await a.send(2, i.to_bytes(2, "big"))
            got = [int.from_bytes(m.payload, "big") for m in await recv(b, 100)]
            assert got == list(range(100))

    asyncio.run(go())


def test_sending_to_a_node_outside_the_group_fails_at_once() -> None:
    async def go() -> None:
        async with LocalNet(MessageService) as net:
            a, _ = await net.start_all(1, 2)
            net.crash(2)
            await net.taps[1].wait_for(lambda: a.members == (1,))
            with pytest.raises(UnavailableError, match="node 2 is not a member"):
                await a.send(2, b"x")

    asyncio.run(go())


def test_a_full_inbox_drops_and_counts_and_later_messages_get_through() -> None:
    async def go() -> None:
        async with LocalNet(lambda t: MessageService(t, inbox=2)) as net:
            a, b = await net.start_all(1, 2)
            for i in range(3):
                await a.send(2, bytes([i]))
            await net.taps[2].wait_for(lambda: b.drops.counts["inbox-full"] == 1)
            assert [m.payload for m in await recv(b, 2)] == [b"\0", b"\1"]
            await a.send(2, b"later")
            assert [m.payload for m in await recv(b)] == [b"later"]

    asyncio.run(go())


def test_the_inbox_ends_when_the_service_closes() -> None:
    async def go() -> None:
        async with LocalNet(MessageService) as net:
            (a,) = await net.start_all(1)
            await a.send(ALL, b"last")
            await net.taps[1].wait_for(lambda: a.receive().pending() == 1)
            await a.close()
            assert [m.payload async for m in a.receive()] == [b"last"]

    asyncio.run(go())


def _valid() -> list[bytes]:
    return [
        envelope.encode(Envelope(Service.AM, am.Kind.DATA, am.encode_data(am.Data(d, p))))
        for d, p in ((2, b"x"), (None, b"all"), (3, b""))
    ]


def is_malformed(data: bytes) -> bool:
    try:
        env = envelope.decode(data, expect=Service.AM)
        am.decode(env.kind, env.body)
    except WireError:
        return True
    return False


JUNK = st.one_of(
    st.binary(max_size=64),
    st.builds(
        garble,
        st.sampled_from(_valid()),
        st.integers(0, 3),
        st.integers(0, 999),
        st.integers(0, 255),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(JUNK, min_size=1, max_size=6))
def test_junk_is_dropped_and_counted_and_the_service_keeps_working(junk: list[bytes]) -> None:
    token = uuid.uuid4().bytes

    async def go() -> None:
        async with LocalNet(MessageService) as net:
            a, b = await net.start_all(1, 2)
            for data in junk:
                inject(net, 1, data)
            await a.send(2, token)
            async with asyncio.timeout(DEADLINE):
                while (await b.recv()).payload != token:
                    pass
            assert b.drops.total == sum(map(is_malformed, junk))
            assert b.drops.counts["handler-error"] == 0

    asyncio.run(go())
