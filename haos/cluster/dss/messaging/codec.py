"""construct helpers for service bodies: strict parsing that turns every failure into WireError.

A body struct built with :func:`body` must consume its input exactly (trailing bytes are an
error). Every list in a body has elements of at least one byte, so a forged count cannot make a
parser loop without consuming input.
"""

from __future__ import annotations

from typing import Any

import construct
from construct import (
    GreedyBytes,
    Int16ub,
    Int32ub,
    PascalString,
    Prefixed,
    PrefixedArray,
    Struct,
    Terminated,
)

from haos.cluster.dss.messaging.binary import MAX_VARINT, MAX_VARINT_BYTES
from haos.cluster.dss.wire import WireError

Text = PascalString(Int16ub, "utf8")  # names, types, methods: up to 64 KiB of UTF-8
Blob = Prefixed(Int32ub, GreedyBytes)  # opaque payloads
NodeList = PrefixedArray(Int32ub, Int32ub)

MAX_TEXT = 0xFFFF
MAX_BLOB = 0xFFFFFFFF


class _VarInt64(construct.Construct):  # type: ignore[misc]  # construct is untyped
    """construct's ``VarInt`` (the same bytes) bounded to 64 bits: at most ten bytes are read.

    construct's own reads any number of continuation bytes and then shifts the groups into one
    integer, a cost that grows with the square of the run: seconds for a few hundred kB.
    """

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        value = 0
        for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
            byte: int = construct.core.stream_read(stream, 1, path)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > MAX_VARINT:
                    break
                return value
        raise construct.IntegerError(
            f"a VarInt of more than 64 bits (at most {MAX_VARINT_BYTES} bytes)", path=path
        )

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> int:
        if isinstance(obj, int) and obj > MAX_VARINT:
            raise construct.IntegerError(f"a VarInt cannot hold {obj}", path=path)
        return int(construct.VarInt._build(obj, stream, context, path))


VarInt64 = _VarInt64()


def body(*fields: Any) -> Any:
    """A struct of ``fields`` that must consume the whole body."""
    return Struct(*fields, Terminated)


def parse(struct: Any, data: bytes, what: str) -> Any:
    """Parse ``data`` with ``struct``; any failure (short, trailing, bad UTF-8) is WireError."""
    try:
        return struct.parse(data)
    except Exception as e:  # construct raises ConstructError, UnicodeDecodeError, ValueError...
        raise WireError(f"malformed {what} body: {type(e).__name__}: {e}") from e


def build(struct: Any, value: dict[str, Any]) -> bytes:
    """Build a body; the caller has validated the values, so a failure here is a bug."""
    return bytes(struct.build(value))


def text_fits(value: str) -> bool:
    """True if ``value`` is printable, encodable UTF-8 and short enough for a Text field."""
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(encoded) <= MAX_TEXT and value.isprintable()
