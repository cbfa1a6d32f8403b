"""A bounded, single-consumer stream that a service fills from its receive loop.

The producer never blocks (the receive loop must not stall on a slow consumer): :meth:`put`
refuses when the feed is full and the service decides what that means (an event stream breaks
with :class:`~haos.errors.UnavailableError` so the consumer knows it missed something; a
datagram inbox drops and counts). After :meth:`end` the consumer still reads what was queued,
then the iteration stops (clean end) or raises the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from haos.errors import HaosError, UnavailableError

T = TypeVar("T")


@dataclass(frozen=True)
class _End:
    error: HaosError | None


class Feed(Generic[T]):
    """See the module docstring. Iterate it with ``async for``; ``with`` closes it."""

    def __init__(self, limit: int = 1024, on_close: Callable[[Feed[T]], None] | None = None):
        if limit < 1:
            raise ValueError("a feed holds at least one item")
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()
        self._limit = limit
        self._on_close = on_close
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def pending(self) -> int:
        return self._queue.qsize()

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and nothing queued) if the feed is full or ended."""
        if self._ended or self._queue.qsize() >= self._limit:
            return False
        self._queue.put_nowait(item)
        return True

    def end(self, error: HaosError | None = None) -> None:
        """End the feed after what is queued; the first end wins."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(error))

    def close(self) -> None:
        """The consumer is done: unsubscribe and end. Idempotent."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)
        self.end(None)

    async def get(self) -> T:
        """The next item; raises the end's error, or UnavailableError after a clean end."""
        item = await self._next()
        if isinstance(item, _End):
            raise item.error or UnavailableError("the feed was closed")
        return item

    def get_nowait(self) -> T | None:
        """The next item if one is queued, else None (also at the end)."""
        if self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            return None
        return item

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._next()
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    def __enter__(self) -> Feed[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _next(self) -> T | _End:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later read ends the same way
        return item
