"""JSON lines over a socket, bounded: the one reader and writer every haos socket uses.

Both haos sockets (the node daemon's control socket and the agent's application socket) carry
one JSON object per line, at most :data:`haos.limits.MAX_SOCKET_LINE` bytes. The same rules
hold at both ends of both sockets:

* a line longer than the limit is :class:`LineTooLong` (a sender refuses to send it, a
  receiver answers it with that error and closes the connection);
* a line that is not one JSON object is :class:`BadLine`, and so is a value no haos field
  can hold: nesting deeper than :data:`MAX_DEPTH`, an integer of more than
  :data:`MAX_INT_DIGITS` digits, a number that is not finite (``1e400``, ``NaN``,
  ``Infinity``). The error names where in the object the value is (``limit``, ``a.b[2]``).

So nothing a peer sends can raise anything else out of a handler (``RecursionError`` in the
parser, ``ValueError`` of Python's integer digit limit, ``LimitOverrunError`` of asyncio), and
nothing past the parser sees a number it cannot compare. This module imports only
:mod:`haos.errors` and :mod:`haos.limits`: the application library uses it too.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from haos.errors import UsageError
from haos.limits import MAX_SOCKET_LINE

# Deeper than any message haos sends (the status answer is about six levels deep).
MAX_DEPTH = 32
# More digits than any id, revision, seq or count haos uses (2**64 has 20).
MAX_INT_DIGITS = 30

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


class BadLine(UsageError):
    """A line that is not one JSON object haos can use; the text says what and where.

    ``obj`` is the object on the line when the problem is inside it (a refused number, too
    deep nesting): its plain top-level fields (an integer ``id``) may still be read, so the
    answer can name the request it refuses.
    """

    def __init__(self, message: str, obj: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.obj = obj


class LineTooLong(BadLine):
    """A line (request or answer) longer than the socket's limit."""

    code = "line-too-long"

    def __init__(self, what: str, size: int | None, limit: int) -> None:
        self.limit = limit
        got = "" if size is None else f" ({size} bytes)"
        super().__init__(
            f"{what}{got} is longer than the limit of {limit} bytes per line"
            " (haos.limits.MAX_SOCKET_LINE)"
        )


class _Refused:
    """A number the parser met that no field may hold; :func:`loads` reports where."""

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str = "is not a finite number") -> None:
        self.text = text
        self.why = why


def _parse_int(text: str) -> int | _Refused:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:  # before int(): that is quadratic in digits
        return _Refused(text, f"has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_Refused)


def loads(line: bytes | str) -> Any:
    """The JSON value on ``line``; :class:`BadLine` for anything haos cannot use."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        value = _DECODER.decode(text)
    except RecursionError:
        raise BadLine(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise BadLine(f"not JSON: {e}") from None
    try:
        _check_values(value)
    except BadLine as e:
        raise BadLine(str(e), value if isinstance(value, dict) else None) from None
    return value


def decode(line: bytes | str) -> dict[str, Any]:
    """The JSON object on ``line`` (see :func:`loads`); :class:`BadLine` for anything else."""
    value = loads(line)
    if not isinstance(value, dict):
        raise BadLine(f"not a JSON object but {_kind(value)}")
    return value


def _check_values(value: object) -> None:
    """Raise BadLine naming the path of the first refused number or too deep nesting."""
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, _Refused):
            where = path or "the value"
            raise BadLine(f"{where}: {_shorten(item.text)} {item.why}")
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise BadLine(f"{path or 'the value'}: nested deeper than {MAX_DEPTH} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, sub in pairs:
                step = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
                stack.append((sub, step.lstrip("."), depth + 1))


def _shorten(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def encode(message: Mapping[str, Any], *, what: str = "request") -> bytes:
    """``message`` as one line; :class:`LineTooLong` when it is over the limit."""
    try:
        line = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    except ValueError as e:  # NaN or an infinity: the other end would refuse the line
        raise BadLine(f"the {what} holds a number that is not finite: {e}") from None
    if len(line) > MAX_SOCKET_LINE:
        raise LineTooLong(f"the {what}", len(line), MAX_SOCKET_LINE)
    return line


# --- asyncio streams ----------------------------------------------------------------------


async def start_unix_server(handler: Handler, path: str) -> asyncio.Server:
    """A unix socket server whose connections read lines of up to the limit."""
    return await asyncio.start_unix_server(handler, path, limit=MAX_SOCKET_LINE)


async def open_unix_connection(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path, limit=MAX_SOCKET_LINE)


async def read_line(reader: asyncio.StreamReader, what: str = "a request line") -> bytes | None:
    """The next line (with its newline), None at the end; :class:`LineTooLong` if over the
    limit. The reader must come from this module (its buffer limit is the line limit)."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: the line is past the limit
        raise LineTooLong(what, None, MAX_SOCKET_LINE) from None
    return line or None


async def read_message(
    reader: asyncio.StreamReader, what: str = "a request line"
) -> dict[str, Any] | None:
    """The next object (see :func:`decode`), None at the end of the stream."""
    line = await read_line(reader, what)
    return None if line is None else decode(line)


# --- blocking sockets ---------------------------------------------------------------------


class SocketLines:
    """Lines from a blocking socket, each at most the limit (one buffer, no copying per
    chunk: a 20 MiB answer arrives in linear time)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def read(self, what: str = "an answer line") -> bytes | None:
        """The next line without its newline; None when the peer closed first. Socket
        errors (a timeout too) pass through; :class:`LineTooLong` past the limit."""
        scanned = 0
        while (end := self._buf.find(b"\n", scanned)) < 0:
            scanned = len(self._buf)
            if scanned > MAX_SOCKET_LINE:
                raise LineTooLong(what, None, MAX_SOCKET_LINE)
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line
