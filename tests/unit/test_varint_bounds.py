"""VarInts on the wire are at most 64 bits: a long run of continuation bytes is refused at
once by the hand-written reader and by the construct structs alike, never read to its end."""

from __future__ import annotations

import io
import time

import pytest
from construct import ConstructError

from haos.cluster.dss.ccr import wire
from haos.cluster.dss.messaging.binary import MAX_VARINT, MAX_VARINT_BYTES, Reader, Writer
from haos.cluster.dss.messaging.codec import VarInt64
from haos.cluster.dss.wire import Envelope, Service, WireError, encode

RUN = b"\xff" * 300_000 + b"\x01"


def leb128(value: int) -> bytes:
    """Unsigned LEB128 of any length, as an unbounded writer would send it."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Indexed(bytes):
    """Bytes that remember the highest index read."""

    highest = -1

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        if isinstance(index, int):
            self.highest = max(self.highest, index)
        return super().__getitem__(index)


def test_a_long_run_of_continuation_bytes_fails_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(WireError, match="change count is a VarInt of more than 64 bits"):
        wire.decode_changes(RUN)
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize(
    "kind", [wire.Kind.ORDER, wire.Kind.TXN, wire.Kind.START], ids=lambda k: k.name
)
def test_a_long_varint_in_a_message_fails_at_once(kind: wire.Kind) -> None:
    head = b"" if kind is wire.Kind.ORDER else bytes(20 if kind is wire.Kind.TXN else 16)
    data = encode(Envelope(Service.CCR, int(kind), head + RUN))
    started = time.perf_counter()
    with pytest.raises(WireError, match="more than 64 bits"):
        wire.decode_message(data)
    assert time.perf_counter() - started < 0.05


def test_a_long_varint_in_a_transfer_fails_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(WireError, match="more than 64 bits"):
        wire.decode_transfer(bytes(16) + RUN)
    assert time.perf_counter() - started < 0.05


def test_the_reader_gives_up_within_ten_bytes() -> None:
    data = _Indexed(RUN)
    with pytest.raises(WireError):
        Reader(data, "test").varint("n")
    assert data.highest == MAX_VARINT_BYTES - 1


def test_the_structs_give_up_within_ten_bytes() -> None:
    stream = io.BytesIO(RUN)
    with pytest.raises(ConstructError, match="more than 64 bits"):
        VarInt64.parse_stream(stream)
    assert stream.tell() == MAX_VARINT_BYTES


@pytest.mark.parametrize(
    ("data", "value"),
    [
        pytest.param(leb128(MAX_VARINT), MAX_VARINT, id="largest"),
        pytest.param(b"\x80" * 9 + b"\x01", 1 << 63, id="ten_bytes_top_bit"),
        pytest.param(b"\x80" * 9 + b"\x00", 0, id="overlong_zero"),
        pytest.param(b"\x05", 5, id="one_byte"),
    ],
)
def test_varints_up_to_64_bits_are_read_by_both(data: bytes, value: int) -> None:
    r = Reader(data, "test")
    assert r.varint("n") == value
    r.end()
    assert VarInt64.parse(data) == value


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(leb128(MAX_VARINT + 1), id="65_bits_in_ten_bytes"),
        pytest.param(b"\xff" * 9 + b"\x7f", id="70_bits_in_ten_bytes"),
        pytest.param(b"\x80" * 10 + b"\x00", id="eleven_bytes"),
    ],
)
def test_varints_beyond_64_bits_are_refused_by_both(data: bytes) -> None:
    with pytest.raises(WireError, match="more than 64 bits"):
        Reader(data, "test").varint("n")
    with pytest.raises(ConstructError, match="more than 64 bits"):
        VarInt64.parse(data)


def test_a_varint_beyond_64_bits_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match=str(MAX_VARINT + 1)):
        Writer().varint(MAX_VARINT + 1)
    with pytest.raises(ConstructError):
        VarInt64.build(MAX_VARINT + 1)
    assert VarInt64.build(MAX_VARINT) == leb128(MAX_VARINT)
