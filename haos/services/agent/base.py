"""What every driver is and needs: the :class:`Driver` contract, its error, its dependencies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from haos.errors import HaosError
from haos.model.reports import ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.endpoint import Endpoint
from haos.services.agent.tracking import UnitTracker
from haos.services.cmf.types import Job, NoSuchUnit, UnitManager

log = logging.getLogger(__name__)

STOPPED = frozenset({"inactive", "failed"})


class DriverError(HaosError):
    """A driver could not bring its component to the state asked (the message says why)."""

    code = "driver"


class Driver(Protocol):
    """Carries out one component's availability state on this node."""

    name: str  # the component

    async def apply(self, state: AvailabilityState, graceful: bool) -> None:
        """Bring the component to ``state``; idempotent (level-triggered).

        ``graceful``: a planned switchover, so a primary is first asked to quiesce. Returns
        once the state is reached; raises :class:`DriverError` (or another HaosError, such as
        UnavailableError when the unit manager is unreachable) when it is not.
        """
        ...

    async def recover(self, level: RecoveryLevel) -> None:
        """Soft-reset or restart the component in place, back to its last applied state.

        Only ``SOFT_RESET`` and ``RESTART`` are driver recoveries; others raise DriverError.
        """
        ...

    async def current(self) -> AvailabilityState | None:
        """What the component actually is, as far as the driver can tell (None: unknown)."""
        ...

    async def close(self) -> None:
        """Stop background work (watches, monitors); the component is left as it is."""
        ...


class ServiceUnits(UnitManager, Protocol):
    """The CMF's unit manager plus starting installed units (:mod:`.units`)."""

    async def start(self, name: str) -> Job:
        """Queue a start of the installed unit ``name``; NoSuchUnit when there is none."""
        ...


Report = Callable[[ErrorReport], None]


@dataclass(frozen=True)
class DriverDeps:
    """What drivers are built with (see :func:`make_driver`).

    ``endpoint`` is needed by client components, ``socket_path`` is where their processes
    find it. ``monitor_interval`` overrides the OCF agents' advertised monitor interval.
    ``timeout`` bounds waits that have no configured bound (start, register, ack).
    """

    units: ServiceUnits
    report: Report
    tasks: asyncio.TaskGroup
    endpoint: Endpoint | None = None
    socket_path: str = "/run/haos/components.sock"
    clock: Callable[[], float] = time.time
    ocf_root: str = "/usr/lib/ocf"
    monitor_interval: float | None = None
    timeout: float = 30.0


def check_recovery(name: str, level: RecoveryLevel) -> None:
    if level not in (RecoveryLevel.SOFT_RESET, RecoveryLevel.RESTART):
        raise DriverError(f"{name}: {level} is not a recovery a driver carries out")


async def stop_unit(
    units: UnitManager, tracker: UnitTracker, timeout: float, kill_after: float = 5.0
) -> None:
    """Stop the unit and wait until it is down; SIGKILL it after ``timeout`` s."""
    if tracker.active_state in STOPPED:
        return
    mark = tracker.generation
    try:
        await units.stop(tracker.name)
    except NoSuchUnit:
        return  # not loaded: stopped already
    try:
        await tracker.wait(STOPPED, timeout, after=mark)
        return
    except TimeoutError:
        log.warning("%s did not stop within %g s: killing it", tracker.name, timeout)
    try:
        await units.kill(tracker.name, signal.SIGKILL)
        await tracker.wait(STOPPED, kill_after)
    except NoSuchUnit:
        return
    except TimeoutError:
        raise DriverError(f"{tracker.name} is still {tracker.describe()} after SIGKILL") from None


async def reset_failed(units: UnitManager, tracker: UnitTracker, timeout: float) -> None:
    """Forget a failure of the unit (so it can start again) and wait until it is inactive."""
    if tracker.active_state == "failed":
        with contextlib.suppress(NoSuchUnit):
            await units.reset_failed(tracker.name)
        with contextlib.suppress(TimeoutError):
            await tracker.wait(frozenset({"inactive"}), timeout)
