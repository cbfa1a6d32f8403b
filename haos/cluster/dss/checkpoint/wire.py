"""CRC bodies (inside the shared envelope, service CRC).

    OPEN    (kind 1): role u8 | checkpoint Text
    CLOSE   (kind 2): checkpoint Text
    WRITE   (kind 3): write id u64 | flags u8 (bit 0: synchronous, bit 1: delete) | checkpoint
                      Text | section Text | data Blob (empty for a delete)
    ACK     (kind 4): writer node u32 | write id u64 | checkpoint Text
    CONTENT (kind 5): checkpoint Text | offer | version u64
                      | sections: count u32, then (section Text, version u64, data Blob)
    SYNC    (kind 6): offer | members | checkpoints: count u32, then
                      (checkpoint Text, holders: count u32, then (node u32, role u8))
                      -- bit 7 of a holder's role byte: its replica is stale
    NEED    (kind 7): (empty) -- "I hold no directory": a joiner says so after each view
    DROP    (kind 8): write id u64 | node u32 | checkpoint Text -- "standby ``node`` did not
                      acknowledge my write ``write id`` in time: its replica is stale"
    SYNCED  (kind 9): checkpoint Text -- "my stale replica installed a fresh transfer"
    FRAGMENT (kind 10): message id u64 | index u32 | count u32 | kind u8 | piece Blob -- one
                      piece of a message of ``kind`` too large for one CPG message (see
                      ``checkpoint.fragments``)

ACKs go to one writer (others drop them silently); CONTENT is state transfer of one checkpoint
to the holders that just opened it; SYNC is state transfer of the directory to group joiners;
NEED lets the members that hold the directory tell a fresh joiner from the other side of a
healed partition. DROP and SYNCED mark a replica stale and fresh again, for every member at
the same point of the order.

WRITE and ACK, sent on every write, are read and written by hand
(:mod:`~haos.cluster.dss.messaging.binary`) to the bytes their structs below declare; the tests
hold the two to each other.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from construct import Int8ub, Int32ub, Int64ub, PrefixedArray, Struct

from haos.cluster.dss.checkpoint.replica import Content, DirSnapshot, Role, Section
from haos.cluster.dss.messaging.binary import U16, U32, Reader, Writer
from haos.cluster.dss.messaging.codec import Blob, NodeList, Text, body, build, parse, text_fits
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.messaging.syncwire import OfferStruct, offer_from, offer_value
from haos.cluster.dss.wire import WireError
from haos.errors import UsageError
from haos.limits import MAX_CHECKPOINT_SECTION

MAX_NAME = 1024


class Kind(enum.IntEnum):
    OPEN = 1
    CLOSE = 2
    WRITE = 3
    ACK = 4
    CONTENT = 5
    SYNC = 6
    NEED = 7
    DROP = 8
    SYNCED = 9
    FRAGMENT = 10


_SYNC_WRITE = 0x01
_DELETE = 0x02
_STALE = 0x80  # in a SYNC holder's role byte


@dataclass(frozen=True)
class OpenMsg:
    name: str
    role: Role


@dataclass(frozen=True)
class CloseMsg:
    name: str


@dataclass(frozen=True)
class WriteMsg:
    write_id: int
    name: str
    section: str
    data: bytes | None  # None: delete
    sync: bool


@dataclass(frozen=True)
class AckMsg:
    writer: int
    write_id: int
    name: str


@dataclass(frozen=True)
class ContentMsg:
    name: str
    offer: Offer
    content: Content


@dataclass(frozen=True)
class SyncMsg:
    offer: Offer
    directory: DirSnapshot


@dataclass(frozen=True)
class NeedMsg:
    pass


@dataclass(frozen=True)
class DropMsg:
    write_id: int
    node: int
    name: str


@dataclass(frozen=True)
class SyncedMsg:
    name: str


@dataclass(frozen=True)
class FragmentMsg:
    msg_id: int
    index: int
    count: int
    kind: int
    piece: bytes


Msg = (
    OpenMsg
    | CloseMsg
    | WriteMsg
    | AckMsg
    | ContentMsg
    | SyncMsg
    | NeedMsg
    | DropMsg
    | SyncedMsg
    | FragmentMsg
)

_OPEN = body("role" / Int8ub, "name" / Text)
_CLOSE = body("name" / Text)
_WRITE = body(
    "write_id" / Int64ub,
    "flags" / Int8ub,
    "name" / Text,
    "section" / Text,
    "data" / Blob,
)
_ACK = body("writer" / Int32ub, "write_id" / Int64ub, "name" / Text)
_WRITE_HEAD = struct.Struct(">QB")  # write id, flags
_FRAGMENT_HEAD = struct.Struct(">QIIB")  # message id, index, count, kind
_U64_U32 = struct.Struct(">QI")  # a CONTENT's version and section count; a section's version, size
_ACK_HEAD = struct.Struct(">IQ")  # writer, write id
_SECTION = Struct("section" / Text, "version" / Int64ub, "data" / Blob)
_CONTENT = body(
    "name" / Text,
    "offer" / OfferStruct,
    "version" / Int64ub,
    "sections" / PrefixedArray(Int32ub, _SECTION),
)
_CONTENT_HEAD = Struct("name" / Text, "offer" / OfferStruct)
_NEED = body()
_DROP = body("write_id" / Int64ub, "node" / Int32ub, "name" / Text)
_SYNCED = body("name" / Text)
_HOLDER = Struct("node" / Int32ub, "role" / Int8ub)
_CHECKPOINT = Struct("name" / Text, "holders" / PrefixedArray(Int32ub, _HOLDER))
_SYNC = body(
    "offer" / OfferStruct,
    "members" / NodeList,
    "checkpoints" / PrefixedArray(Int32ub, _CHECKPOINT),
)


def validate_name(name: str, what: str = "checkpoint") -> None:
    """Raise UsageError unless ``name`` is 1..1024 bytes of printable UTF-8."""
    if not name or not text_fits(name) or len(name.encode()) > MAX_NAME:
        raise UsageError(f"{what} name {name!r} is not 1..{MAX_NAME} bytes of printable UTF-8")


def encode_parts(msg: Msg) -> tuple[Kind, list[bytes]]:
    """The body of ``msg`` as pieces to concatenate: a WRITE's data and a CONTENT's sections
    are referenced, not copied, so a large message is cut into fragments without first
    building it whole."""
    match msg:
        case WriteMsg(write_id, name, section, data, sync):
            w = Writer()
            w.fields(
                _WRITE_HEAD,
                write_id,
                (_SYNC_WRITE if sync else 0) | (_DELETE if data is None else 0),
            )
            w.text(name, U16)
            w.text(section, U16)
            w.fields(U32, len(data or b""))
            return Kind.WRITE, [w.bytes(), data or b""]
        case ContentMsg(name, offer, content):
            head = build(_CONTENT_HEAD, {"name": name, "offer": offer_value(offer)})
            parts = [head, _U64_U32.pack(content.version, len(content.sections))]
            for section, sec in content.sections:
                raw = section.encode()
                parts += [U16.pack(len(raw)) + raw, _U64_U32.pack(sec.version, len(sec.data))]
                parts.append(sec.data)
            return Kind.CONTENT, parts
    kind, body = encode(msg)
    return kind, [body]


def fragment_head(msg_id: int, index: int, count: int, kind: int, size: int) -> bytes:
    """A FRAGMENT body up to its piece, which follows it (``size`` bytes)."""
    return _FRAGMENT_HEAD.pack(msg_id, index, count, kind) + U32.pack(size)


def encode(msg: Msg) -> tuple[Kind, bytes]:
    match msg:
        case OpenMsg(name, role):
            return Kind.OPEN, build(_OPEN, {"role": int(role), "name": name})
        case CloseMsg(name):
            return Kind.CLOSE, build(_CLOSE, {"name": name})
        case WriteMsg():
            kind, parts = encode_parts(msg)  # the head, then the data
            return kind, b"".join(parts)
        case AckMsg(writer, write_id, name):
            w = Writer()
            w.fields(_ACK_HEAD, writer, write_id)
            w.text(name, U16)
            return Kind.ACK, w.bytes()
        case ContentMsg(name, offer, content):
            sections = [
                {"section": s, "version": sec.version, "data": sec.data}
                for s, sec in content.sections
            ]
            value = {
                "name": name,
                "offer": offer_value(offer),
                "version": content.version,
                "sections": sections,
            }
            return Kind.CONTENT, build(_CONTENT, value)
        case SyncMsg(offer, directory):
            stale = {n: set(nodes) for n, nodes in directory.stale}
            checkpoints = [
                {
                    "name": n,
                    "holders": [
                        {"node": h, "role": int(r) | (_STALE if h in stale.get(n, ()) else 0)}
                        for h, r in holders
                    ],
                }
                for n, holders in directory.checkpoints
            ]
            value = {
                "offer": offer_value(offer),
                "members": list(directory.members),
                "checkpoints": checkpoints,
            }
            return Kind.SYNC, build(_SYNC, value)
        case NeedMsg():
            return Kind.NEED, build(_NEED, {})
        case DropMsg(write_id, node, name):
            return Kind.DROP, build(_DROP, {"write_id": write_id, "node": node, "name": name})
        case SyncedMsg(name):
            return Kind.SYNCED, build(_SYNCED, {"name": name})
        case FragmentMsg(msg_id, index, count, kind, piece):
            return Kind.FRAGMENT, fragment_head(msg_id, index, count, kind, len(piece)) + piece
    raise AssertionError(f"not a CRC message: {msg!r}")


def _name(name: str, what: str = "checkpoint") -> str:
    try:
        validate_name(name, what)
    except UsageError as e:
        raise WireError(f"CRC: {e}") from None
    return name


def _role(raw: int) -> Role:
    try:
        return Role(raw)
    except ValueError:
        raise WireError(f"CRC: unknown role {raw}") from None


def _unique(names: list[str], what: str) -> None:
    if len(set(names)) != len(names):
        raise WireError(f"CRC: a {what} appears twice")


def write_msg(write_id: int, flags: int, name: str, section: str, blob: bytes) -> WriteMsg:
    """The WRITE that these fields make, or WireError naming the field that breaks a rule."""
    if flags & ~(_SYNC_WRITE | _DELETE):
        raise WireError(f"CRC write: unknown flags {flags:#x}")
    delete = bool(flags & _DELETE)
    if delete and blob:
        raise WireError("CRC write: a delete carries no data")
    if len(blob) > MAX_CHECKPOINT_SECTION:
        raise WireError(
            f"CRC write: {len(blob)} bytes of data, over the limit of {MAX_CHECKPOINT_SECTION}"
        )
    payload = None if delete else blob
    section = _name(section, "section")
    return WriteMsg(write_id, _name(name), section, payload, bool(flags & _SYNC_WRITE))


def decode(kind: int, data: bytes) -> Msg:
    if kind == Kind.OPEN:
        raw = parse(_OPEN, data, "CRC open")
        return OpenMsg(_name(raw.name), _role(raw.role))
    if kind == Kind.CLOSE:
        return CloseMsg(_name(parse(_CLOSE, data, "CRC close").name))
    if kind == Kind.WRITE:
        r = Reader(data, "CRC write body")
        write_id, flags = r.fields(_WRITE_HEAD, "write id and flags")
        name, section = r.text("checkpoint", U16), r.text("section", U16)
        blob = r.blob("data", U32)
        r.end()
        return write_msg(write_id, flags, name, section, blob)
    if kind == Kind.ACK:
        r = Reader(data, "CRC ack body")
        writer, write_id = r.fields(_ACK_HEAD, "writer and write id")
        name = r.text("checkpoint", U16)
        r.end()
        return AckMsg(writer, write_id, _name(name))
    if kind == Kind.CONTENT:
        raw = parse(_CONTENT, data, "CRC content")
        sections = tuple(
            (_name(s.section, "section"), Section(bytes(s.data), int(s.version)))
            for s in raw.sections
        )
        _unique([s for s, _ in sections], "section")
        content = Content(int(raw.version), sections)
        return ContentMsg(_name(raw.name), offer_from(raw.offer), content)
    if kind == Kind.SYNC:
        raw = parse(_SYNC, data, "CRC sync")
        checkpoints = tuple(
            (_name(c.name), tuple((int(h.node), _role(h.role & ~_STALE)) for h in c.holders))
            for c in raw.checkpoints
        )
        _unique([n for n, _ in checkpoints], "checkpoint")
        for _, holders in checkpoints:
            if len({n for n, _ in holders}) != len(holders):
                raise WireError("CRC sync: a holder appears twice")
        stale = tuple(
            (name, nodes)
            for (name, _), c in zip(checkpoints, raw.checkpoints, strict=True)
            if (nodes := tuple(int(h.node) for h in c.holders if h.role & _STALE))
        )
        directory = DirSnapshot(tuple(int(n) for n in raw.members), checkpoints, stale)
        return SyncMsg(offer_from(raw.offer), directory)
    if kind == Kind.NEED:
        parse(_NEED, data, "CRC need")
        return NeedMsg()
    if kind == Kind.DROP:
        raw = parse(_DROP, data, "CRC drop")
        return DropMsg(int(raw.write_id), int(raw.node), _name(raw.name))
    if kind == Kind.SYNCED:
        return SyncedMsg(_name(parse(_SYNCED, data, "CRC synced").name))
    if kind == Kind.FRAGMENT:
        r = Reader(data, "CRC fragment body")
        msg_id, index, count, inner = r.fields(_FRAGMENT_HEAD, "message id, index, count, kind")
        piece = r.blob("piece", U32)
        r.end()
        return FragmentMsg(msg_id, index, count, inner, piece)
    raise WireError(f"unknown CRC kind {kind}")
