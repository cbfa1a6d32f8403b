"""Strict reading and writing of wire fields by hand, for the messages sent on every write.

construct interprets a struct field by field, tens of microseconds per message: on a node
where corosync's real-time threads take most of the cores while messages flow, that work sits
on every hop of a write. The hot messages (the CCR's TXN, ORDER and APPLIED, and the changes
its store keeps) are therefore read and written here, with the same encodings construct uses
for the others, so the bytes are the same either way:

* fixed-width integers big-endian (``Int8ub`` ... ``Int64ub``);
* ``VarInt``: unsigned LEB128, seven bits a byte, least significant group first, at most
  :data:`MAX_VARINT_BYTES` bytes (64 bits);
* ``Flag``: one byte, zero is false;
* text: ``PascalString(VarInt, "utf8")``, blob: ``Prefixed(VarInt, GreedyBytes)``; or, with
  ``length=U16``/``U32``, a fixed-width length (the services' ``Text`` and ``Blob``).

Reading is strict: a field that runs past the end, text that is not UTF-8 and bytes left
after the last field each raise :class:`~haos.cluster.dss.wire.WireError` naming the message
and the field. (construct's compiled parsers are not used because they return short strings
and byte fields instead of failing.)
"""

from __future__ import annotations

import struct

from haos.cluster.dss.wire import WireError

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")

# A VarInt holds at most 64 bits: ten groups of seven. A longer run of continuation bytes is
# refused at the eleventh byte; read on, it would build an integer as long as the message, at a
# cost that grows with the square of its length.
MAX_VARINT_BYTES = 10
MAX_VARINT = 2**64 - 1
_LAST_SHIFT = 7 * (MAX_VARINT_BYTES - 1)


class Reader:
    """Reads the fields of one message body in order; :meth:`end` checks nothing is left."""

    __slots__ = ("_at", "_data", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self.what = what

    def fields(self, layout: struct.Struct, field: str) -> tuple[int, ...]:
        """Fixed-width fields, unpacked with ``layout``."""
        at = self._at
        end = at + layout.size
        if end > len(self._data):
            raise self._short(field)
        self._at = end
        return layout.unpack_from(self._data, at)

    def u8(self, field: str) -> int:
        return self.fields(U8, field)[0]

    def u64(self, field: str) -> int:
        return self.fields(U64, field)[0]

    def flag(self, field: str) -> bool:
        return self.u8(field) != 0

    def varint(self, field: str) -> int:
        """An unsigned LEB128 of at most :data:`MAX_VARINT_BYTES` bytes and 64 bits."""
        data, at = self._data, self._at
        value = shift = 0
        while True:
            if at >= len(data):
                raise self._short(field)
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if shift == _LAST_SHIFT and byte > 1:  # the tenth byte holds bit 63 only
                    break
                self._at = at
                return value
            shift += 7
            if shift > _LAST_SHIFT:
                break
        raise WireError(
            f"malformed {self.what}: {field} is a VarInt of more than 64 bits "
            f"(at most {MAX_VARINT_BYTES} bytes)"
        )

    def blob(self, field: str, length: struct.Struct | None = None) -> bytes:
        """Bytes after their length: a VarInt, or a fixed-width ``length``."""
        size = self.varint(field) if length is None else self.fields(length, field)[0]
        at = self._at
        end = at + size
        if end > len(self._data):
            raise self._short(field)
        self._at = end
        return self._data[at:end]

    def text(self, field: str, length: struct.Struct | None = None) -> str:
        raw = self.blob(field, length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError(f"malformed {self.what}: {field} is not UTF-8 ({e.reason})") from None

    def end(self) -> None:
        left = len(self._data) - self._at
        if left:
            raise WireError(f"malformed {self.what}: {left} bytes after the last field")

    def _short(self, field: str) -> WireError:
        return WireError(
            f"malformed {self.what}: {field} runs past the end of the {len(self._data)} bytes"
        )


class Writer:
    """Collects the fields of one message body; :meth:`bytes` joins them."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def fields(self, layout: struct.Struct, *values: int) -> None:
        self._parts.append(layout.pack(*values))

    def u8(self, value: int) -> None:
        self._parts.append(U8.pack(value))

    def u64(self, value: int) -> None:
        self._parts.append(U64.pack(value))

    def flag(self, value: bool) -> None:
        self._parts.append(b"\x01" if value else b"\x00")

    def varint(self, value: int) -> None:
        if not 0 <= value <= MAX_VARINT:
            raise ValueError(f"a VarInt cannot hold {value}")
        out = bytearray()
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        self._parts.append(bytes(out))

    def blob(self, value: bytes, length: struct.Struct | None = None) -> None:
        if length is None:
            self.varint(len(value))
        else:
            self._parts.append(length.pack(len(value)))
        self._parts.append(value)

    def text(self, value: str, length: struct.Struct | None = None) -> None:
        self.blob(value.encode("utf-8"), length)

    def bytes(self) -> bytes:
        return b"".join(self._parts)
