"""The monotonic clock that waiting loops take through their constructors; tests pass a fake
one they advance by hand (:class:`haos.testing.clock.FakeClock` has this shape)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        """Return once ``event`` is set or ``now() >= deadline`` (never, if None)."""
        ...


class MonotonicClock:
    """``time.monotonic``, slept on with the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        if deadline is None:
            await event.wait()
            return
        loop = asyncio.get_running_loop()
        # The loop's clock may differ from ours: convert the remaining time, not the instant.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(loop.time() + (deadline - self.now())):
                await event.wait()
