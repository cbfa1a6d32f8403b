"""The versioned envelope and the in-memory bus that stands in for CPG in unit tests."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haos.cluster.dss.transport import Message, View
from haos.cluster.dss.wire import Envelope, Service, WireError, decode, encode
from haos.errors import UnavailableError
from haoslab.testing.bus import LocalBus


def test_envelope_round_trips() -> None:
    env = Envelope(Service.CCR, 3, b"body", flags=1)
    assert decode(encode(env), expect=Service.CCR) == env


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"", "shorter than the header", id="empty"),
        pytest.param(b"XX" + bytes(8), "malformed", id="bad_magic"),
        pytest.param(encode(Envelope(Service.CCR, 1, b"abc"))[:-1], "malformed", id="truncated"),
        pytest.param(encode(Envelope(Service.CCR, 1, b"abc")) + b"x", "length", id="trailing"),
        pytest.param(encode(Envelope(Service.CCR, 1, b"", version=9)), "version 9", id="version"),
        pytest.param(b"HA\x01\x63\x01\x00" + bytes(4), "unknown service 99", id="service"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, fragment: str) -> None:
    with pytest.raises(WireError, match=fragment):
        decode(data)


def test_the_envelope_is_the_documented_header_then_the_body() -> None:
    # magic "HA" | version u8 | service u8 | kind u8 | flags u8 | body length u32 (big-endian)
    data = encode(Envelope(Service.CRC, 4, b"body", flags=1))
    assert data == b"HA\x01\x05\x04\x01\x00\x00\x00\x04body"


@given(
    st.sampled_from(Service),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=300),
)
def test_every_envelope_round_trips_and_no_cut_of_it_decodes(
    service: Service, kind: int, flags: int, body: bytes
) -> None:
    data = encode(Envelope(service, kind, body, flags))
    assert decode(data, expect=service) == Envelope(service, kind, body, flags)
    for cut in range(len(data)):
        with pytest.raises(WireError):
            decode(data[:cut])


def test_message_for_another_service_is_refused() -> None:
    with pytest.raises(WireError, match="arrived on CCR"):
        decode(encode(Envelope(Service.CES, 1, b"")), expect=Service.CCR)


@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


async def _drain(ep: object, n: int) -> list[object]:
    return [await ep.next_event() for _ in range(n)]  # type: ignore[attr-defined]


def test_bus_delivers_in_one_order_to_every_member_including_the_sender() -> None:
    async def go() -> None:
        bus = LocalBus()
        a, b = bus.join(1), bus.join(2)
        await a.send(b"x")
        await b.send(b"y")
        seen_a = await _drain(a, 4)
        seen_b = await _drain(b, 3)
        assert seen_a[-2:] == seen_b[-2:] == [Message(1, b"x"), Message(2, b"y")]
        assert seen_b[0] == View((1, 2), joined=(2,))

    asyncio.run(go())


def test_bus_partition_gives_each_side_its_own_view_and_order() -> None:
    async def go() -> None:
        bus = LocalBus()
        eps = [bus.join(n) for n in (1, 2, 3)]
        for ep in eps:
            while not ep.queue.empty():
                ep.queue.get_nowait()
        bus.partition([[1, 2], [3]])
        assert await eps[0].next_event() == View((1, 2), left=(3,))
        assert await eps[2].next_event() == View((3,), left=(1, 2))
        await eps[2].send(b"alone")
        assert await eps[2].next_event() == Message(3, b"alone")
        assert eps[0].queue.empty()
        bus.heal()
        assert await eps[0].next_event() == View((1, 2, 3), joined=(3,))
        await eps[0].close()
        with pytest.raises(UnavailableError):
            await eps[0].send(b"late")

    asyncio.run(go())
