"""Plumbing shared by the handles that corosync calls back: the event stream and the loop reader.

Corosync libraries deliver callbacks only from inside ``*_dispatch()``, on the thread that
calls it. We call dispatch from an ``add_reader`` callback on the event loop's thread, so the
callbacks run on that thread too and may put events on an ``asyncio.Queue`` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

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


class LoopReader:
    """Calls ``dispatch`` on the loop each time ``fd`` is readable, until the first error.

    An exception from ``dispatch`` removes the reader and is passed to ``on_error``: a broken
    corosync connection stays readable (EOF) and would otherwise spin the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        dispatch: Callable[[], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._dispatch = dispatch
        self._on_error = on_error
        self._active = True
        loop.add_reader(fd, self._readable)
        # Drain anything corosync queued before the reader existed.
        loop.call_soon(self._readable)

    def _readable(self) -> None:
        if not self._active:
            return
        try:
            self._dispatch()
        except Exception as e:
            self.close()
            self._on_error(e)

    def close(self) -> None:
        """Stop reading; idempotent."""
        if self._active:
            self._active = False
            self._loop.remove_reader(self._fd)
