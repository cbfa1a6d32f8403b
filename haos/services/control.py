"""The node daemon's control channel: JSON lines over a unix socket.

A request is one JSON object with an ``op``; the answer is one JSON object with ``ok``
(and ``error``/``message`` when false). Streaming ops (``watch``, ``events``) answer with one
object per line until the client closes. :class:`ControlClient` is the blocking client that
tests, benchmarks and tools use; it is safe to use one client per thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from haos.errors import HaosError, UnavailableError

MAX_LINE = 4 * 1024 * 1024


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
        """One request, one answer; ControlError if the daemon says it failed."""
        try:
            with self._connect() as sock:
                sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
                line = _read_line(sock)
        except OSError as e:  # the daemon died or went away mid-request
            raise UnavailableError(f"node daemon at {self.path}: {e}") from e
        return _answer(line, self.path)

    def stream(self, op: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """The objects of a streaming op, until the daemon closes or the caller stops."""
        sock = self._connect()
        sock.settimeout(None)
        try:
            sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            buf = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield json.loads(line)
        finally:
            sock.close()


def _read_line(sock: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except TimeoutError as e:
            raise UnavailableError("node daemon did not answer in time") from e
        if not chunk:
            raise UnavailableError("node daemon closed the connection without an answer")
        buf += chunk
        if len(buf) > MAX_LINE:
            raise UnavailableError("node daemon answer too long")
    return buf.split(b"\n", 1)[0]


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
                answer = _answer(await reader.readline(), self.path)
            finally:
                writer.close()
        return answer

    async def stream(self, op: str, **fields: Any) -> AsyncIterator[dict[str, Any]]:
        """A streaming op: yields each object after the opening answer; ends with
        UnavailableError when the daemon goes away."""
        reader, writer = await self._open(op, fields)
        try:
            async with asyncio.timeout(self.timeout):
                _answer(await reader.readline(), self.path)
            while True:
                line = await reader.readline()
                if not line:
                    raise UnavailableError(f"node daemon at {self.path} closed the stream")
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise UnavailableError(f"node daemon at {self.path} sent garbage: {e}") from e
        finally:
            writer.close()

    async def _open(
        self, op: str, fields: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
            writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            await writer.drain()
        except OSError as e:
            raise UnavailableError(f"node daemon at {self.path} unreachable: {e}") from e
        return reader, writer


def _answer(line: bytes, path: str) -> dict[str, Any]:
    if not line:
        raise UnavailableError(f"node daemon at {path} closed the connection")
    try:
        answer: dict[str, Any] = json.loads(line)
    except ValueError as e:
        raise UnavailableError(f"node daemon at {path} sent garbage: {e}") from e
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")), str(answer.get("message")))
    return answer
