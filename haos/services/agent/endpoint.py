"""The component endpoint: the unix socket HA-aware applications connect to with ``haos.client``.

The protocol is :mod:`haos.client.wire`. Each connection that says ``hello`` becomes the
:class:`Session` of its component (a later hello of the same component replaces it: the
restarted process wins). Drivers push roles, quiesce and audit requests through the session
and wait for the answers; the application's requests are served in order per connection,
checkpoints and names through the :class:`~.backend.Backend`, error reports through the
``report`` callback, audits through the :class:`~.backend.AuditRegistry`.

A bad message is answered with an error and counted in :attr:`Endpoint.bad_messages`; it never
ends the endpoint. Every message is checked against :data:`REQUESTS` or :data:`ANSWERS` before
anything acts on it: a bad field is answered with a usage error naming it, and the session goes
on. Only a wrong protocol version, a hello that is not one, or a line over
:data:`~haos.client.wire.MAX_LINE` (answered with an error naming the limit) ends that one
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from haos import jsonlines
from haos.client import wire
from haos.client.wire import BadMessage
from haos.config.audits import audit_timing
from haos.config.model import AuditSpec
from haos.config.schema import Invalid, simple_name
from haos.errors import HaosError, UsageError
from haos.fields import BadField, Op, Table, flag, integer, number, text
from haos.model.reports import ErrorKind, ErrorReport
from haos.model.states import AvailabilityState
from haos.services.agent.backend import AuditRegistry, Backend

log = logging.getLogger(__name__)

# A session's requests are served in order within their lane, the lanes side by side: a
# name bound in the repository (a quorum write) does not hold up the checkpoint writes the
# application's clients wait for, nor its error reports.
_LANES = {"ckpt_write": "checkpoint", "ckpt_read": "checkpoint"}
_LANES |= {"name_bind": "names", "name_lookup": "names"}

_ID = integer("id", -(2**63), 2**63 - 1)
_SEQ = integer("seq", 0, 2**63 - 1)
# The application's requests and their fields (see haos.client.wire for the protocol).
REQUESTS = Table.of(
    [
        Op(
            "hello",
            (
                _ID,
                integer("version", 0, 2**31),
                text("component"),
                integer("pid", 1, 2**31, default=None),
            ),
        ),
        Op("report_error", (_ID, text("kind"), text("detail", empty=True, default=""))),
        Op("register_audit", (_ID, text("name"), number("period", 0.0), number("timeout", 0.0))),
        Op(
            "ckpt_write",
            (_ID, text("section"), text("data", empty=True), flag("sync", default=True)),
        ),
        Op("ckpt_read", (_ID, text("section"))),
        Op("name_bind", (_ID, text("name"), text("handle", empty=True))),
        Op("name_lookup", (_ID, text("name"))),
    ]
)
# The application's answers to what the session pushed.
ANSWERS = Table.of(
    [
        Op(
            "ack",
            (
                _SEQ,
                flag("ok", default=True),
                text("message", empty=True, default="no reason given"),
            ),
        ),
        Op("quiesced", (_SEQ,)),
        Op(
            "audit_result",
            (_SEQ, flag("ok", default=False), text("detail", empty=True, default="")),
        ),
    ]
)


def lane_of(op: object) -> str:
    """The lane of request ``op`` (see ``_LANES``): checkpoint, names, or control."""
    return _LANES.get(str(op), "control")


class EndpointError(HaosError):
    """An application did not do what its session was asked (refused a role, ...)."""

    code = "endpoint"


class SessionClosed(EndpointError):
    """The application's connection is gone (it exited, crashed or closed it)."""

    code = "session-closed"


class SessionTimeout(EndpointError):
    """The application did not answer in time."""

    code = "session-timeout"


class Session:
    """One registered application: push orders to it and wait for its answers."""

    def __init__(self, component: str, pid: int | None, writer: asyncio.StreamWriter) -> None:
        self.component = component
        self.pid = pid
        self.closed = asyncio.Event()
        self.audits: set[str] = set()
        self._writer = writer
        self._seq = itertools.count(1)
        self._waiting: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}

    async def assign(self, state: AvailabilityState, graceful: bool, timeout: float) -> None:
        """Send the role and wait for the application's ack.

        Raises :class:`EndpointError` when it refuses, :class:`SessionTimeout` after
        ``timeout`` s, :class:`SessionClosed` when it goes away first.
        """
        message = {"op": "role", "state": state.value, "graceful": graceful}
        reply = await self._push(message, "ack", timeout)
        if reply.get("ok") is False:
            why = reply.get("message", "no reason given")
            raise EndpointError(f"{self.component} refused the role {state}: {why}")

    async def quiesce(self, timeout: float) -> None:
        """Ask the application to quiesce; return once it says it has."""
        await self._push({"op": "quiesce"}, "quiesced", timeout)

    async def audit(self, name: str, timeout: float) -> tuple[bool, str]:
        """Have the application run its audit ``name``: ``(ok, detail)``; never raises."""
        try:
            reply = await self._push({"op": "audit", "name": name}, "audit_result", timeout)
        except EndpointError as e:
            return False, str(e)
        return reply.get("ok") is True, str(reply.get("detail", ""))

    def answer(self, message: dict[str, Any]) -> bool:
        """Take the application's answer to a push; False when it answers nothing asked."""
        seq = message.get("seq")
        waiting = self._waiting.get(seq) if isinstance(seq, int) else None
        if waiting is None or waiting[0] != message["op"] or waiting[1].done():
            return False
        waiting[1].set_result(message)
        return True

    def close(self, why: str) -> None:
        """End the session: pending pushes fail with :class:`SessionClosed`."""
        if self.closed.is_set():
            return
        self.closed.set()
        for _, future in self._waiting.values():
            if not future.done():
                future.set_exception(SessionClosed(f"{self.component}: {why}"))
        self._writer.close()

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed.is_set():
            raise SessionClosed(f"{self.component}: the application is not connected")
        try:
            self._writer.write(wire.encode(message))
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as e:
            self.close(f"connection lost: {e}")
            raise SessionClosed(f"{self.component}: connection lost: {e}") from e

    async def _push(self, message: dict[str, Any], answer: str, timeout: float) -> dict[str, Any]:
        seq = next(self._seq)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = (answer, future)
        try:
            await self.send({**message, "seq": seq})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise SessionTimeout(
                f"{self.component} did not answer {message['op']} within {timeout:g} s"
            ) from None
        finally:
            del self._waiting[seq]


class Endpoint:
    """Serves applications on the unix socket ``path`` (see the module docstring).

    ``components``, when given, are the only names that may register (this node's client
    components). ``clock`` stamps error reports (``observed_at``).
    """

    def __init__(
        self,
        path: str | Path,
        backend: Backend,
        report: Callable[[ErrorReport], None],
        *,
        audits: AuditRegistry | None = None,
        components: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self._backend = backend
        self._report = report
        self._audits = audits
        self._components = None if components is None else frozenset(components)
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.bad_messages = 0

    def session(self, component: str) -> Session | None:
        """The live session of ``component``, if it is registered."""
        session = self._sessions.get(component)
        return None if session is None or session.closed.is_set() else session

    async def wait_session(self, component: str, timeout: float) -> Session:
        """The session of ``component`` once it registers; :class:`SessionTimeout` if not."""
        try:
            async with asyncio.timeout(timeout):
                while (session := self.session(component)) is None:
                    await self._arrived.setdefault(component, asyncio.Event()).wait()
                return session
        except TimeoutError:
            raise SessionTimeout(f"{component} did not register within {timeout:g} s") from None

    async def run(self, started: Callable[[], None] | None = None) -> None:
        """Listen until cancelled; ``started`` is called once the socket accepts connections."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of an earlier run
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            server = await jsonlines.start_unix_server(self._accept, self.path)
            try:
                if started is not None:
                    started()
                await server.serve_forever()
            finally:
                server.close()
                for session in list(self._sessions.values()):
                    session.close("the agent is shutting down")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert self._tg is not None
            self._tg.create_task(self._connection(reader, writer))
        except RuntimeError:  # accepted just as the endpoint shut down
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session: Session | None = None
        try:
            session = await self._hello(reader, writer)
            if session is not None:
                await self._converse(session, reader)
        except (ConnectionError, ValueError) as e:  # ValueError: a line over the limit
            await self._refuse(writer, None, f"connection ended: {e}")
        except Exception:  # a bug must not take the other applications' endpoint down
            log.exception("connection of %s failed", session.component if session else "?")
        finally:
            if session is not None:
                self._drop(session)
            writer.close()

    async def _hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Session | None:
        request_id = None
        try:
            line = await jsonlines.read_line(reader)
            if line is None:
                return None
            message = wire.decode(line)
            request_id = message.get("id")
            component, pid = self._check_hello(message)
        except BadMessage as e:
            await self._refuse(writer, e.id if request_id is None else request_id, e)
            return None
        except UsageError as e:  # a bad field, a line over the limit
            await self._refuse(writer, request_id, e, e.code)
            return None
        session = Session(component, pid, writer)
        old = self._sessions.get(component)
        if old is not None:
            old.close("replaced by a new registration")
            self._drop(old)
        self._sessions[component] = session
        self._arrived.pop(component, asyncio.Event()).set()
        log.info("%s registered (pid %s)", component, pid)
        await session.send({"id": request_id, "ok": True, "version": wire.VERSION})
        return session

    def _check_hello(self, message: dict[str, Any]) -> tuple[str, int | None]:
        if message["op"] != "hello":
            raise BadMessage(f"the first message must be hello, not {message['op']}")
        if message.get("version") != wire.VERSION:
            raise BadMessage(
                f"this agent speaks version {wire.VERSION}, not {message.get('version')!r}"
            )
        _, hello = REQUESTS.check(message)
        component: str = hello["component"]
        if self._components is not None and component not in self._components:
            raise BadMessage(f"{component!r} is not a client component of this node")
        return component, hello["pid"]

    async def _refuse(
        self, writer: asyncio.StreamWriter, request_id: object, why: object, code: str = "usage"
    ) -> None:
        self.bad_messages += 1
        log.warning("application refused: %s", why)
        reply = {
            "op": "error",
            "id": request_id,
            "ok": False,
            "error": code,
            "message": str(why),
        }
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(wire.encode(reply))
            await writer.drain()

    async def _converse(self, session: Session, reader: asyncio.StreamReader) -> None:
        """Read until the connection ends: answers go to the session, requests to the worker
        of their lane (see ``lane_of``)."""
        lanes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        async with asyncio.TaskGroup() as tg:
            workers: list[asyncio.Task[None]] = []

            def lane(name: str) -> asyncio.Queue[dict[str, Any]]:
                queue = lanes.get(name)
                if queue is None:
                    queue = lanes[name] = asyncio.Queue()
                    workers.append(tg.create_task(self._serve_requests(session, queue)))
                return queue

            try:
                while not session.closed.is_set() and (line := await jsonlines.read_line(reader)):
                    self._take(session, line, lane)
            except jsonlines.LineTooLong as e:  # said, then the connection ends
                self.bad_messages += 1
                log.warning("connection of %s ended: %s", session.component, e)
                reply = {"op": "error", "ok": False, "error": e.code, "message": str(e)}
                await _send_quietly(session, reply)
            except ConnectionError as e:
                log.warning("connection of %s ended: %s", session.component, e)
            finally:
                for worker in workers:
                    worker.cancel()

    def _take(
        self,
        session: Session,
        line: bytes,
        lane: Callable[[str], asyncio.Queue[dict[str, Any]]],
    ) -> None:
        request_id: int | None = None
        try:
            message = wire.decode(line)
            op = message["op"]
            if op in ANSWERS.ops:
                if not session.answer({**ANSWERS.check(message)[1], "op": op}):
                    raise BadMessage(f"{op} answers nothing that was asked")
                return
            request_id = message.get("id")
            if isinstance(request_id, bool) or not isinstance(request_id, int):
                request_id = None
                raise BadMessage(f"request {op} has no integer id")
            lane(lane_of(op)).put_nowait({**REQUESTS.check(message)[1], "op": op})
        except (BadMessage, BadField) as e:
            self.bad_messages += 1
            log.warning("bad message from %s: %s", session.component, e)
            if isinstance(e, BadMessage) and e.id is not None:
                request_id = e.id
            reply = {"op": "error", "ok": False, "error": "usage", "message": str(e)}
            if request_id is not None:  # the application's call waits for this answer
                reply["id"] = request_id
            assert self._tg is not None
            self._tg.create_task(_send_quietly(session, reply))

    async def _serve_requests(
        self, session: Session, requests: asyncio.Queue[dict[str, Any]]
    ) -> None:
        while True:
            message = await requests.get()
            try:
                reply = {"ok": True, **await self._request(session, message)}
            except BadMessage as e:
                self.bad_messages += 1
                reply = {"ok": False, "error": "usage", "message": str(e)}
            except HaosError as e:
                reply = {"ok": False, "error": e.code, "message": str(e)}
            await _send_quietly(session, {"id": message["id"], **reply})

    async def _request(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        """Serve one request, its fields checked against :data:`REQUESTS` already."""
        op, component = message["op"], session.component
        if op == "ckpt_write":
            data = wire.unpack(message["data"])
            if len(data) > wire.MAX_DATA:
                raise BadMessage(
                    f"ckpt_write: data of {len(data)} bytes is over the limit of"
                    f" {wire.MAX_DATA} bytes per section (haos.limits.MAX_CHECKPOINT_DATA)"
                )
            await self._backend.checkpoint_write(
                component, message["section"], data, message["sync"]
            )
            return {}
        if op == "ckpt_read":
            found = await self._backend.checkpoint_read(component, message["section"])
            return {"data": None if found is None else wire.pack(found)}
        if op == "name_bind":
            await self._backend.name_bind(component, message["name"], message["handle"])
            return {}
        if op == "name_lookup":
            return {"handle": await self._backend.name_lookup(message["name"])}
        if op == "report_error":
            self._report_error(session, message)
            return {}
        if op == "register_audit":
            self._register_audit(session, message)
            return {}
        if op == "hello":
            raise BadMessage(f"{component} is already registered on this connection")
        raise BadMessage(f"unknown op {op!r}")

    def _report_error(self, session: Session, message: dict[str, Any]) -> None:
        kind, detail = message["kind"], message["detail"]
        if kind not in wire.ERROR_KINDS:
            raise BadMessage(f"unknown error kind {kind!r}; one of: {', '.join(wire.ERROR_KINDS)}")
        report = ErrorReport(session.component, ErrorKind(kind), self._clock(), "client", detail)
        log.info("%s reports %s: %s", session.component, kind, detail)
        self._report(report)

    def _register_audit(self, session: Session, message: dict[str, Any]) -> None:
        if self._audits is None:
            raise EndpointError("this agent runs no audits for applications")
        try:  # exactly what the configuration loader refuses in an audit
            name = simple_name(message["name"])
            period, timeout = audit_timing(message["period"], message["timeout"])
        except Invalid as e:
            raise BadMessage(f"register_audit: {e}") from None
        component = session.component
        spec = AuditSpec(component, name, period, timeout, "callback", name)

        async def run() -> tuple[bool, str]:
            current = self.session(component)
            if current is None:
                return False, f"{component} is not connected"
            return await current.audit(name, timeout)

        self._audits.add(spec, run)
        session.audits.add(name)

    def _drop(self, session: Session) -> None:
        session.close("connection ended")
        if self._sessions.get(session.component) is session:
            del self._sessions[session.component]
            log.info("%s disconnected", session.component)
            if self._audits is not None:
                for name in session.audits:
                    self._audits.remove(session.component, name)


async def _send_quietly(session: Session, message: dict[str, Any]) -> None:
    with contextlib.suppress(SessionClosed):
        await session.send(message)
