"""The versioned envelope every distributed-service message travels in.

    magic "HA" | version u8 | service u8 | kind u8 | flags u8 | body length u32 | body

Bodies are per service (construct structs in each service's ``wire`` module). A receiver
decodes with :func:`decode`; anything malformed, of an unknown version, service or kind
raises :class:`WireError`, which the service counts and drops — a bad message never crashes
a daemon.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from construct import Bytes, Const, ConstructError, Int8ub, Int32ub, Struct, this

from haos.errors import HaosError

VERSION = 1

_ENVELOPE = Struct(
    "magic" / Const(b"HA"),
    "version" / Int8ub,
    "service" / Int8ub,
    "kind" / Int8ub,
    "flags" / Int8ub,
    "length" / Int32ub,
    "body" / Bytes(this.length),
)
HEADER_SIZE = 10


class Service(enum.IntEnum):
    CMM = 1
    CCR = 2
    CES = 3
    CNS = 4
    CRC = 5
    RRPC = 6
    AM = 7
    CRIM = 8


class WireError(HaosError):
    """A message that cannot be decoded; it was dropped."""

    code = "wire"


@dataclass(frozen=True)
class Envelope:
    service: Service
    kind: int
    body: bytes
    flags: int = 0
    version: int = VERSION


def encode(env: Envelope) -> bytes:
    return bytes(
        _ENVELOPE.build(
            {
                "version": env.version,
                "service": int(env.service),
                "kind": env.kind,
                "flags": env.flags,
                "length": len(env.body),
                "body": env.body,
            }
        )
    )


def decode(data: bytes, expect: Service | None = None) -> Envelope:
    """Decode an envelope; raise WireError naming what is wrong."""
    if len(data) < HEADER_SIZE:
        raise WireError(f"message of {len(data)} bytes is shorter than the header")
    try:
        raw = _ENVELOPE.parse(data)
    except ConstructError as e:
        raise WireError(f"malformed envelope: {e}") from e
    if HEADER_SIZE + raw.length != len(data):
        raise WireError(f"length field says {raw.length} but {len(data) - HEADER_SIZE} follow")
    if raw.version != VERSION:
        raise WireError(f"unsupported wire version {raw.version} (this is {VERSION})")
    try:
        service = Service(raw.service)
    except ValueError:
        raise WireError(f"unknown service {raw.service}") from None
    if expect is not None and service is not expect:
        raise WireError(f"message for {service.name} arrived on {expect.name}'s group")
    return Envelope(service, raw.kind, bytes(raw.body), raw.flags, raw.version)


class DropCounter:
    """Counts dropped messages by reason, for status output and tests."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        self.counts[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())
