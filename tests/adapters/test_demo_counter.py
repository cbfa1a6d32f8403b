"""The counter demo as a real process, its agent end a real endpoint on a real unix socket.

The test plays the node agent (roles, quiesce) and the cluster (an in-memory backend holding
the checkpoint), and is the service's TCP client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from haos.errors import UnavailableError
from haos.model.states import AvailabilityState
from haos.services.agent.endpoint import Endpoint, Session
from haoslab.testing.agentfakes import MemoryBackend

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
COMPONENT = "n1/demo"
KEY = (COMPONENT, "counter")
PRIMARY, SPARE = AvailabilityState.PRIMARY, AvailabilityState.SPARE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Demo:
    endpoint: Endpoint
    backend: MemoryBackend
    process: asyncio.subprocess.Process
    session: Session
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def ask(self, command: str) -> str:
        reader, writer = await self.connect()
        try:
            return await say(reader, writer, command)
        finally:
            writer.close()


async def say(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str) -> str:
    writer.write(command.encode() + b"\n")
    await writer.drain()
    async with asyncio.timeout(5):
        return (await reader.readline()).decode().strip()


@asynccontextmanager
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    backend = MemoryBackend()
    path = tmp_path / "components.sock"
    endpoint = Endpoint(path, backend, lambda r: None, components={COMPONENT})
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "HAOS_COMPONENT": COMPONENT,
        "HAOS_AGENT_SOCKET": str(path),
    }
    async with asyncio.TaskGroup() as tg:
        started = asyncio.Event()
        serving = tg.create_task(endpoint.run(started.set))
        await started.wait()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "haos.apps.counter", "--host", "127.0.0.1", "--port", str(port),
            "--advertise", f"127.0.0.1:{port}", env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            session = await endpoint.wait_session(COMPONENT, 20)
            yield Demo(endpoint, backend, process, session, port)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            serving.cancel()


def test_counter_serves_only_while_primary_and_survives_a_switchover(tmp_path: Path) -> None:
    async def go() -> None:
        async with demo(tmp_path) as d:
            assert d.session.pid == d.process.pid
            with pytest.raises(ConnectionRefusedError):
                await d.connect()  # not primary: not listening

            await d.session.assign(PRIMARY, False, 10)
            reader, writer = await d.connect()
            assert [await say(reader, writer, "INCR") for _ in range(3)] == ["1", "2", "3"]
            assert await say(reader, writer, "GET") == "3"
            assert await say(reader, writer, "HELLO") == "ERR unknown command (INCR or GET)"
            assert d.backend.checkpoints[KEY] == b"3"
            assert [w[3] for w in d.backend.writes] == [True, True, True]  # synchronous
            assert d.backend.names["demo/counter"] == (f"127.0.0.1:{d.port}", COMPONENT)

            # An increment that cannot be checkpointed is not acknowledged, nor counted.
            d.backend.fail = UnavailableError("no quorum")
            assert (await say(reader, writer, "INCR")).startswith("ERR not checkpointed")
            d.backend.fail = None
            assert await say(reader, writer, "GET") == "3"

            # A planned switchover: quiesce, then spare; the service stops serving.
            await d.session.quiesce(10)
            await d.session.assign(SPARE, True, 10)
            async with asyncio.timeout(5):
                assert await reader.readline() == b""  # the open connection was closed
            writer.close()
            with pytest.raises(ConnectionRefusedError):
                await d.connect()

            # Meanwhile the other member served and checkpointed; back as primary, it goes on
            # from the checkpoint.
            d.backend.checkpoints[KEY] = b"10"
            await d.session.assign(PRIMARY, False, 10)
            assert await d.ask("GET") == "10"
            assert await d.ask("INCR") == "11"

            d.process.send_signal(signal.SIGKILL)
            async with asyncio.timeout(5):
                await d.session.closed.wait()

    asyncio.run(go())


def test_a_line_over_the_limit_is_answered_and_the_counter_serves_on(tmp_path: Path) -> None:
    async def go() -> None:
        async with demo(tmp_path) as d:
            await d.session.assign(PRIMARY, False, 10)
            reader, writer = await d.connect()
            writer.write(b"I" * (1 << 20) + b"\n")  # over asyncio's 64 KiB line limit
            await writer.drain()
            async with asyncio.timeout(5):
                assert (await reader.readline()).strip() == b"ERR line too long"
            writer.close()
            assert await d.ask("INCR") == "1"  # the others are served on
            assert d.process.returncode is None

    asyncio.run(go())


def test_counter_refuses_to_run_without_an_agent() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "haos.apps.counter"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2
    assert "HAOS_COMPONENT and HAOS_AGENT_SOCKET are not set" in done.stderr
