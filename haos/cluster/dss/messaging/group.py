"""One service's end of its group: envelope, ordered sending, the receive loop, drop counting.

A :class:`GroupLink` owns a :class:`~haos.cluster.dss.transport.GroupTransport` for one
:class:`~haos.cluster.dss.wire.Service`. Its receive loop decodes the shared envelope and hands
``(sender, kind, body)`` and every :class:`View` to a :class:`Receiver`, synchronously and in
agreed order, so a receiver's state changes happen exactly where the message or view sits in
the group's order. A malformed envelope, a body the receiver refuses with
:class:`~haos.cluster.dss.wire.WireError`, or a receiver bug is dropped, counted in the
:class:`~haos.cluster.dss.wire.DropCounter` and logged — never raised out of the loop.

Sends leave in the order they were made, whether made by an API call (:meth:`GroupLink.send`,
which waits for the local send) or by a receiver reacting to a message (:meth:`GroupLink.post`,
fire and forget). A transport that can take a message without waiting (:class:`Poster`, e.g.
CPG's, which queues it for its worker thread) is handed each message at once while nothing
waits before it; otherwise, and behind a message still waiting, they go through one outbox
drained by one task (a loop iteration later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from haos.cluster.dss import wire
from haos.cluster.dss.transport import GroupTransport, Message, View
from haos.cluster.dss.wire import DropCounter, Envelope, Service, WireError
from haos.errors import HaosError, UnavailableError, UsageError

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """What a service gives its link. Called on the loop, never concurrently."""

    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        """Handle one message in agreed order; raise WireError if it is malformed."""
        ...

    def on_view(self, view: View) -> None:
        """Handle a membership change, ordered with the messages."""
        ...

    def on_stop(self, error: HaosError | None) -> None:
        """The link stopped: closed by its owner (None) or broken (``error``).

        Fail every waiter (with UnavailableError when closed); end streams (cleanly when
        closed, with ``error`` when broken).
        """
        ...


@runtime_checkable
class Poster(Protocol):
    """A transport's optional non-waiting send (see the module docstring)."""

    def post(self, payload: bytes) -> None:
        """Hand ``payload`` over for sending, in order with earlier sends; raise
        UnavailableError at once if the group cannot be reached."""
        ...


class GroupService(Protocol):
    """The lifecycle every distributed service offers (see :func:`running`)."""

    async def run(self) -> None: ...

    async def wait_ready(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _Outgoing:
    payload: bytes
    done: asyncio.Future[None] | None


class GroupLink:
    """See the module docstring. ``run`` once; ``close`` ends it."""

    def __init__(
        self,
        transport: GroupTransport,
        service: Service,
        receiver: Receiver,
        *,
        drops: DropCounter | None = None,
    ) -> None:
        self._transport = transport
        self._service = service
        self._receiver = receiver
        self.drops = drops if drops is not None else DropCounter()
        self.view: View | None = None
        self._ready = asyncio.Event()
        self._outbox: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self._poster = transport.post if isinstance(transport, Poster) else None
        self._sending = False  # the send loop is handing a message over
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self._started = False
        self._closing = False
        self._stopped: HaosError | None = None

    @property
    def node_id(self) -> int:
        return self._transport.node_id

    @property
    def members(self) -> tuple[int, ...]:
        return self.view.members if self.view is not None else ()

    @property
    def stopped(self) -> HaosError | None:
        """Why the link stopped, or None while it runs."""
        return self._stopped

    def check_running(self) -> None:
        """Raise the stop reason if the link has stopped."""
        if self._stopped is not None:
            raise UnavailableError(f"{self._service.name} service stopped: {self._stopped}")

    async def wait_ready(self) -> None:
        """Return once this member has seen its own join; raise if the link stopped first."""
        await self._ready.wait()
        self.check_running()

    def drop(self, reason: str, sender: int, detail: str) -> None:
        """Count and log one message dropped as malformed or unexpected."""
        self.drops.drop(reason)
        log.warning(
            "%s: dropped a message from node %d (%s): %s",
            self._service.name,
            sender,
            reason,
            detail,
        )

    def post(self, kind: int, body: bytes) -> None:
        """Queue a message to multicast; send failures are logged (the loop will stop too)."""
        if self._stopped is None:
            self._queue(_Outgoing(self._encode(kind, body), None))

    async def send(self, kind: int, body: bytes) -> None:
        """Multicast a message; return once handed to the transport (not when delivered)."""
        self.check_running()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Outgoing(self._encode(kind, body), done))
        await done

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the link's task group; it is cancelled when the link stops."""
        if self._group is None or self._stopped is not None:
            coro.close()
            return
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Receive until closed; raise UnavailableError if the group broke under us."""
        if self._started:
            raise UsageError(f"{self._service.name} link is already running")
        self._started = True
        error: HaosError = UnavailableError(f"{self._service.name} service closed")
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                sender = group.create_task(self._send_loop())
                try:
                    error = await self._receive_loop()
                    if self._closing:
                        error = UnavailableError(f"{self._service.name} service closed")
                finally:
                    self._stop(error)
                    sender.cancel()
                    for task in list(self._tasks):
                        task.cancel()
        finally:
            self._stop(error)
        if not self._closing:
            raise UnavailableError(f"{self._service.name} group broke: {error}") from error

    async def close(self) -> None:
        """Leave the group; ``run`` returns and every waiter fails. Idempotent."""
        self._closing = True
        await self._transport.close()
        if not self._started:
            self._stop(UnavailableError(f"{self._service.name} service closed"))

    # -- internals ---------------------------------------------------------------------------

    def _encode(self, kind: int, body: bytes) -> bytes:
        return wire.encode(Envelope(self._service, kind, body))

    def _stop(self, error: HaosError) -> None:
        if self._stopped is not None:
            return
        self._stopped = error
        self._ready.set()
        while not self._outbox.empty():
            item = self._outbox.get_nowait()
            if item is not None and item.done is not None and not item.done.done():
                item.done.set_exception(UnavailableError(f"not sent: {error}"))
        self._outbox.put_nowait(None)
        self._receiver.on_stop(None if self._closing else error)

    async def _receive_loop(self) -> HaosError:
        while True:
            try:
                event = await self._transport.next_event()
            except HaosError as e:  # UnavailableError when broken, UsageError once closed
                return e
            if isinstance(event, View):
                self._on_view(event)
            else:
                self._on_message(event)

    def _on_view(self, view: View) -> None:
        self.view = view
        try:
            self._receiver.on_view(view)
        except Exception:
            self.drops.drop("handler-error")
            log.exception("%s: failed to handle view %s", self._service.name, view)
        if self.node_id in view.members:
            self._ready.set()

    def _on_message(self, message: Message) -> None:
        try:
            env = wire.decode(message.payload, expect=self._service)
        except WireError as e:
            self.drop("envelope", message.sender, str(e))
            return
        try:
            self._receiver.on_message(message.sender, env.kind, env.body)
        except WireError as e:
            self.drop("body", message.sender, str(e))
        except Exception:
            self.drops.drop("handler-error")
            log.exception(
                "%s: failed to handle a message from %d", self._service.name, message.sender
            )

    def _queue(self, item: _Outgoing) -> None:
        if self._poster is None or self._sending or not self._outbox.empty():
            self._outbox.put_nowait(item)
            return
        try:
            self._poster(item.payload)
        except HaosError as e:
            self._failed(item, e)
        else:
            self._sent(item)

    async def _send_loop(self) -> None:
        while (item := await self._outbox.get()) is not None:
            self._sending = True
            try:
                await self._transport.send(item.payload)
            except HaosError as e:
                self._failed(item, e)
                continue
            finally:
                self._sending = False
            self._sent(item)

    def _failed(self, item: _Outgoing, error: HaosError) -> None:
        if item.done is None:
            log.warning("%s: send failed: %s", self._service.name, error)
        elif not item.done.done():
            item.done.set_exception(error)

    @staticmethod
    def _sent(item: _Outgoing) -> None:
        if item.done is not None and not item.done.done():
            item.done.set_result(None)


@contextlib.asynccontextmanager
async def running(*services: GroupService) -> AsyncIterator[None]:
    """Run ``services`` in a task group, wait until each is ready, close them all on exit."""
    async with asyncio.TaskGroup() as group:
        for service in services:
            group.create_task(service.run())
        try:
            for service in services:
                await service.wait_ready()
            yield
        finally:
            for service in services:
                await service.close()


class LinkedService:
    """The lifecycle every group service shares, delegated to its :class:`GroupLink`.

    A service sets ``self._link`` in its constructor and inherits ``node_id``, ``drops``,
    ``run``, ``wait_ready`` and ``close``; it overrides ``wait_ready`` when being ready means
    more than having joined (e.g. holding transferred state).
    """

    _link: GroupLink

    @property
    def node_id(self) -> int:
        return self._link.node_id

    @property
    def drops(self) -> DropCounter:
        return self._link.drops

    async def run(self) -> None:
        await self._link.run()

    async def wait_ready(self) -> None:
        await self._link.wait_ready()

    async def close(self) -> None:
        await self._link.close()
