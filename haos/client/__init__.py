"""The haos client library: what an HA-aware application links with.

The node agent starts the application with ``HAOS_COMPONENT`` (its component name) and
``HAOS_AGENT_SOCKET`` (where the agent listens) in its environment. The application::

    async with Client.from_env(on_quiesce=flush) as client:
        await client.register()
        async for assignment in client.assignments():
            await become(assignment.state)          # start or stop serving
            await client.ack(assignment)            # the agent waits for this

Roles are ``"primary"``, ``"secondary"``, ``"spare"`` and ``"offline"``; an application acks
a role only once it has taken it. Before a planned (graceful) switchover the primary's
``on_quiesce`` callback runs first: it should stop taking new work and flush, and the agent
waits for it (up to the component's ``quiesce_timeout``). Audits that the application
registers are run when the agent asks. Checkpoint and name requests go through the agent to
the cluster: a synchronous checkpoint write returns once the standby holds the data. Any
program on a node may follow the cluster's events (role changes, recoveries, outages, ...)
with :func:`cluster_events` (:mod:`haos.client.events`, from the node's cluster daemon).

Every method raises :class:`AgentError` when the agent refuses a request,
:class:`~haos.errors.UsageError` (nothing sent) when a request is over the socket's line limit
or its checkpoint data over :data:`haos.limits.MAX_CHECKPOINT_DATA`, and
:class:`~haos.errors.UnavailableError` when the connection is lost. This package imports only
:mod:`haos.errors`, :mod:`haos.limits`, :mod:`haos.jsonlines` and its own modules, so
applications stay light.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from haos import jsonlines
from haos.client import wire
from haos.client.events import ClusterEvent, cluster_events
from haos.errors import HaosError, UnavailableError, UsageError

__all__ = [
    "AgentError",
    "Assignment",
    "AuditCallback",
    "Client",
    "ClusterEvent",
    "QuiesceCallback",
    "cluster_events",
]

log = logging.getLogger(__name__)

QuiesceCallback = Callable[[], Awaitable[None]]
AuditCallback = Callable[[], Awaitable[tuple[bool, str]]]
"""Answers one audit: ``(ok, detail)``; raising or overrunning the timeout fails it."""


class AgentError(HaosError):
    """The agent refused a request; ``error`` is its code (``usage``, ``unavailable``, ...)."""

    code = "agent"

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        super().__init__(f"{error}: {message}")


@dataclass(frozen=True)
class Assignment:
    """A role the agent asks the application to take; ack it once taken."""

    state: str  # primary | secondary | spare | offline
    graceful: bool
    seq: int

    @property
    def primary(self) -> bool:
        return self.state == "primary"


@dataclass(frozen=True)
class _Audit:
    period: float
    timeout: float
    callback: AuditCallback


class Client:
    """One application's connection to its node agent (use as ``async with``)."""

    def __init__(
        self, component: str, socket_path: str, *, on_quiesce: QuiesceCallback | None = None
    ) -> None:
        self.component = component
        self.socket_path = socket_path
        self._on_quiesce = on_quiesce
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._roles: asyncio.Queue[Assignment | None] = asyncio.Queue()
        self._audits: dict[str, _Audit] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: str | None = None
        self._closing = False

    @classmethod
    def from_env(cls, *, on_quiesce: QuiesceCallback | None = None) -> Client:
        """A client for the component and socket the agent put in the environment."""
        try:
            component, path = os.environ["HAOS_COMPONENT"], os.environ["HAOS_AGENT_SOCKET"]
        except KeyError as e:
            raise UnavailableError(f"{e.args[0]} is not set: not started by a haos agent") from e
        return cls(component, path, on_quiesce=on_quiesce)

    async def __aenter__(self) -> Client:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._closing = True
        self._close_writer()
        for task in self._tasks:
            task.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # What the application's block raised comes out of the task group wrapped; give
            # it back as itself, so ``except UnavailableError`` around the block works.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise

    # --- the session ----------------------------------------------------------------------

    async def register(self) -> None:
        """Connect and say hello: from now on the agent sends roles and audit requests."""
        if self._tg is None:
            raise RuntimeError("use the client as 'async with Client(...) as client'")
        try:
            reader, self._writer = await jsonlines.open_unix_connection(self.socket_path)
        except OSError as e:
            raise UnavailableError(f"agent at {self.socket_path}: {e.strerror or e}") from e
        self._spawn(self._read(reader))
        await self._request(
            "hello", version=wire.VERSION, component=self.component, pid=os.getpid()
        )

    async def assignments(self) -> AsyncIterator[Assignment]:
        """Roles as the agent assigns them; ends when the client closes, raises when lost."""
        while True:
            assignment = await self._roles.get()
            if assignment is None:
                self._roles.put_nowait(None)
                if self._lost is not None and not self._closing:
                    raise UnavailableError(self._lost)
                return
            yield assignment

    async def ack(self, assignment: Assignment, ok: bool = True, message: str = "") -> None:
        """Tell the agent the role is taken (or, with ``ok=False``, why it could not be)."""
        reply: dict[str, Any] = {"op": "ack", "seq": assignment.seq}
        if not ok:
            reply.update(ok=False, message=message or "refused")
        await self._send(reply)

    async def close(self) -> None:
        """Close the connection; the agent treats this as the application going away."""
        self._closing = True
        self._close_writer()

    # --- requests -------------------------------------------------------------------------

    async def report_error(self, kind: str, detail: str) -> None:
        """Report an error of this component (``kind``: one of :data:`wire.ERROR_KINDS`)."""
        await self._request("report_error", kind=kind, detail=detail)

    async def register_audit(
        self, name: str, period: float, timeout: float, callback: AuditCallback
    ) -> None:
        """Have the health monitor call ``callback`` every ``period`` s, within ``timeout`` s."""
        self._audits[name] = _Audit(period, timeout, callback)
        await self._request("register_audit", name=name, period=period, timeout=timeout)

    async def checkpoint_write(self, section: str, data: bytes, sync: bool = True) -> None:
        """Store ``data`` under ``section`` of this component's checkpoint.

        With ``sync`` it returns once the data is replicated (the standby has it). Data over
        :data:`haos.limits.MAX_CHECKPOINT_DATA` bytes is refused (UsageError) unsent.
        """
        if len(data) > wire.MAX_DATA:
            raise UsageError(
                f"checkpoint section {section!r}: {len(data)} bytes is over the limit of"
                f" {wire.MAX_DATA} bytes (haos.limits.MAX_CHECKPOINT_DATA)"
            )
        await self._request("ckpt_write", section=section, data=wire.pack(data), sync=sync)

    async def checkpoint_read(self, section: str) -> bytes | None:
        """The data last written under ``section``, or None if nothing was."""
        reply = await self._request("ckpt_read", section=section)
        data = reply.get("data")
        return None if data is None else wire.unpack(data)

    async def name_bind(self, name: str, handle: str) -> None:
        """Publish ``name`` -> ``handle`` (say, an address) in the cluster's name service.

        A name bound elsewhere is taken over: the primary after a fail-over rebinds it.
        """
        await self._request("name_bind", name=name, handle=handle)

    async def name_lookup(self, name: str) -> str | None:
        """The handle bound to ``name``, or None."""
        handle = (await self._request("name_lookup", name=name)).get("handle")
        return None if handle is None else str(handle)

    # --- the connection -------------------------------------------------------------------

    async def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        request_id = next(self._ids)
        line = wire.encode({"op": op, "id": request_id, **fields})  # UsageError if too long
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send_line(line)
            reply = await future
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            raise AgentError(str(reply.get("error")), str(reply.get("message")))
        return reply

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_line(wire.encode(message))

    async def _send_line(self, line: bytes) -> None:
        if self._lost is not None:
            raise UnavailableError(self._lost)
        if self._writer is None:
            raise UnavailableError("not connected: call register() first")
        try:
            self._writer.write(line)
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as e:
            raise UnavailableError(f"agent connection lost: {e}") from e

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "agent closed the connection"
        try:
            while line := await jsonlines.read_line(reader, "a line from the agent"):
                try:
                    self._dispatch(wire.decode(line, reply=True))
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("ignoring a message the agent sent: %r (%s)", line[:200], e)
        except (OSError, jsonlines.LineTooLong) as e:
            why = f"agent connection broken: {e}"
        finally:
            self._lost = "client closed" if self._closing else why
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(UnavailableError(why))
            self._roles.put_nowait(None)
            self._close_writer()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if "id" in message:
            future = self._pending.get(message["id"])
            if future is not None and not future.done():
                future.set_result(message)
        elif op == "role":
            state, seq = message["state"], message["seq"]
            if state not in wire.STATES or not isinstance(seq, int):
                raise ValueError(f"bad role {state!r} (seq {seq!r})")
            self._roles.put_nowait(Assignment(state, bool(message.get("graceful")), seq))
        elif op in ("quiesce", "audit"):
            self._spawn(self._answer(message))
        else:
            log.warning("agent sent an unknown message: %s", message)

    async def _answer(self, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        if message["op"] == "quiesce":
            if self._on_quiesce is not None:
                await self._on_quiesce()
            reply: dict[str, Any] = {"op": "quiesced", "seq": seq}
        else:
            ok, detail = await self._audit(str(message.get("name")))
            reply = {"op": "audit_result", "seq": seq, "ok": ok, "detail": detail}
        with contextlib.suppress(UnavailableError):
            await self._send(reply)

    async def _audit(self, name: str) -> tuple[bool, str]:
        audit = self._audits.get(name)
        if audit is None:
            return False, f"no audit {name!r} registered"
        try:
            async with asyncio.timeout(audit.timeout):
                ok, detail = await audit.callback()
        except TimeoutError:
            return False, f"audit {name!r} took longer than {audit.timeout:g} s"
        except Exception as e:  # the application's audit failed: that is the answer
            return False, f"audit {name!r} raised {e!r}"
        return bool(ok), str(detail)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None
        task = self._tg.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
