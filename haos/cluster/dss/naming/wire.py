"""CNS bodies (inside the shared envelope, service CNS).

BIND   (kind 1): request id u64 | flags u8 (bit 0: rebind) | name Text | handle Blob
                 | owner node u32
UNBIND (kind 2): request id u64 | flags u8 (bit 0: only if bound to handle) | name Text
                 | handle Blob
SYNC   (kind 3): offer (see messaging.syncwire) | table change count u64 | members
                 | bindings: count u32, then (name Text, handle Blob, owner u32, stamp u64)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from construct import Int8ub, Int32ub, Int64ub, PrefixedArray, Struct

from haos.cluster.dss.messaging.codec import Blob, NodeList, Text, body, build, parse
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.messaging.syncwire import OfferStruct, offer_from, offer_value
from haos.cluster.dss.naming.table import Bind, Binding, Snapshot, Unbind, validate_name
from haos.cluster.dss.wire import WireError
from haos.errors import UsageError


class Kind(enum.IntEnum):
    BIND = 1
    UNBIND = 2
    SYNC = 3


_FLAG = 0x01

_BIND = body("req" / Int64ub, "flags" / Int8ub, "name" / Text, "handle" / Blob, "owner" / Int32ub)
_UNBIND = body("req" / Int64ub, "flags" / Int8ub, "name" / Text, "handle" / Blob)
_BINDING = Struct("name" / Text, "handle" / Blob, "owner" / Int32ub, "stamp" / Int64ub)
_SYNC = body(
    "offer" / OfferStruct,
    "stamp" / Int64ub,
    "members" / NodeList,
    "bindings" / PrefixedArray(Int32ub, _BINDING),
)


@dataclass(frozen=True)
class Sync:
    offer: Offer
    snapshot: Snapshot


def encode_bind(req: int, op: Bind) -> bytes:
    value = {
        "req": req,
        "flags": _FLAG if op.replace else 0,
        "name": op.name,
        "handle": op.handle,
        "owner": op.owner,
    }
    return build(_BIND, value)


def encode_unbind(req: int, op: Unbind) -> bytes:
    value = {
        "req": req,
        "flags": 0 if op.expect is None else _FLAG,
        "name": op.name,
        "handle": op.expect or b"",
    }
    return build(_UNBIND, value)


def encode_sync(msg: Sync) -> bytes:
    snap = msg.snapshot
    value = {
        "offer": offer_value(msg.offer),
        "stamp": snap.stamp,
        "members": list(snap.members),
        "bindings": [vars(b) for b in snap.bindings],
    }
    return build(_SYNC, value)


def _name(name: str) -> str:
    try:
        validate_name(name)
    except UsageError as e:
        raise WireError(f"CNS: {e}") from None
    return name


def _flags(raw: int) -> bool:
    if raw & ~_FLAG:
        raise WireError(f"CNS: unknown flags {raw:#x}")
    return bool(raw & _FLAG)


def decode(kind: int, data: bytes) -> tuple[int, Bind | Unbind] | Sync:
    if kind == Kind.BIND:
        raw = parse(_BIND, data, "CNS bind")
        op = Bind(_name(raw.name), bytes(raw.handle), int(raw.owner), _flags(raw.flags))
        return int(raw.req), op
    if kind == Kind.UNBIND:
        raw = parse(_UNBIND, data, "CNS unbind")
        expect = bytes(raw.handle) if _flags(raw.flags) else None
        if expect is None and raw.handle:
            raise WireError("CNS unbind: a handle without the flag that says to compare it")
        return int(raw.req), Unbind(_name(raw.name), expect)
    if kind == Kind.SYNC:
        raw = parse(_SYNC, data, "CNS sync")
        bindings = tuple(
            Binding(_name(b.name), bytes(b.handle), int(b.owner), int(b.stamp))
            for b in raw.bindings
        )
        if len({b.name for b in bindings}) != len(bindings):
            raise WireError("CNS sync: a name is bound twice")
        snap = Snapshot(int(raw.stamp), tuple(int(n) for n in raw.members), bindings)
        return Sync(offer_from(raw.offer), snap)
    raise WireError(f"unknown CNS kind {kind}")
