"""The two clocks haos reads, typed apart so that one is never compared with the other.

* :data:`MonoTime` -- this node's monotonic clock (``time.monotonic``): seconds since boot,
  never stepped. Every interval this node measures for itself runs on it: timeouts,
  watchdogs, fencing retries, the CMM's record of when a peer was last seen. It means nothing
  on another node, nor after a reboot, and is never shown to a user.
* :data:`WallTime` -- wall-clock time (``time.time``): seconds since the Unix epoch, kept in
  step across the nodes by NTP/PTP. It is what users see and what is stored: history entries,
  notifications, and the CRIM's state (recovery deadlines, outage starts), which a new master
  reads after a take-over on another node -- so the CRIM runs on it, not on a local clock.

A monotonic instant becomes a wall-clock one in one place: :func:`wall_of`, at the boundary
where a local record leaves the node or reaches a user (the availability service does it for
the CMM's NodeLeft, the node daemon for the notices it records).

:class:`Clock` is the monotonic clock that waiting loops take through their constructors;
tests pass a fake one they advance by hand (:class:`haoslab.testing.clock.FakeClock` has this
shape). A loop waits on a condition (an event set by whoever changes what it waits for) with a
deadline on that clock, never by polling: :meth:`Clock.wait`, or :func:`within` for a
coroutine (a watch's next batch, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NewType, Protocol

WallTime = NewType("WallTime", float)
MonoTime = NewType("MonoTime", float)

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    # A record dated on either clock; unparameterised it is dated in wall-clock time.
    Dated = TypeVar("Dated", WallTime, MonoTime, default=WallTime)
else:  # the default only matters to the type checker; typing's TypeVar takes none in 3.11
    from typing import TypeVar

    Dated = TypeVar("Dated", WallTime, MonoTime)

Result = TypeVar("Result")


def wall_now() -> WallTime:
    return WallTime(time.time())


def mono_now() -> MonoTime:
    return MonoTime(time.monotonic())


def wall_of(t: MonoTime, wall: WallTime, mono: MonoTime) -> WallTime:
    """Monotonic instant ``t`` of this node as wall-clock time, given a reading of each clock
    taken together (``wall`` and ``mono``, read one right after the other). Exact unless the
    wall clock was stepped between ``t`` and the readings."""
    return WallTime(wall - (mono - t))


class Clock(Protocol):
    def now(self) -> MonoTime:
        """Seconds on a clock that never goes back."""
        ...

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        """Return once ``event`` is set or ``now() >= deadline`` (never, if None)."""
        ...


class MonotonicClock:
    """``time.monotonic``, slept on with the event loop's timers."""

    def now(self) -> MonoTime:
        return mono_now()

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        if deadline is None:
            await event.wait()
            return
        loop = asyncio.get_running_loop()
        # The loop's clock may differ from ours: convert the remaining time, not the instant.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(loop.time() + (deadline - self.now())):
                await event.wait()


async def within(clock: Clock, deadline: float | None, work: Coroutine[Any, Any, Result]) -> Result:
    """What ``work`` returns, once it is done; TimeoutError (``work`` cancelled) if ``clock``
    reaches ``deadline`` first (never, if None). ``work``'s own errors pass through."""
    task = asyncio.ensure_future(work)
    done = asyncio.Event()
    task.add_done_callback(lambda _: done.set())
    try:
        await clock.wait(done, deadline)
    except BaseException:
        task.cancel()
        raise
    if not task.done():
        task.cancel()
        raise TimeoutError(f"not done by {deadline}")
    return task.result()
