"""The node daemon's control channel: JSON lines over a unix socket.

A request is one JSON object with an ``op``; the answer is one JSON object with ``ok``
(and ``error``/``message`` when false). Streaming ops (``watch``, ``events``, ``orders``)
answer with one object per line until the client closes (``events`` with ``follow`` false:
until the records kept are sent). The ops and their typed requests are declared once, in
:mod:`haos.services.controlops` (:data:`OPS` is their field checks): a bad, missing or unknown
field is a ``usage`` error naming it. Lines travel through :mod:`haos.jsonlines`, at most
:data:`haos.limits.MAX_SOCKET_LINE` bytes each. :class:`ControlClient` is the blocking client that
tests, benchmarks and tools use; it is safe to use one client per thread.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from haos import jsonlines
from haos.errors import HaosError, UnavailableError
from haos.limits import MAX_SOCKET_LINE
from haos.services.controlops import FIELDS

MAX_LINE = MAX_SOCKET_LINE

# Every operation of the control socket and its fields (declared once, in
# haos.services.controlops): the daemon checks each request against them before any handler
# sees it.
OPS = FIELDS


class BadAnswer(UnavailableError):
    """The daemon's answer is not what the protocol says (not JSON, not an object, too long,
    a field missing or of the wrong type)."""

    code = "bad-answer"


class ControlError(HaosError):
    """The daemon answered a request with an error."""

    code = "control"

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        super().__init__(f"{error}: {message}")


class ControlClient:
    def __init__(self, path: Path | str, timeout: float = 15.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise UnavailableError(f"node daemon at {self.path} unreachable: {e}") from e
        return sock

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request, one answer; ControlError if the daemon says it failed, LineTooLong
        (nothing sent) if the request is over the line limit, BadAnswer for a malformed
        answer."""
        line = jsonlines.encode({"op": op, **fields})
        try:
            with self._connect() as sock:
                sock.sendall(line)
                answer = _read_line(jsonlines.SocketLines(sock), self.path)
        except OSError as e:  # the daemon died or went away mid-request
            raise UnavailableError(f"node daemon at {self.path}: {e}") from e
        return _answer(answer, self.path)

    def stream(self, op: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """The objects of a streaming op, until the daemon closes or the caller stops."""
        line = jsonlines.encode({"op": op, **fields})
        sock = self._connect()
        sock.settimeout(None)
        try:
            sock.sendall(line)
            lines = jsonlines.SocketLines(sock)
            while (item := _read_line(lines, self.path, end_ok=True)) is not None:
                yield _decoded(item, self.path)
        finally:
            sock.close()


def _read_line(lines: jsonlines.SocketLines, path: str, end_ok: bool = False) -> bytes | None:
    try:
        line = lines.read()
    except TimeoutError as e:
        raise UnavailableError(f"node daemon at {path} did not answer in time") from e
    except jsonlines.LineTooLong as e:
        raise BadAnswer(f"node daemon at {path}: {e}") from None
    if line is None and not end_ok:
        raise UnavailableError(f"node daemon at {path} closed the connection without an answer")
    return line


class AsyncControlClient:
    """The asyncio client of the control channel (for daemons on the node: the agent)."""

    def __init__(self, path: Path | str, timeout: float = 15.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Like :meth:`ControlClient.request`."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await self._open(op, fields)
            try:
                answer = _answer(await self._line(reader), self.path)
            finally:
                writer.close()
        return answer

    async def stream(self, op: str, **fields: Any) -> AsyncIterator[dict[str, Any]]:
        """A streaming op: yields each object after the opening answer; ends with
        UnavailableError when the daemon goes away."""
        reader, writer = await self._open(op, fields)
        try:
            async with asyncio.timeout(self.timeout):
                _answer(await self._line(reader), self.path)
            while True:
                line = await self._line(reader)
                if line is None:
                    raise UnavailableError(f"node daemon at {self.path} closed the stream")
                yield _decoded(line, self.path)
        finally:
            writer.close()

    async def _line(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await jsonlines.read_line(reader, "an answer line")
        except jsonlines.LineTooLong as e:
            raise BadAnswer(f"node daemon at {self.path}: {e}") from None
        except ConnectionError as e:
            raise UnavailableError(f"node daemon at {self.path}: {e}") from e

    async def _open(
        self, op: str, fields: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        line = jsonlines.encode({"op": op, **fields})
        try:
            reader, writer = await jsonlines.open_unix_connection(self.path)
            writer.write(line)
            await writer.drain()
        except OSError as e:
            raise UnavailableError(f"node daemon at {self.path} unreachable: {e}") from e
        return reader, writer


def _decoded(line: bytes, path: str) -> dict[str, Any]:
    try:
        return jsonlines.decode(line)
    except jsonlines.BadLine as e:
        raise BadAnswer(f"node daemon at {path} sent a bad answer: {e}") from None


def _answer(line: bytes | None, path: str) -> dict[str, Any]:
    if not line:
        raise UnavailableError(f"node daemon at {path} closed the connection")
    answer = _decoded(line, path)
    ok = answer.get("ok")
    if ok is True:
        return answer
    if ok is not False:
        raise BadAnswer(f"node daemon at {path} sent an answer without ok: true or false")
    error, message = answer.get("error"), answer.get("message")
    if not isinstance(error, str) or not isinstance(message, str):
        raise BadAnswer(f"node daemon at {path} sent an error without its code and message")
    raise ControlError(error, message)
