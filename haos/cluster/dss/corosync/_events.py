"""Plumbing shared by the handles that corosync calls back: the event stream and the readers.

Corosync libraries deliver callbacks only from inside ``*_dispatch()``, on the thread that
calls it. Dispatch runs on the handle's worker thread (:mod:`._worker`), where the callbacks
collect their events, and the loop queues them on the :class:`EventStream` when dispatch
returns. So a stopped corosync never blocks the loop, and the events keep corosync's order.
Who notices that the handle's descriptor turned readable: the loop (:class:`LoopReader`,
which then hands the dispatch to the worker), or the worker itself (:class:`WorkerReader`,
one thread wake-up less per event, for the busy CPG handles).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from haos.cluster.dss.corosync._worker import HandleWorker
from haos.errors import UsageError

E = TypeVar("E")


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class EventStream(Generic[E]):
    """Events in the order corosync dispatched them, then how the stream ended.

    Unbounded: corosync applies its own flow control to senders; a consumer that never reads
    grows memory. After the end, :meth:`get` raises the error that broke the handle
    (e.g. :class:`~haos.cluster.dss.corosync.errors.CorosyncUnavailableError`), or
    :class:`~haos.errors.UsageError` if it was closed by its owner; ``async for`` stops
    quietly on a close and raises on a break.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._queue: asyncio.Queue[E | _End] = asyncio.Queue()
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once the handle was closed or broke; queued events may still be read."""
        return self._ended

    def put(self, event: E) -> None:
        if not self._ended:
            self._queue.put_nowait(event)

    def end(self, error: BaseException | None) -> None:
        """Mark the end after the queued events; the first end wins."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(error))

    def pending(self) -> int:
        """Events queued and not yet read."""
        return self._queue.qsize()

    async def get(self) -> E:
        """The next event; waits for it. Raises once the stream has ended (see class)."""
        item = await self._next()
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            raise UsageError(f"{self._what} is closed")
        return item

    def __aiter__(self) -> EventStream[E]:
        return self

    async def __anext__(self) -> E:
        item = await self._next()
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def _next(self) -> E | _End:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later read ends the same way
        return item


@dataclass(frozen=True)
class Dispatched(Generic[E]):
    """What one ``*_dispatch`` call produced: the callbacks' events in order, then the error
    that ended it (a failed dispatch, or an exception raised inside a callback), if any."""

    events: tuple[E, ...]
    error: BaseException | None = None


class _Reader(Generic[E]):
    """What both readers share: the callbacks, and failing once (close, then ``on_error``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        worker: HandleWorker,
        dispatch: Callable[[], Dispatched[E]],
        deliver: Callable[[tuple[E, ...]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._loop = loop
        self._worker = worker
        self._dispatch = dispatch
        self._deliver = deliver
        self._on_error = on_error
        self._active = True

    def _fail(self, error: BaseException) -> None:
        if self._active:
            self.close()
            self._on_error(error)

    def close(self) -> None:
        raise NotImplementedError


class LoopReader(_Reader[E]):
    """Runs ``dispatch`` on the handle's worker thread each time ``fd`` turns readable.

    The loop only watches the descriptor: while a dispatch runs on the worker the reader is
    paused, and its events are handed to ``deliver`` on the loop, in order, when it returns.
    The first error -- a failed dispatch, or one that misses the worker's deadline (which
    breaks the worker) -- removes the reader and goes to ``on_error``: a broken corosync
    connection stays readable (EOF) and would otherwise spin the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        worker: HandleWorker,
        dispatch: Callable[[], Dispatched[E]],
        deliver: Callable[[tuple[E, ...]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        super().__init__(loop, worker, dispatch, deliver, on_error)
        self._fd = fd
        self._running: concurrent.futures.Future[Dispatched[E]] | None = None
        self._overdue: asyncio.TimerHandle | None = None
        loop.add_reader(fd, self._readable)
        # Drain anything corosync queued before the reader existed.
        loop.call_soon(self._readable)

    def _readable(self) -> None:
        if not self._active or self._running is not None:
            return
        self._loop.remove_reader(self._fd)
        try:
            running = self._worker.submit(self._dispatch)
        except Exception as e:
            self._fail(e)
            return
        self._running = running
        self._overdue = self._loop.call_later(self._worker.timeout, self._too_slow, running)
        running.add_done_callback(self._from_worker)

    def _from_worker(self, done: concurrent.futures.Future[Dispatched[E]]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self._loop.call_soon_threadsafe(self._dispatched, done)

    def _dispatched(self, done: concurrent.futures.Future[Dispatched[E]]) -> None:
        if done is not self._running:
            return  # given up on as too slow
        self._running = None
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        if not self._active:
            return
        error = done.exception()
        if error is None:
            result = done.result()
            self._deliver(result.events)
            error = result.error
        if error is not None:
            self._fail(error)
        elif self._active:
            self._loop.add_reader(self._fd, self._readable)

    def _too_slow(self, running: concurrent.futures.Future[Dispatched[E]]) -> None:
        if running is self._running and not running.done():
            self._running = None
            self._fail(self._worker.break_now("dispatch"))

    def close(self) -> None:
        """Stop reading; idempotent. A dispatch still running on the worker is ignored."""
        if self._active:
            self._active = False
            if self._running is None:
                self._loop.remove_reader(self._fd)
            if self._overdue is not None:
                self._overdue.cancel()
                self._overdue = None


class WorkerReader(_Reader[E]):
    """Has the worker thread wait for ``fd`` and run ``dispatch`` itself
    (:meth:`HandleWorker.watch`); the events go to ``deliver`` on the loop, in order.

    A dispatch that produced nothing costs the loop nothing. The first error -- a failed
    dispatch, or a dispatch still running past the worker's deadline (a watchdog on the loop
    looks every half deadline; that breaks the worker) -- stops the reader and goes to
    ``on_error``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        worker: HandleWorker,
        dispatch: Callable[[], Dispatched[E]],
        deliver: Callable[[tuple[E, ...]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        super().__init__(loop, worker, dispatch, deliver, on_error)
        self._watchdog = loop.call_later(worker.timeout / 2, self._check)
        worker.watch(fd, self._on_worker)

    def _on_worker(self) -> bool:
        # On the worker thread: False stops the watching (the connection broke).
        result = self._dispatch()
        if result.events or result.error is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
                self._loop.call_soon_threadsafe(self._dispatched, result)
        return result.error is None

    def _dispatched(self, result: Dispatched[E]) -> None:
        if not self._active:
            return
        if result.events:
            self._deliver(result.events)
        if result.error is not None:
            self._fail(result.error)

    def _check(self) -> None:
        if not self._active:
            return
        since = self._worker.dispatching_since
        if since is not None and time.monotonic() - since > self._worker.timeout:
            self._fail(self._worker.break_now("dispatch"))
            return
        self._watchdog = self._loop.call_later(self._worker.timeout / 2, self._check)

    def close(self) -> None:
        """Stop reading; idempotent. A dispatch still running on the worker is ignored."""
        if self._active:
            self._active = False
            self._worker.unwatch()
            self._watchdog.cancel()
