"""The component endpoint on a real unix socket, with a memory backend, for the endpoint and
client tests: the bench, raw connections to it and the JSON lines they carry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from haos.model.reports import ErrorReport
from haos.services.agent.endpoint import Endpoint
from haoslab.testing.agentfakes import MemoryAudits, MemoryBackend

APP, OTHER = "n1/app", "n1/other"
HELLO = {"op": "hello", "id": 1, "version": 1, "component": APP, "pid": 4242}
NOW = 42.0  # the endpoint's clock, which dates reports


class Bench:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = MemoryBackend()
        self.audits = MemoryAudits()
        self.reports: list[ErrorReport] = []
        self.opened: list[asyncio.StreamWriter] = []
        self.endpoint = Endpoint(
            path,
            self.backend,
            self.reports.append,
            audits=self.audits,
            components={APP, OTHER},
            clock=lambda: NOW,
        )

    async def raw(self, limit: int = 1 << 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection that has said nothing yet; ``limit`` bounds a line it reads."""
        reader, writer = await asyncio.open_unix_connection(str(self.path), limit=limit)
        self.opened.append(writer)
        return reader, writer

    async def session(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection of APP, registered (and able to read the largest reply)."""
        reader, writer = await self.raw(limit=1 << 26)
        writer.write(json.dumps(HELLO).encode() + b"\n")
        assert await receive(reader) == {"id": 1, "ok": True, "version": 1}
        return reader, writer


async def send(writer: asyncio.StreamWriter, message: object) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    async with asyncio.timeout(10):
        line = await reader.readline()
    assert line, "the endpoint closed the connection"
    message: dict[str, Any] = json.loads(line)
    return message


@asynccontextmanager
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    """The endpoint serving in a task group; its socket is gone once it stopped."""
    b = Bench(tmp_path / "components.sock")
    async with asyncio.TaskGroup() as tg:
        started = asyncio.Event()
        task = tg.create_task(b.endpoint.run(started.set))
        await started.wait()
        try:
            yield b
        finally:
            task.cancel()
            for writer in b.opened:
                writer.close()
    assert not b.path.exists()


def run(body: Callable[[Bench], Awaitable[None]], tmp_path: Path) -> None:
    async def go() -> None:
        async with bench(tmp_path) as b:
            await body(b)

    asyncio.run(go())
