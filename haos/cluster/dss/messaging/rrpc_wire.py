"""RRPC bodies (inside the shared envelope, service RRPC).

    REQUEST (kind 1): server node u32 | caller instance u64 | call id u64 | method Text
                      | payload Blob
    REPLY   (kind 2): caller node u32 | caller instance u64 | call id u64 | status u8
                      | payload Blob (the reply, or the error text as UTF-8)

Requests and replies are multicast with their destination in the body; every other member
drops them silently. The caller instance (random per service object) keeps replies from
reaching a different process on the same node, e.g. one restarted since the call was made.
A retry repeats the call id: the server runs each (caller, instance, call id) once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from construct import Int8ub, Int32ub, Int64ub

from haos.cluster.dss.messaging.codec import Blob, Text, body, build, parse, text_fits
from haos.cluster.dss.wire import WireError


class Kind(enum.IntEnum):
    REQUEST = 1
    REPLY = 2


class Status(enum.IntEnum):
    OK = 0
    ERROR = 1  # the handler raised
    NO_METHOD = 2  # the server has no handler of that name


@dataclass(frozen=True)
class Request:
    server: int
    instance: int
    call_id: int
    method: str
    payload: bytes


@dataclass(frozen=True)
class Reply:
    caller: int
    instance: int
    call_id: int
    status: Status
    payload: bytes


_REQUEST = body(
    "server" / Int32ub,
    "instance" / Int64ub,
    "call_id" / Int64ub,
    "method" / Text,
    "payload" / Blob,
)
_REPLY = body(
    "caller" / Int32ub,
    "instance" / Int64ub,
    "call_id" / Int64ub,
    "status" / Int8ub,
    "payload" / Blob,
)


def valid_method(method: str) -> bool:
    return bool(method) and text_fits(method)


def encode_request(msg: Request) -> bytes:
    return build(_REQUEST, vars(msg))


def encode_reply(msg: Reply) -> bytes:
    return build(_REPLY, {**vars(msg), "status": int(msg.status)})


def decode(kind: int, data: bytes) -> Request | Reply:
    if kind == Kind.REQUEST:
        raw = parse(_REQUEST, data, "RRPC request")
        if not valid_method(raw.method):
            raise WireError(f"RRPC request: bad method name {raw.method!r}")
        return Request(raw.server, raw.instance, raw.call_id, raw.method, bytes(raw.payload))
    if kind == Kind.REPLY:
        raw = parse(_REPLY, data, "RRPC reply")
        try:
            status = Status(raw.status)
        except ValueError:
            raise WireError(f"RRPC reply: unknown status {raw.status}") from None
        return Reply(raw.caller, raw.instance, raw.call_id, status, bytes(raw.payload))
    raise WireError(f"unknown RRPC kind {kind}")
