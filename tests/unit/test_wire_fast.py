"""The hand-written codecs of the hot messages (the CCR's TXN, ORDER and APPLIED, the CRC's
WRITE and ACK) against the construct structs that declare them: the same bytes out, and the
same verdict (and message) on any bytes in -- so a node of this release and one of the last
read each other's messages alike."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss.ccr import wire
from haos.cluster.dss.ccr.model import (
    Change,
    Compare,
    Delete,
    DeletePrefix,
    Entry,
    Put,
    RequestId,
)
from haos.cluster.dss.ccr.wire import Applied, Kind, Message, Order, Txn
from haos.cluster.dss.checkpoint import wire as crc
from haos.cluster.dss.messaging.binary import Reader, Writer
from haos.cluster.dss.messaging.codec import build, parse
from haos.cluster.dss.wire import Envelope, Service, WireError, decode, encode

U64 = st.integers(0, 2**64 - 1)
SEGMENT = st.sampled_from(["a", "cfg", "n3", "00017", "é", "x-y"])
KEY = st.lists(SEGMENT, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
VALUE = st.binary(max_size=40)
REQUEST = st.builds(RequestId, st.integers(0, 2**32 - 1), U64, U64)
CHANGE = st.builds(Change, KEY, st.none() | VALUE)
ENTRY = st.builds(Entry, U64, U64, REQUEST, st.lists(CHANGE, max_size=3).map(tuple))
OP = st.one_of(
    st.builds(Put, KEY, VALUE),
    st.builds(Delete, KEY),
    st.builds(DeletePrefix, KEY | st.just("/")),
)
MESSAGE = st.one_of(
    st.builds(Applied, U64, U64),
    st.builds(Order, st.lists(ENTRY, min_size=1, max_size=3).map(tuple)),
    st.builds(
        Txn,
        REQUEST,
        st.lists(st.builds(Compare, KEY, U64), max_size=2).map(tuple),
        st.lists(OP, max_size=3).map(tuple),
    ),
)


# The codec of these kinds by their construct structs (as the previous release had it): the
# reference the hand-written one is held to.


def reference_raw(msg: Message) -> tuple[Kind, dict[str, Any]]:
    if isinstance(msg, Applied):
        return Kind.APPLIED, {"epoch": msg.epoch, "revision": msg.revision}
    if isinstance(msg, Order):
        return Kind.ORDER, {"entries": [wire._entry_raw(e) for e in msg.entries]}
    assert isinstance(msg, Txn)
    ops = [
        {"kind": 1, "key": o.key, "value": o.value}
        if isinstance(o, Put)
        else {"kind": 2, "key": o.key, "value": None}
        if isinstance(o, Delete)
        else {"kind": 3, "key": o.prefix, "value": None}
        for o in msg.ops
    ]
    compares = [vars(c) for c in msg.compares]
    return Kind.TXN, {"request": vars(msg.request), "compares": compares, "ops": ops}


def reference_message(kind: Kind, raw: Any) -> Message:
    if kind is Kind.APPLIED:
        return Applied(raw.epoch, raw.revision)
    if kind is Kind.ORDER:
        if not raw.entries:
            raise WireError("an ORDER without entries")
        return Order(tuple(wire._entry(e) for e in raw.entries))
    compares = tuple(Compare(wire._key(c.key), c.mod_revision) for c in raw.compares)
    ops = tuple(wire.op_of(o.kind, o.key, bytes(o.value or b"")) for o in raw.ops)
    return Txn(wire._request(raw.request), compares, ops)


def reference_body(msg: Message) -> tuple[Kind, bytes]:
    kind, raw = reference_raw(msg)
    return kind, bytes(wire._BODIES[kind].build(raw))


def reference_decode(kind: Kind, body: bytes) -> Message | str:
    """construct's reading of ``body``; the reason as text when it refuses it."""
    try:
        return reference_message(kind, wire._BODIES[kind].parse(body))
    except WireError as e:
        return str(e)
    except wire._PARSE_ERRORS as e:
        return f"construct: {e}"


def fast_decode(kind: Kind, body: bytes) -> Message | str:
    try:
        return wire.decode_message(encode(Envelope(Service.CCR, int(kind), body)))
    except WireError as e:
        return str(e)


def same_verdict(kind: Kind, body: bytes) -> None:
    ours, theirs = fast_decode(kind, body), reference_decode(kind, body)
    if isinstance(theirs, str):
        assert isinstance(ours, str), (body, theirs, ours)
        if not theirs.startswith("construct:"):  # a rule of ours, not a parse failure
            assert ours == theirs
    else:
        assert ours == theirs, body


@given(MESSAGE)
def test_the_hand_written_bytes_are_the_declared_ones(msg: Message) -> None:
    kind, body = reference_body(msg)
    assert decode(wire.encode_message(msg)) == Envelope(Service.CCR, int(kind), body)
    assert wire.decode_message(wire.encode_message(msg)) == msg


@settings(max_examples=150)
@given(MESSAGE, st.data())
def test_damaged_bodies_get_the_declared_verdict(msg: Message, data: st.DataObject) -> None:
    kind, body = reference_body(msg)
    for cut in range(len(body)):
        same_verdict(kind, body[:cut])
    same_verdict(kind, body + data.draw(st.binary(min_size=1, max_size=3)))
    for _ in range(8):
        at = data.draw(st.integers(0, len(body) - 1))
        byte = data.draw(st.integers(0, 255))
        same_verdict(kind, body[:at] + bytes([byte]) + body[at + 1 :])


@given(st.sampled_from([Kind.TXN, Kind.ORDER, Kind.APPLIED]), st.binary(max_size=80))
def test_random_bodies_get_the_declared_verdict(kind: Kind, body: bytes) -> None:
    same_verdict(kind, body)


@pytest.mark.parametrize(
    ("kind", "body", "why"),
    [
        (Kind.APPLIED, bytes(15), "epoch and revision runs past the end of the 15 bytes"),
        (Kind.APPLIED, bytes(17), "1 bytes after the last field"),
        (Kind.ORDER, b"\x00", "an ORDER without entries"),
        (Kind.ORDER, b"\x01" + bytes(36) + b"\x01\x02/\xff\x00", "change key is not UTF-8"),
        (Kind.TXN, bytes(20) + b"\x00\x01\x01\x02/a\x05abc", "value runs past the end"),
    ],
)
def test_a_refused_hot_body_says_which_field(kind: Kind, body: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        wire.decode_message(encode(Envelope(Service.CCR, int(kind), body)))


@given(st.lists(CHANGE, max_size=4).map(tuple))
def test_stored_changes_are_the_declared_bytes(changes: tuple[Change, ...]) -> None:
    raw: list[dict[str, Any]] = [
        {"key": c.key, "present": c.value is not None, "value": c.value} for c in changes
    ]
    stored = wire.encode_changes(changes)
    assert stored == bytes(wire._CHANGES.build(raw))
    assert wire.decode_changes(stored) == changes
    for cut in range(len(stored)):
        with pytest.raises(WireError):
            wire.decode_changes(stored[:cut])


@given(st.integers(0, 2**64 - 1))
def test_varints_are_unsigned_leb128(value: int) -> None:
    w = Writer()
    w.varint(value)
    data = w.bytes()
    assert data == bytes(wire.VarInt.build(value))
    r = Reader(data, "test")
    assert r.varint("n") == value
    r.end()


def test_a_negative_varint_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="-1"):
        Writer().varint(-1)


# -- CRC WRITE and ACK -----------------------------------------------------------------------

NAME = st.text(
    st.characters(whitelist_categories=("L", "N", "P", "S"), max_codepoint=0x2FF),
    min_size=1,
    max_size=12,
)
CRC_MESSAGE = st.one_of(
    st.builds(crc.WriteMsg, U64, NAME, NAME, st.none() | VALUE, st.booleans()),
    st.builds(crc.AckMsg, st.integers(0, 2**32 - 1), U64, NAME),
)


def crc_reference_body(msg: crc.Msg) -> tuple[int, bytes]:
    if isinstance(msg, crc.WriteMsg):
        flags = (1 if msg.sync else 0) | (2 if msg.data is None else 0)
        value = {
            "write_id": msg.write_id,
            "flags": flags,
            "name": msg.name,
            "section": msg.section,
            "data": msg.data or b"",
        }
        return crc.Kind.WRITE, build(crc._WRITE, value)
    assert isinstance(msg, crc.AckMsg)
    value = {"writer": msg.writer, "write_id": msg.write_id, "name": msg.name}
    return crc.Kind.ACK, build(crc._ACK, value)


def crc_reference_decode(kind: int, body: bytes) -> crc.Msg | str:
    try:
        if kind == crc.Kind.WRITE:
            raw = parse(crc._WRITE, body, "CRC write")
            return crc.write_msg(raw.write_id, raw.flags, raw.name, raw.section, bytes(raw.data))
        raw = parse(crc._ACK, body, "CRC ack")
        return crc.AckMsg(raw.writer, raw.write_id, crc._name(raw.name))
    except WireError as e:
        return "construct" if str(e).startswith("malformed") else str(e)


def crc_same_verdict(kind: int, body: bytes) -> None:
    try:
        ours: crc.Msg | str = crc.decode(kind, body)
    except WireError as e:
        ours = str(e)
    theirs = crc_reference_decode(kind, body)
    if isinstance(theirs, str):
        assert isinstance(ours, str), (body, theirs, ours)
        if theirs != "construct":
            assert ours == theirs
    else:
        assert ours == theirs, body


@settings(max_examples=150)
@given(CRC_MESSAGE, st.data())
def test_crc_hot_messages_are_the_declared_bytes_and_verdicts(
    msg: crc.Msg, data: st.DataObject
) -> None:
    kind, body = crc_reference_body(msg)
    assert crc.encode(msg) == (kind, body)
    assert crc.decode(kind, body) == msg
    for cut in range(len(body)):
        crc_same_verdict(kind, body[:cut])
    crc_same_verdict(kind, body + data.draw(st.binary(min_size=1, max_size=3)))
    for _ in range(8):
        at = data.draw(st.integers(0, len(body) - 1))
        crc_same_verdict(kind, body[:at] + bytes([data.draw(st.integers(0, 255))]) + body[at + 1 :])


@given(st.sampled_from([crc.Kind.WRITE, crc.Kind.ACK]), st.binary(max_size=60))
def test_random_crc_bodies_get_the_declared_verdict(kind: int, body: bytes) -> None:
    crc_same_verdict(kind, body)
