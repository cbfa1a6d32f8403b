"""A clock that tests advance by hand, for loops that sleep until a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class FakeClock:
    """``now()`` is ``t``, moved only by :meth:`advance`; :meth:`wait` returns when its
    event is set or the clock reaches its deadline. ``deadlines`` holds the deadlines of the
    waits in progress, ``waiting_until`` the latest one asked for, ``sleeping`` whether a wait
    is in progress."""

    def __init__(self, now: float = 0.0) -> None:
        self.t = now
        self.deadlines: list[float | None] = []
        self.waiting_until: float | None = None
        self._advanced = asyncio.Event()

    @property
    def sleeping(self) -> bool:
        return bool(self.deadlines)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self._advanced.set()

    def idle(self, waiters: int) -> bool:
        """``waiters`` tasks wait, each for a deadline still ahead."""
        return len(self.deadlines) == waiters and all(
            d is None or d > self.t for d in self.deadlines
        )

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        self.deadlines.append(deadline)
        self.waiting_until = deadline
        try:
            while not event.is_set() and (deadline is None or self.t < deadline):
                self._advanced.clear()
                woken = asyncio.ensure_future(event.wait())
                advanced = asyncio.ensure_future(self._advanced.wait())
                try:
                    await asyncio.wait({woken, advanced}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                    advanced.cancel()
        finally:
            self.deadlines.remove(deadline)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Let the loop run (real time, bounded by ``timeout``) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)
