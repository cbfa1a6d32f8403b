"""RRPC, reliable remote procedure calls over one group: request/response with a timeout,
retries that never run a call twice, and prompt failure when the server's node leaves.

Server: ``rpc.register("method", handler)``; a handler is ``async (Call) -> bytes`` and runs in
the service's task group. What it raises goes back to the caller as :class:`RemoteError`.

Caller: ``await rpc.call(target, "method", payload, timeout=1.0, retries=2)``. ``target`` is a
node id, or a name that the constructor-passed :class:`Resolver` (e.g. CNS) maps to a node on
every attempt, so a retry after a fail-over reaches the new active. Outcomes:

* the reply's payload;
* :class:`RemoteError` — the server ran the handler and it raised, or has no such method;
* :class:`~haos.errors.UnavailableError` — the server's node is not a member, or left while
  the call was outstanding: the call fails while the view that shows it is handled (before any
  other message is), not at its timeout;
* :class:`CallTimeout` (an UnavailableError) — no reply within ``timeout`` on any attempt.

A retry repeats the call id; the server keeps each call's reply (:class:`ReplyCache`) and
answers a retry of a running call with nothing (the reply will come) and of a finished call
with the kept reply, so a handler runs at most once per call even if it is not idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from haos.cluster.dss.messaging import rrpc_wire as wire
from haos.cluster.dss.messaging.group import GroupLink, LinkedService
from haos.cluster.dss.messaging.rrpc_core import CallKey, CallTable, ReplyCache, Seen
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter, Service
from haos.errors import HaosError, UnavailableError, UsageError

log = logging.getLogger(__name__)


class RemoteError(HaosError):
    """The server ran the call and it failed (or the server has no such method).

    ``remote_code`` is the code of the :class:`~haos.errors.HaosError` the handler raised
    ("unavailable", "not-active", "conflict", ...; "internal" for any other exception,
    "no-method"), so callers decide on it, never on the message's text."""

    code = "remote"

    def __init__(self, message: str, status: wire.Status, remote_code: str = "remote") -> None:
        super().__init__(message)
        self.status = status
        self.remote_code = remote_code


def encode_failure(error: BaseException) -> bytes:
    """A handler's exception as the ERROR reply's payload: its code, type and message."""
    code = error.code if isinstance(error, HaosError) else "internal"
    return json.dumps({"code": code, "type": type(error).__name__, "message": str(error)}).encode()


def decode_failure(sender: int, status: wire.Status, payload: bytes) -> RemoteError:
    """The caller's side of :func:`encode_failure` (also plain text, as NO_METHOD sends)."""
    text = payload.decode("utf-8", "replace")
    code = "no-method" if status is wire.Status.NO_METHOD else "remote"
    with contextlib.suppress(ValueError):
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            code = body["code"]
            text = f"{body.get('type', 'Error')}: {body.get('message', '')}"
    return RemoteError(f"node {sender}: {text}", status, code)


class CallTimeout(UnavailableError):
    """No reply within the timeout on any attempt; the call may or may not have run."""

    code = "timeout"


class Resolver(Protocol):
    def resolve_node(self, name: str) -> int | None:
        """The node currently serving ``name``, or None."""
        ...


@dataclass(frozen=True)
class Call:
    """What a handler is given."""

    caller: int
    method: str
    payload: bytes


Handler = Callable[[Call], Awaitable[bytes]]


@dataclass
class RpcStats:
    executed: int = 0  # handlers started
    duplicates: int = 0  # retries of a running call, dropped
    replayed: int = 0  # retries of a finished call, answered from the cache
    retries: int = 0  # attempts after the first, as caller
    not_for_us: int = 0  # requests and replies for other members, dropped silently


class RpcService(LinkedService):
    """See the module docstring."""

    def __init__(
        self,
        transport: GroupTransport,
        *,
        resolver: Resolver | None = None,
        drops: DropCounter | None = None,
        reply_cache: int = 1024,
        instance: int | None = None,
    ) -> None:
        self._link = GroupLink(transport, Service.RRPC, self, drops=drops)
        self._resolver = resolver
        self._instance = secrets.randbits(64) if instance is None else instance
        self._handlers: dict[str, Handler] = {}
        self._cache = ReplyCache(reply_cache)
        self._calls = CallTable()
        self._futures: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self.stats = RpcStats()

    @property
    def outstanding(self) -> int:
        """Calls this member is waiting on."""
        return len(self._calls)

    def register(self, method: str, handler: Handler) -> None:
        if not wire.valid_method(method):
            raise UsageError(f"bad method name {method!r}")
        self._handlers[method] = handler

    def unregister(self, method: str) -> None:
        self._handlers.pop(method, None)

    async def call(
        self,
        target: int | str,
        method: str,
        payload: bytes = b"",
        *,
        timeout: float = 1.0,
        retries: int = 0,
    ) -> bytes:
        """Call ``method`` on ``target`` (see the module docstring for the outcomes)."""
        if not wire.valid_method(method):
            raise UsageError(f"bad method name {method!r}")
        if timeout <= 0 or retries < 0:
            raise UsageError("a call needs a positive timeout and retries >= 0")
        self._link.check_running()
        self._next_id += 1
        call_id = self._next_id
        loop = asyncio.get_running_loop()
        try:
            for attempt in range(retries + 1):
                server = self._server_for(target)
                self._calls.start(call_id, server)
                # A fresh future per attempt: the timeout cancels it, and the caller is woken
                # straight from the view or reply that settles it (no extra hop).
                future: asyncio.Future[bytes] = loop.create_future()
                self._futures[call_id] = future
                if attempt:
                    self.stats.retries += 1
                request = wire.Request(server, self._instance, call_id, method, payload)
                await self._link.send(wire.Kind.REQUEST, wire.encode_request(request))
                try:
                    async with asyncio.timeout(timeout):
                        return await future
                except TimeoutError:
                    continue
            raise CallTimeout(
                f"{method} on {target}: no reply in {timeout} s after {retries + 1} attempt(s)"
            )
        finally:
            self._calls.finish(call_id)
            self._futures.pop(call_id, None)

    # -- Receiver ----------------------------------------------------------------------------

    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        msg = wire.decode(kind, body)
        if isinstance(msg, wire.Request):
            self._on_request(sender, msg)
        else:
            self._on_reply(sender, msg)

    def on_view(self, view: View) -> None:
        self._cache.forget_callers_except(view.members)
        for call_id in self._calls.orphaned(view.members):
            server = self._calls.server_of(call_id)
            self._calls.finish(call_id)
            future = self._futures.get(call_id)
            if future is not None and not future.done():
                future.set_exception(UnavailableError(f"node {server} left the RRPC group"))

    def on_stop(self, error: HaosError | None) -> None:
        reason = error or UnavailableError("the RRPC service was closed")
        for future in self._futures.values():
            if not future.done():
                future.set_exception(reason)

    # -- internals ---------------------------------------------------------------------------

    def _server_for(self, target: int | str) -> int:
        if isinstance(target, str):
            if self._resolver is None:
                raise UsageError("calls by name need a resolver")
            node = self._resolver.resolve_node(target)
            if node is None:
                raise UnavailableError(f"no node serves {target!r}")
        else:
            node = target
        if node not in self._link.members:
            raise UnavailableError(f"node {node} is not a member of the RRPC group")
        return node

    def _on_request(self, sender: int, req: wire.Request) -> None:
        if req.server != self._link.node_id:
            self.stats.not_for_us += 1
            return
        key: CallKey = (sender, req.instance, req.call_id)
        seen, kept = self._cache.begin(key)
        if seen is Seen.RUNNING:
            self.stats.duplicates += 1
        elif seen is Seen.DONE:
            assert kept is not None
            self.stats.replayed += 1
            self._post_reply(key, kept)
        else:
            handler = self._handlers.get(req.method)
            if handler is None:
                self._finish(key, wire.Status.NO_METHOD, f"no method {req.method!r}".encode())
                return
            self.stats.executed += 1
            self._link.spawn(self._serve(key, handler, Call(sender, req.method, req.payload)))

    async def _serve(self, key: CallKey, handler: Handler, call: Call) -> None:
        try:
            reply = await handler(call)
        except Exception as e:
            log.info("RRPC %s from node %d failed: %s", call.method, call.caller, e)
            self._finish(key, wire.Status.ERROR, encode_failure(e))
        else:
            self._finish(key, wire.Status.OK, bytes(reply))

    def _finish(self, key: CallKey, status: wire.Status, payload: bytes) -> None:
        kept = bytes([status]) + payload
        self._cache.finish(key, kept)
        self._post_reply(key, kept)

    def _post_reply(self, key: CallKey, kept: bytes) -> None:
        caller, instance, call_id = key
        if caller not in self._link.members:
            return  # the caller left; nobody is waiting
        reply = wire.Reply(caller, instance, call_id, wire.Status(kept[0]), kept[1:])
        self._link.post(wire.Kind.REPLY, wire.encode_reply(reply))

    def _on_reply(self, sender: int, reply: wire.Reply) -> None:
        if reply.caller != self._link.node_id or reply.instance != self._instance:
            self.stats.not_for_us += 1
            return
        future = self._futures.get(reply.call_id)
        if future is None or future.done():
            self._link.drop("stale-reply", sender, f"reply to call {reply.call_id}, not waited for")
            return
        if self._calls.server_of(reply.call_id) != sender:
            self._link.drop("stale-reply", sender, f"reply to call {reply.call_id} from elsewhere")
            return
        if reply.status is wire.Status.OK:
            future.set_result(reply.payload)
        else:
            future.set_exception(decode_failure(sender, reply.status, reply.payload))
