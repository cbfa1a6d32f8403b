"""CES on the in-memory bus: fan-out, agreed order, prefixes, slow subscribers, junk."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.events import Event, EventService, wire
from haos.cluster.dss.messaging.feed import Feed
from haos.cluster.dss.wire import Envelope, Service, WireError
from haos.errors import UnavailableError, UsageError
from haoslab.fakes.localnet import LocalNet, garble, inject

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0


async def take(feed: Feed[Event], n: int) -> list[Event]:
    async with asyncio.timeout(DEADLINE):
        return [await feed.get() for _ in range(n)]


def test_an_event_reaches_subscribers_on_every_node_including_the_publisher() -> None:
    async def go() -> None:
        async with LocalNet(EventService) as net:
            nodes = await net.start_all(1, 2, 3)
            feeds = [n.subscribe("hw/fan/failed") for n in nodes]
            await nodes[1].publish("hw/fan/failed", b"slot 3")
            for feed in feeds:
                assert await take(feed, 1) == [Event("hw/fan/failed", b"slot 3", 2, 1)]

    asyncio.run(go())


def test_concurrent_publishers_are_seen_in_one_order_by_every_subscriber() -> None:
    async def go() -> None:
        async with LocalNet(EventService) as net:
            nodes = await net.start_all(1, 2, 3)
            feeds = [n.subscribe("", prefix=True) for n in nodes]

            async def publish_many(n: EventService) -> None:
                for i in range(30):
                    await n.publish(f"load/{n.node_id}", str(i).encode())
                    await asyncio.sleep(0)  # interleave the publishers (not a synchronisation)

            async with asyncio.TaskGroup() as tg:
                for n in nodes:
                    tg.create_task(publish_many(n))
            seen = [await take(feed, 90) for feed in feeds]
            assert seen[0] == seen[1] == seen[2]
            assert len({e.publisher for e in seen[0][:10]}) > 1  # they did interleave
            for publisher in (1, 2, 3):
                seqs = [e.seq for e in seen[0] if e.publisher == publisher]
                assert seqs == list(range(1, 31))

    asyncio.run(go())


def test_exact_and_prefix_subscriptions_and_unsubscribe() -> None:
    async def go() -> None:
        async with LocalNet(EventService) as net:
            (a,) = await net.start_all(1)
            exact = a.subscribe("hw/fan")
            prefix = a.subscribe("hw/", prefix=True)
            other = a.subscribe("sw/", prefix=True)
            gone = a.subscribe("hw/fan")
            gone.close()
            for t in ("hw/fan", "hw/fan/2", "sw/x"):
                await a.publish(t)
            assert [e.event_type for e in await take(exact, 1)] == ["hw/fan"]
            assert [e.event_type for e in await take(prefix, 2)] == ["hw/fan", "hw/fan/2"]
            assert [e.event_type for e in await take(other, 1)] == ["sw/x"]
            assert gone.get_nowait() is None and exact.get_nowait() is None

    asyncio.run(go())


def test_a_subscriber_that_falls_behind_is_cut_off_and_the_others_go_on() -> None:
    async def go() -> None:
        async with LocalNet(EventService) as net:
            a, b = await net.start_all(1, 2)
            slow = b.subscribe("t", limit=2)
            fine = b.subscribe("t")
            for i in range(3):
                await a.publish("t", bytes([i]))
            assert [e.payload for e in await take(fine, 3)] == [b"\0", b"\1", b"\2"]
            assert [e.payload for e in await take(slow, 2)] == [b"\0", b"\1"]
            with pytest.raises(UnavailableError, match="fell behind"):
                await slow.get()

    asyncio.run(go())


def test_closing_ends_feeds_cleanly_and_a_crash_ends_them_with_an_error() -> None:
    async def go() -> None:
        async with LocalNet(EventService) as net:
            a, b = await net.start_all(1, 2)
            closed, crashed = a.subscribe("t"), b.subscribe("t")
            await a.close()
            assert [e async for e in closed] == []
            net.crash(2)
            with pytest.raises(UnavailableError):
                await take(crashed, 1)
            with pytest.raises(UnavailableError):
                await b.publish("t")
            assert await net.stopped(2) is not None
            assert await net.stopped(1) is None

    asyncio.run(go())


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 1025])
def test_invalid_event_types_are_refused(bad: str) -> None:
    async def go() -> None:
        async with LocalNet(EventService) as net:
            (a,) = await net.start_all(1)
            with pytest.raises(UsageError):
                await a.publish(bad)

    asyncio.run(go())


def _valid() -> list[bytes]:
    return [
        envelope.encode(Envelope(Service.CES, wire.Kind.PUBLISH, body))
        for body in (
            wire.encode_publish(wire.Publish(1, "t", b"payload")),
            wire.encode_publish(wire.Publish(2**64 - 1, "hw/fan/2", b"")),
        )
    ]


def is_malformed(data: bytes) -> bool:
    try:
        env = envelope.decode(data, expect=Service.CES)
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


@settings(max_examples=150, deadline=None)
@given(st.lists(JUNK, min_size=1, max_size=6))
def test_junk_is_dropped_and_counted_and_the_service_keeps_working(junk: list[bytes]) -> None:
    token = uuid.uuid4().bytes

    async def go() -> None:
        async with LocalNet(EventService) as net:
            a, b = await net.start_all(1, 2)
            feed = b.subscribe("t")
            for data in junk:
                inject(net, 1, data)
            await a.publish("t", token)
            async with asyncio.timeout(DEADLINE):
                while (await feed.get()).payload != token:
                    pass
            assert b.drops.total == sum(map(is_malformed, junk))
            assert b.drops.counts["handler-error"] == 0

    asyncio.run(go())
