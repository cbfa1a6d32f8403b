"""The versioned envelope every distributed-service message travels in.

    magic "HA" | version u8 | service u8 | kind u8 | flags u8 | body length u32 | body

Bodies are per service (construct structs in each service's ``wire`` module). A receiver
decodes with :func:`decode`; anything malformed, of an unknown version, service or kind
raises :class:`WireError`, which the service counts and drops — a bad message never crashes
a daemon.
"""

from __future__ import annotations

import enum
import struct
from collections import Counter
from dataclasses import dataclass

from haos.errors import HaosError

VERSION = 1

MAGIC = b"HA"
_HEADER = struct.Struct(">2sBBBBI")  # magic, version, service, kind, flags, body length
HEADER_SIZE = _HEADER.size


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
    """The envelope's bytes; struct.error if a header field does not fit its width."""
    header = _HEADER.pack(MAGIC, env.version, int(env.service), env.kind, env.flags, len(env.body))
    return header + env.body


def decode(data: bytes, expect: Service | None = None) -> Envelope:
    """Decode an envelope; raise WireError naming what is wrong."""
    if len(data) < HEADER_SIZE:
        raise WireError(f"message of {len(data)} bytes is shorter than the header")
    magic, version, service_id, kind, flags, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"malformed envelope: magic {magic!r}, expected {MAGIC!r}")
    if HEADER_SIZE + length > len(data):
        raise WireError(
            f"malformed envelope: length field says {length} but {len(data) - HEADER_SIZE} follow"
        )
    if HEADER_SIZE + length != len(data):
        raise WireError(f"length field says {length} but {len(data) - HEADER_SIZE} follow")
    if version != VERSION:
        raise WireError(f"unsupported wire version {version} (this is {VERSION})")
    try:
        service = Service(service_id)
    except ValueError:
        raise WireError(f"unknown service {service_id}") from None
    if expect is not None and service is not expect:
        raise WireError(f"message for {service.name} arrived on {expect.name}'s group")
    return Envelope(service, kind, bytes(data[HEADER_SIZE:]), flags, version)


class DropCounter:
    """Counts dropped messages by reason, for status output and tests."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        self.counts[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())
