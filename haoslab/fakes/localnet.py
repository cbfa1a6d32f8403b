"""Test support: members of one distributed service on a LocalBus, each in its own task.

``LocalNet`` starts a service per node (on a :class:`Tap` over the node's bus endpoint), waits
until it is ready, and lets a test crash, partition or stop nodes. A crashed member's ``run``
ends with UnavailableError, which the net keeps in :attr:`LocalNet.broken` instead of letting it
tear down the other members. :class:`Tap` records what each member's service was handed, so a
test can wait for "node 2 has received its second request" with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from haos.cluster.dss.transport import GroupTransport, Message, TransportEvent, View
from haos.errors import UnavailableError, UsageError
from haoslab.testing.bus import LocalBus, LocalEndpoint

DEADLINE = 5.0


class _Service(Protocol):
    async def run(self) -> None: ...

    async def wait_ready(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_Service)


@dataclass
class Tap:
    """A GroupTransport that records each event it hands on, for deadline-bound waits.

    :meth:`hold` makes the member's service stall (a slow or stopped process) until
    :meth:`release`. ``on_resume`` is called at the start of each ``next_event`` with the
    event handed out before: by then the service has finished handling it (services handle
    events without awaiting), so it is the point to inspect what handling one event did.
    """

    inner: LocalEndpoint
    events: list[TransportEvent] = field(default_factory=list)
    on_event: Callable[[TransportEvent], None] | None = None
    on_resume: Callable[[TransportEvent], None] | None = None
    _waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = field(default_factory=list)
    _gate: asyncio.Event | None = None
    _dead: bool = False

    @property
    def node_id(self) -> int:
        return self.inner.node_id

    async def send(self, payload: bytes) -> None:
        await self.inner.send(payload)

    def post(self, payload: bytes) -> None:
        self.inner.post(payload)

    async def next_event(self) -> TransportEvent:
        if self.events and self.on_resume is not None:
            self.on_resume(self.events[-1])
        self.check_waiters()
        event = await self.inner.next_event()
        while self._gate is not None:  # held: keep the event until released
            await self._gate.wait()
        if self._dead:
            raise UnavailableError(f"node {self.node_id} crashed")
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def hold(self) -> None:
        """Stop handing events to the service (they queue) until :meth:`release`."""
        if self._gate is None:
            self._gate = asyncio.Event()

    def kill(self) -> None:
        """The process died: whatever is held or queued is never handled."""
        self._dead = True
        self.release()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def check_waiters(self) -> None:
        """Wake the waiters whose predicate holds (called after each event was handled)."""
        for waiter in list(self._waiters):
            predicate, future = waiter
            if future.done():
                self._waiters.remove(waiter)
            elif predicate():
                future.set_result(None)
                self._waiters.remove(waiter)

    async def close(self) -> None:
        await self.inner.close()

    def messages(self, sender: int | None = None) -> list[Message]:
        return [
            e
            for e in self.events
            if isinstance(e, Message) and (sender is None or e.sender == sender)
        ]

    def views(self) -> list[View]:
        return [e for e in self.events if isinstance(e, View)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
        """Return once ``predicate()`` holds, checked after each event is handled.

        Raises TimeoutError after ``timeout`` seconds.
        """
        await _wait_on([self], predicate, timeout)


class LocalNet(Generic[S]):
    """See the module docstring. Use as ``async with LocalNet(factory) as net``."""

    def __init__(self, factory: Callable[[GroupTransport], S], bus: LocalBus | None = None):
        self.bus = bus or LocalBus()
        self._factory = factory
        self.services: dict[int, S] = {}
        self.taps: dict[int, Tap] = {}
        self.broken: dict[int, UnavailableError] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> LocalNet[S]:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        for service in self.services.values():
            await service.close()
        await self._group.__aexit__(exc_type, exc, tb)

    def __getitem__(self, node: int) -> S:
        return self.services[node]

    async def start(self, node: int, *, ready: bool = True) -> S:
        """Join ``node`` to the bus, run its service, and (with ``ready``) wait for it."""
        if self._group is None:
            raise UsageError("enter the LocalNet first")
        tap = Tap(self.bus.join(node))
        service = self._factory(tap)
        self.services[node], self.taps[node] = service, tap
        self.broken.pop(node, None)
        self._tasks[node] = self._group.create_task(self._guard(node, service))
        if ready:
            async with asyncio.timeout(DEADLINE):
                await service.wait_ready()
        return service

    async def start_all(self, *nodes: int) -> list[S]:
        return [await self.start(n) for n in nodes]

    async def stopped(self, node: int) -> UnavailableError | None:
        """Wait (with the deadline) for ``node``'s service to stop; why it broke, if it did."""
        async with asyncio.timeout(DEADLINE):
            await asyncio.shield(self._tasks[node])
        return self.broken.get(node)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
        """Return once ``predicate()`` holds, checked after any member handled an event."""
        await _wait_on(list(self.taps.values()), predicate, timeout)

    def crash(self, node: int) -> None:
        """The node's process dies: the others see it leave; its service's run breaks."""
        self.bus.crash(node)
        self.taps[node].kill()

    async def _guard(self, node: int, service: S) -> None:
        try:
            await service.run()
        except UnavailableError as e:
            self.broken[node] = e


async def _wait_on(taps: list[Tap], predicate: Callable[[], bool], timeout: float) -> None:
    if predicate():
        return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = (predicate, future)
    for tap in taps:
        tap._waiters.append(waiter)
    try:
        async with asyncio.timeout(timeout):
            await future
    finally:
        for tap in taps:
            if waiter in tap._waiters:
                tap._waiters.remove(waiter)


def garble(data: bytes, how: int, at: int, value: int) -> bytes:
    """A damaged copy of ``data``, for fuzzing receivers with near-valid messages.

    ``how`` (mod 4): 0 truncate at ``at``; 1 flip the byte at ``at`` with ``value``;
    2 append ``value`` as a byte; 3 overwrite the byte at ``at`` with ``value``.
    ``at`` is taken modulo the length.
    """
    if not data:
        return bytes([value & 0xFF])
    i = at % len(data)
    match how % 4:
        case 0:
            return data[:i]
        case 1:
            return data[:i] + bytes([data[i] ^ (value & 0xFF or 1)]) + data[i + 1 :]
        case 2:
            return data + bytes([value & 0xFF])
        case _:
            return data[:i] + bytes([value & 0xFF]) + data[i + 1 :]


def inject(net: LocalNet[S], sender: int, payload: bytes) -> None:
    """Multicast ``payload`` as if member ``sender`` had sent it (bypassing its service)."""
    net.bus.deliver(sender, payload)
