"""CES bodies (inside the shared envelope, service CES).

    PUBLISH (kind 1): seq u64 | event type Text | payload Blob

``seq`` counts the publisher's own publications, so a subscriber can tell two events of one
publisher apart and see that they arrive in publication order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from construct import Int64ub

from haos.cluster.dss.messaging.codec import Blob, Text, body, build, parse, text_fits
from haos.cluster.dss.wire import WireError
from haos.errors import UsageError

MAX_TYPE = 1024  # bytes of UTF-8


class Kind(enum.IntEnum):
    PUBLISH = 1


@dataclass(frozen=True)
class Publish:
    seq: int
    event_type: str
    payload: bytes


_PUBLISH = body("seq" / Int64ub, "event_type" / Text, "payload" / Blob)


def validate_type(event_type: str, *, prefix: bool = False) -> None:
    """Raise UsageError unless ``event_type`` is a valid type (or, with ``prefix``, a prefix)."""
    if not text_fits(event_type) or len(event_type.encode()) > MAX_TYPE:
        raise UsageError(f"event type {event_type!r} is not printable UTF-8 of <= {MAX_TYPE} B")
    if not event_type and not prefix:
        raise UsageError("an event type is not empty")


def encode_publish(msg: Publish) -> bytes:
    return build(_PUBLISH, {"seq": msg.seq, "event_type": msg.event_type, "payload": msg.payload})


def decode(kind: int, data: bytes) -> Publish:
    if kind != Kind.PUBLISH:
        raise WireError(f"unknown CES kind {kind}")
    raw = parse(_PUBLISH, data, "CES publish")
    event_type = str(raw.event_type)
    try:
        validate_type(event_type)
    except UsageError as e:
        raise WireError(f"CES publish: {e}") from None
    return Publish(int(raw.seq), event_type, bytes(raw.payload))
