"""CCR message bodies (construct), inside the shared envelope of :mod:`haos.cluster.dss.wire`.

Kinds and what they carry (integers big-endian; counts and lengths as construct VarInts):

* TXN     a write: request id, compares, operations.
* START   begin a sync round: nonce, the view's members as the sender saw them.
* SYNC    a member's position in a round: nonce, promised epoch, version, content hash,
          whether its quorum source says quorate.
* DATA    one chunk of the round's transfer (a delta of log entries and/or a snapshot).
* READY   a member holds the round's state and promised the round's epoch: nonce, quorate.
* APPLIED a member has applied and made durable everything up to a revision of an epoch.
* ORDER   the epoch's sequencer applied these entries (in this order): apply them too.
* REJECT  the sequencer refused a TXN: a failed compare (key, expected, found) or not quorate.

Every decoder raises :class:`~haos.cluster.dss.wire.WireError` on any malformed input,
including keys that break the key rules, so the protocol never sees an invalid key.

The construct structs below declare every body. TXN, ORDER and APPLIED (sent on every write)
and the stored changes are read and written by hand (:mod:`~haos.cluster.dss.messaging.binary`)
to the same bytes; the tests hold the two to each other.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from construct import (
    Bytes,
    Construct,
    ConstructError,
    Flag,
    GreedyBytes,
    If,
    Int8ub,
    Int32ub,
    Int64ub,
    PascalString,
    Prefixed,
    PrefixedArray,
    Struct,
    Terminated,
    this,
)

from haos.cluster.dss.ccr.model import (
    MAX_VALUE_BYTES,
    Change,
    Compare,
    Delete,
    DeletePrefix,
    Entry,
    Image,
    Item,
    Op,
    Put,
    RequestId,
    Version,
    is_key,
)
from haos.cluster.dss.messaging.binary import Reader, Writer
from haos.cluster.dss.messaging.codec import VarInt64 as VarInt  # bounded: at most 10 bytes
from haos.cluster.dss.wire import Envelope, Service, WireError, decode, encode


class Kind(enum.IntEnum):
    TXN = 1
    START = 2
    SYNC = 3
    DATA = 4
    READY = 5
    APPLIED = 6
    ORDER = 7
    REJECT = 8


class RejectReason(enum.IntEnum):
    CONFLICT = 1
    NOT_QUORATE = 2


@dataclass(frozen=True, order=True)
class Nonce:
    """Names one sync round: the starter's incarnation and its round counter."""

    incarnation: int
    counter: int


@dataclass(frozen=True)
class Txn:
    request: RequestId
    compares: tuple[Compare, ...]
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Start:
    nonce: Nonce
    members: tuple[int, ...]


@dataclass(frozen=True)
class Sync:
    nonce: Nonce
    promised_epoch: int
    version: Version
    hash: bytes
    quorate: bool


@dataclass(frozen=True)
class Data:
    nonce: Nonce
    index: int
    total: int
    chunk: bytes


@dataclass(frozen=True)
class Ready:
    nonce: Nonce
    quorate: bool


@dataclass(frozen=True)
class Applied:
    epoch: int
    revision: int


@dataclass(frozen=True)
class Order:
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Reject:
    """The sequencer refused ``request``; for CONFLICT, the compare that failed."""

    request: RequestId
    reason: RejectReason
    key: str = ""
    expected: int = 0
    found: int = 0


@dataclass(frozen=True)
class Transfer:
    """What the chosen member sends: the entries after ``base`` and, if some member cannot
    use them, a snapshot too."""

    base: Version
    entries: tuple[Entry, ...]
    image: Image | None


Message = Txn | Start | Sync | Data | Ready | Applied | Order | Reject

_U64 = Int64ub
_KEY = PascalString(VarInt, "utf8")
_BLOB = Prefixed(VarInt, GreedyBytes)
_REQUEST = Struct("node" / Int32ub, "incarnation" / _U64, "seq" / _U64)
_NONCE = Struct("incarnation" / _U64, "counter" / _U64)
_VERSION = Struct("epoch" / _U64, "revision" / _U64)
_OP = Struct("kind" / Int8ub, "key" / _KEY, "value" / If(this.kind == 1, _BLOB))
_COMPARE = Struct("key" / _KEY, "mod_revision" / _U64)
_CHANGE = Struct("key" / _KEY, "present" / Flag, "value" / If(this.present, _BLOB))
_ENTRY = Struct(
    "revision" / _U64,
    "epoch" / _U64,
    "request" / _REQUEST,
    "changes" / PrefixedArray(VarInt, _CHANGE),
)
_CHANGES = PrefixedArray(VarInt, _CHANGE)  # stored changes: written by hand, see encode_changes
_ITEM = Struct("key" / _KEY, "value" / _BLOB, "mod_revision" / _U64)
_IMAGE = Struct("version" / _VERSION, "kv" / PrefixedArray(VarInt, _ITEM))

_BODIES: dict[Kind, Construct] = {
    Kind.TXN: Struct(
        "request" / _REQUEST,
        "compares" / PrefixedArray(VarInt, _COMPARE),
        "ops" / PrefixedArray(VarInt, _OP),
        Terminated,
    ),
    Kind.START: Struct("nonce" / _NONCE, "members" / PrefixedArray(VarInt, Int32ub), Terminated),
    Kind.SYNC: Struct(
        "nonce" / _NONCE,
        "promised_epoch" / _U64,
        "version" / _VERSION,
        "hash" / Bytes(32),
        "quorate" / Flag,
        Terminated,
    ),
    Kind.DATA: Struct(
        "nonce" / _NONCE, "index" / Int32ub, "total" / Int32ub, "chunk" / _BLOB, Terminated
    ),
    Kind.READY: Struct("nonce" / _NONCE, "quorate" / Flag, Terminated),
    Kind.APPLIED: Struct("epoch" / _U64, "revision" / _U64, Terminated),
    Kind.ORDER: Struct("entries" / PrefixedArray(VarInt, _ENTRY), Terminated),
    Kind.REJECT: Struct(
        "request" / _REQUEST,
        "reason" / Int8ub,
        "key" / _KEY,
        "expected" / _U64,
        "found" / _U64,
        Terminated,
    ),
}
_TRANSFER = Struct(
    "base" / _VERSION,
    "entries" / PrefixedArray(VarInt, _ENTRY),
    "has_image" / Flag,
    "image" / If(this.has_image, _IMAGE),
    Terminated,
)
_OP_KINDS: dict[type[Any], int] = {Put: 1, Delete: 2, DeletePrefix: 3}

# -- to plain data and back ----------------------------------------------------------------


def _key(key: str) -> str:
    if not is_key(key):
        raise WireError(f"invalid key {key!r}")
    return key


def _entry_raw(e: Entry) -> dict[str, Any]:
    return {
        "revision": e.revision,
        "epoch": e.epoch,
        "request": vars(e.request),
        "changes": [
            {"key": c.key, "present": c.value is not None, "value": c.value} for c in e.changes
        ],
    }


def _entry(raw: Any) -> Entry:
    changes = tuple(Change(_key(c.key), bytes(c.value) if c.present else None) for c in raw.changes)
    return Entry(raw.revision, raw.epoch, _request(raw.request), changes)


def _request(raw: Any) -> RequestId:
    return RequestId(raw.node, raw.incarnation, raw.seq)


def _image_raw(image: Image) -> dict[str, Any]:
    return {
        "version": vars(image.version),
        "kv": [
            {"key": i.key, "value": i.value, "mod_revision": i.mod_revision} for i in image.items
        ],
    }


def _image(raw: Any) -> Image:
    items = tuple(Item(_key(i.key), bytes(i.value), i.mod_revision) for i in raw.kv)
    return Image(Version(raw.version.epoch, raw.version.revision), items)


def _raw(msg: Start | Sync | Data | Ready | Reject) -> tuple[Kind, dict[str, Any]]:
    if isinstance(msg, Start):
        return Kind.START, {"nonce": vars(msg.nonce), "members": list(msg.members)}
    if isinstance(msg, Sync):
        return Kind.SYNC, {
            "nonce": vars(msg.nonce),
            "promised_epoch": msg.promised_epoch,
            "version": vars(msg.version),
            "hash": msg.hash,
            "quorate": msg.quorate,
        }
    if isinstance(msg, Data):
        return Kind.DATA, {
            "nonce": vars(msg.nonce),
            "index": msg.index,
            "total": msg.total,
            "chunk": msg.chunk,
        }
    if isinstance(msg, Ready):
        return Kind.READY, {"nonce": vars(msg.nonce), "quorate": msg.quorate}
    return Kind.REJECT, {
        "request": vars(msg.request),
        "reason": int(msg.reason),
        "key": msg.key,
        "expected": msg.expected,
        "found": msg.found,
    }


def _message(kind: Kind, raw: Any) -> Message:
    """The message of a kind without a hand-written reader (see :data:`_HOT`)."""
    if kind is Kind.REJECT:
        try:
            reason = RejectReason(raw.reason)
        except ValueError:
            raise WireError(f"unknown reject reason {raw.reason}") from None
        key = _key(raw.key) if reason is RejectReason.CONFLICT else raw.key
        return Reject(_request(raw.request), reason, key, raw.expected, raw.found)
    nonce = Nonce(raw.nonce.incarnation, raw.nonce.counter)
    if kind is Kind.START:
        return Start(nonce, tuple(raw.members))
    if kind is Kind.SYNC:
        version = Version(raw.version.epoch, raw.version.revision)
        return Sync(nonce, raw.promised_epoch, version, bytes(raw.hash), bool(raw.quorate))
    if kind is Kind.DATA:
        if not 0 <= raw.index < raw.total:
            raise WireError(f"chunk {raw.index} of {raw.total}")
        return Data(nonce, raw.index, raw.total, bytes(raw.chunk))
    return Ready(nonce, bool(raw.quorate))


# -- public --------------------------------------------------------------------------------

_PARSE_ERRORS = (ConstructError, UnicodeError, ValueError, OverflowError, TypeError, IndexError)


def encode_message(msg: Message) -> bytes:
    if isinstance(msg, Txn | Order | Applied):
        kind, body = encode_hot(msg)
    else:
        kind, raw = _raw(msg)
        body = bytes(_BODIES[kind].build(raw))
    return encode(Envelope(Service.CCR, int(kind), body))


def decode_message(data: bytes) -> Message:
    """The message in ``data``; WireError if it is not a well-formed CCR message."""
    env = decode(data, expect=Service.CCR)
    try:
        kind = Kind(env.kind)
    except ValueError:
        raise WireError(f"unknown CCR message kind {env.kind}") from None
    if kind in _HOT:
        return decode_hot(kind, Reader(env.body, f"CCR {kind.name}"))
    try:
        raw = _BODIES[kind].parse(env.body)
        return _message(kind, raw)
    except WireError:
        raise
    except _PARSE_ERRORS as e:
        raise WireError(f"malformed CCR {kind.name}: {e}") from e


def encode_transfer(t: Transfer) -> bytes:
    return bytes(
        _TRANSFER.build(
            {
                "base": vars(t.base),
                "entries": [_entry_raw(e) for e in t.entries],
                "has_image": t.image is not None,
                "image": _image_raw(t.image) if t.image is not None else None,
            }
        )
    )


def decode_transfer(data: bytes) -> Transfer:
    try:
        raw = _TRANSFER.parse(data)
        entries = tuple(_entry(e) for e in raw.entries)
        image = _image(raw.image) if raw.has_image else None
    except WireError:
        raise
    except _PARSE_ERRORS as e:
        raise WireError(f"malformed CCR transfer: {e}") from e
    return Transfer(Version(raw.base.epoch, raw.base.revision), entries, image)


def encode_changes(changes: Sequence[Change]) -> bytes:
    """The changes of one entry, as the SQLite store keeps them."""
    w = Writer()
    _write_changes(w, changes)
    return w.bytes()


def decode_changes(data: bytes) -> tuple[Change, ...]:
    r = Reader(data, "stored changes")
    changes = _read_changes(r)
    r.end()
    return changes


# -- the hot messages, by hand (same bytes as their structs above) ------------------------

_HOT = frozenset({Kind.TXN, Kind.ORDER, Kind.APPLIED})
_PAIR = struct.Struct(">QQ")  # APPLIED: epoch, revision
_REQUEST_FIELDS = struct.Struct(">IQQ")  # node, incarnation, seq
_ENTRY_HEAD = struct.Struct(">QQIQQ")  # revision, epoch, then the request


def encode_hot(msg: Txn | Order | Applied) -> tuple[Kind, bytes]:
    """The kind and body of a message sent on every write."""
    w = Writer()
    if isinstance(msg, Applied):
        w.fields(_PAIR, msg.epoch, msg.revision)
        return Kind.APPLIED, w.bytes()
    if isinstance(msg, Order):
        w.varint(len(msg.entries))
        for e in msg.entries:
            r = e.request
            w.fields(_ENTRY_HEAD, e.revision, e.epoch, r.node, r.incarnation, r.seq)
            _write_changes(w, e.changes)
        return Kind.ORDER, w.bytes()
    r = msg.request
    w.fields(_REQUEST_FIELDS, r.node, r.incarnation, r.seq)
    w.varint(len(msg.compares))
    for c in msg.compares:
        w.text(c.key)
        w.u64(c.mod_revision)
    w.varint(len(msg.ops))
    for op in msg.ops:
        w.u8(_OP_KINDS[type(op)])
        if isinstance(op, Put):
            w.text(op.key)
            w.blob(op.value)
        else:
            w.text(op.key if isinstance(op, Delete) else op.prefix)
    return Kind.TXN, w.bytes()


def decode_hot(kind: Kind, r: Reader) -> Txn | Order | Applied:
    """The message of a kind sent on every write, read from ``r``; WireError if malformed."""
    if kind is Kind.APPLIED:
        epoch, revision = r.fields(_PAIR, "epoch and revision")
        r.end()
        return Applied(epoch, revision)
    if kind is Kind.ORDER:
        entries = []
        for _ in range(r.varint("entry count")):
            revision, epoch, node, incarnation, seq = r.fields(_ENTRY_HEAD, "entry")
            changes = _read_changes(r)
            entries.append(Entry(revision, epoch, RequestId(node, incarnation, seq), changes))
        r.end()
        if not entries:
            raise WireError("an ORDER without entries")
        return Order(tuple(entries))
    node, incarnation, seq = r.fields(_REQUEST_FIELDS, "request")
    compares = [
        Compare(_key(r.text("compare key")), r.u64("compare revision"))
        for _ in range(r.varint("compare count"))
    ]
    ops = []
    for _ in range(r.varint("operation count")):
        op_kind = r.u8("operation kind")
        key = r.text("operation key")
        ops.append(op_of(op_kind, key, r.blob("value") if op_kind == 1 else b""))
    r.end()
    return Txn(RequestId(node, incarnation, seq), tuple(compares), tuple(ops))


def op_of(kind: int, key: str, value: bytes) -> Op:
    """The operation of a TXN's fields; WireError if it breaks a rule."""
    if kind == 1:
        if len(value) > MAX_VALUE_BYTES:
            raise WireError(f"value of {len(value)} bytes for {key}")
        return Put(_key(key), value)
    if kind == 2:
        return Delete(_key(key))
    if kind == 3:
        return DeletePrefix(key if key == "/" else _key(key))
    raise WireError(f"unknown operation kind {kind}")


def _write_changes(w: Writer, changes: Sequence[Change]) -> None:
    w.varint(len(changes))
    for c in changes:
        w.text(c.key)
        w.flag(c.value is not None)
        if c.value is not None:
            w.blob(c.value)


def _read_changes(r: Reader) -> tuple[Change, ...]:
    changes = []
    for _ in range(r.varint("change count")):
        key = _key(r.text("change key"))
        changes.append(Change(key, r.blob("change value") if r.flag("change flag") else None))
    return tuple(changes)


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into pieces of at most ``size`` bytes (one empty piece for no data)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]
