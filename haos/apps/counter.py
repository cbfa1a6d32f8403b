"""The demo service: a TCP counter that survives a fail-over.

Line protocol: ``INCR`` answers the new value, ``GET`` the current one; anything else gets
``ERR ...``. Only the primary listens: while the component is anything else the port is
closed, and connections open when it stops being primary are closed. Every increment is
checkpointed synchronously before it is answered, and a new primary reads the checkpoint
before it listens, so no answered increment is lost by a fail-over. The primary binds the
service's name (``--name``, default ``demo/counter``) to its ``--advertise`` address (default
``<host name>:<port>``) in the cluster's names, so clients find the current primary (best
effort: a failed bind is logged, the service runs on).

It logs ``primary: serving ... (at T)`` and ``no longer primary ... (at T)``, T the system's
monotonic clock (``time.monotonic()``) just before its port opens and just after its last
answer: every process on the machine (every container of a lab cluster too) shares that clock,
so the serving times of the members can be compared.

Run by a node agent (``manager = { kind = "client", command = ["python3", "-m",
"haos.apps.counter"] }``)::

    python3 -m haos.apps.counter [--host ADDR] [--port N] [--name NAME] [--advertise HOST:PORT]

The address and port default to ``HAOS_DEMO_HOST`` / ``HAOS_DEMO_PORT`` (0.0.0.0:7070). When
the agent connection is lost the service keeps its role and registers again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence

from haos import trace
from haos.client import Assignment, Client
from haos.errors import HaosError, UnavailableError

log = logging.getLogger("haos.apps.counter")

SECTION = "counter"
RECONNECT = 0.5  # seconds between attempts to register again


class Counter:
    """The service; :meth:`become` carries out a role, :meth:`quiesce` prepares a switchover."""

    def __init__(self, host: str, port: int, name: str = "", advertise: str = "") -> None:
        self.host, self.port = host, port
        self.name = name
        self.advertise = advertise or f"{socket.gethostname()}:{port}"
        self.value = 0
        self.primary = False
        self.client: Client | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._lock = asyncio.Lock()  # one increment at a time, in checkpoint order
        self._bind: asyncio.Task[None] | None = None
        self._since: float | None = None  # serving began, until the first increment

    async def become(self, assignment: Assignment) -> None:
        trace.point("app.role", assignment.state)
        if assignment.primary and not self.primary:
            await self._take_over()
        elif not assignment.primary and self.primary:
            await self._step_down()

    async def quiesce(self) -> None:
        """Stop serving once the increment in progress is checkpointed (a switchover is next:
        the new primary must read the last value this one answered)."""
        if self.primary:
            await self._step_down()
        log.info("quiesced at %d", self.value)

    async def _take_over(self) -> None:
        assert self.client is not None
        data = await self.client.checkpoint_read(SECTION)
        self.value = int(data.decode()) if data else 0
        began = time.monotonic()  # before the port opens: the earliest it can answer
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.primary = True
        self._since = time.monotonic()
        trace.point("app.serving", self.value)
        log.info(
            "primary: serving on %s:%d from %d (at %.6f)", self.host, self.port, self.value, began
        )
        if self.name:  # a repository write: not on the way to serving and acking the role
            self._bind = asyncio.create_task(self._bind_name(self.client))

    async def _bind_name(self, client: Client) -> None:
        try:
            await client.name_bind(self.name, self.advertise)
        except HaosError as e:
            log.warning("cannot bind %s to %s: %s", self.name, self.advertise, e)

    async def _step_down(self) -> None:
        self.primary = False
        self._close_listener()
        async with self._lock:  # the increment in progress is answered first
            for writer in list(self._connections):
                writer.close()
        # after this no answer can be given: the last increment's is written already
        log.info("no longer primary (counter at %d; at %.6f)", self.value, time.monotonic())

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while self.primary and (line := await reader.readline()):
                writer.write((await self._command(line.decode(errors="replace").strip())) + b"\n")
                await writer.drain()
        except ValueError:  # a line over the stream's limit: answer it, then hang up
            writer.write(b"ERR line too long\n")
        except ConnectionError:
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _command(self, command: str) -> bytes:
        if command == "GET":
            return str(self.value).encode()
        if command != "INCR":
            return b"ERR unknown command (INCR or GET)"
        async with self._lock:
            if not self.primary or self.client is None:
                return b"ERR not primary"
            value = self.value + 1
            if self._since is not None:
                trace.point("app.incr", value)
            try:
                await self.client.checkpoint_write(SECTION, str(value).encode(), sync=True)
            except HaosError as e:
                return f"ERR not checkpointed: {e}".encode()
            self.value = value
            if self._since is not None:
                took = (time.monotonic() - self._since) * 1e3
                trace.point("app.first", value)
                log.info("first increment answered %.1f ms after serving began", took)
                self._since = None
        return str(value).encode()


async def _alive() -> tuple[bool, str]:
    return True, "serving loop answers"


async def run(
    counter: Counter, client: Client, audit_period: float = 0.0, audit_timeout: float = 0.0
) -> None:
    """Register and follow the roles until the connection ends."""
    counter.client = client
    await client.register()
    if audit_period > 0:  # the HM asks; a hung process cannot answer
        await client.register_audit("alive", audit_period, audit_timeout, _alive)
    async for assignment in client.assignments():
        try:
            await counter.become(assignment)
        except (OSError, HaosError, ValueError) as e:
            log.error("cannot become %s: %s", assignment.state, e)
            await client.ack(assignment, ok=False, message=str(e))
        else:
            await client.ack(assignment)


async def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if not os.environ.get("HAOS_COMPONENT") or not os.environ.get("HAOS_AGENT_SOCKET"):
        print("haos.apps.counter: run it under a haos node agent (HAOS_COMPONENT and "
              "HAOS_AGENT_SOCKET are not set)", file=sys.stderr)  # fmt: skip
        return 2
    trace.from_env()
    counter = Counter(args.host, args.port, args.name, args.advertise)
    while True:
        try:
            async with Client.from_env(on_quiesce=counter.quiesce) as client:
                await run(counter, client, args.audit_period, args.audit_timeout)
        except UnavailableError as e:
            log.warning("agent connection: %s; registering again", e)
        await asyncio.sleep(RECONNECT)  # back off before registering again


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m haos.apps.counter", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HAOS_DEMO_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("HAOS_DEMO_PORT", "7070")))
    parser.add_argument("--name", default="demo/counter", help="name to bind while primary")
    parser.add_argument("--advertise", default="", help="address bound to the name")
    parser.add_argument(
        "--audit-period",
        type=float,
        default=float(os.environ.get("HAOS_DEMO_AUDIT_PERIOD", "0")),
        help="s between liveness audits the HM runs through the app (0: none)",
    )
    parser.add_argument(
        "--audit-timeout",
        type=float,
        default=float(os.environ.get("HAOS_DEMO_AUDIT_TIMEOUT", "0.2")),
        help="s an audit may take before the app counts as hung",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main()))
