"""Drivers: one per component of this node, carrying out its availability state.

A :class:`Driver` is what the node agent calls for a component's orders; which one runs a
component is its configured ``manager`` (:class:`~haos.config.model.ManagerSpec`), built by
:func:`make_driver`:

============  ===================================  ==========================================
kind          states                               health
============  ===================================  ==========================================
``systemd``   primary: unit started; else stopped  the unit leaves ``active`` while primary
``ocf``       see :mod:`haos.services.ocf.component`  the periodic ``monitor``
``client``    role message (:mod:`.clientdriver`)  process death, disconnect, its own reports
============  ===================================  ==========================================

Drivers report errors through the ``report`` callback they are given, as they happen; their
background work (watching a unit, monitoring) runs as tasks of the agent's TaskGroup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from haos.config.model import ManagerSpec
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.base import (
    Driver,
    DriverDeps,
    DriverError,
    Report,
    ServiceUnits,
    check_recovery,
    reset_failed,
    stop_unit,
)
from haos.services.agent.clientdriver import ClientDriver, make_client_driver
from haos.services.agent.ocfdriver import OcfDriver, make_ocf_driver
from haos.services.agent.tracking import DOWN, UP, UnitTracker
from haos.services.cmf.types import UnitChanged, UnitError

__all__ = [
    "ClientDriver",
    "Driver",
    "DriverDeps",
    "DriverError",
    "OcfDriver",
    "ServiceUnits",
    "UnitDriver",
    "make_driver",
]

log = logging.getLogger(__name__)

_PRIMARY, _OFFLINE = AvailabilityState.PRIMARY, AvailabilityState.OFFLINE


class UnitDriver:
    """A plain systemd service: started while primary, stopped in every other state.

    The unit is watched: leaving ``active`` while it should be primary is reported (CRASH; a
    watchdog or timeout result: HANG) as soon as systemd says so. ``current`` is primary
    while the unit runs, else the last non-primary state applied (offline at first).
    """

    def __init__(
        self,
        name: str,
        unit: str,
        units: ServiceUnits,
        report: Report,
        tasks: asyncio.TaskGroup,
        *,
        stop_timeout: float = 10.0,
        start_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.unit = unit
        self._units = units
        self._report = report
        self._tasks = tasks
        self._stop_timeout = stop_timeout
        self._start_timeout = start_timeout
        self._clock = clock
        self._tracker = UnitTracker(units, unit, self._changed)
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._desired: AvailabilityState | None = None
        self._applied = _OFFLINE
        self._settling = False  # our own stop/restart: no reports

    async def apply(self, state: AvailabilityState, graceful: bool) -> None:
        async with self._lock:
            await self._ensure_watch()
            self._desired = state
            if state is _PRIMARY:
                await self._start()
            else:
                self._settling = True
                try:
                    await stop_unit(self._units, self._tracker, self._stop_timeout)
                    await self._reset_failed()
                finally:
                    self._settling = False
            self._applied = state

    async def recover(self, level: RecoveryLevel) -> None:
        check_recovery(self.name, level)
        async with self._lock:
            await self._ensure_watch()
            self._settling = True
            try:
                await stop_unit(self._units, self._tracker, self._stop_timeout)
                await self._reset_failed()
                if self._desired is _PRIMARY:
                    await self._start()
            finally:
                self._settling = False

    async def current(self) -> AvailabilityState | None:
        await self._ensure_watch()
        if self._tracker.active_state in UP:
            return _PRIMARY
        return _OFFLINE if self._applied is _PRIMARY else self._applied

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def _ensure_watch(self) -> None:
        if self._watch is None:
            self._watch = self._tasks.create_task(self._tracker.run())
        try:
            await self._tracker.wait_live(self._start_timeout)
        except TimeoutError:
            why = self._tracker.trouble or "no answer"
            raise DriverError(f"{self.name}: cannot watch {self.unit}: {why}") from None

    async def _start(self) -> None:
        if self._tracker.active_state == "active":
            return
        await self._reset_failed()
        mark = self._tracker.generation
        try:
            await self._units.start(self.unit)
        except UnitError as e:
            raise DriverError(f"{self.name}: cannot start {self.unit}: {e}") from e
        try:
            # inactive after our start: it ran and ended (or its start job was cancelled)
            state = await self._tracker.wait(
                frozenset({"active", "failed", "inactive"}), self._start_timeout, after=mark
            )
        except TimeoutError:
            raise DriverError(
                f"{self.unit} not active within {self._start_timeout:g} s: it is "
                f"{self._tracker.describe()}"
            ) from None
        if state != "active":
            raise DriverError(f"{self.unit} did not start: {self._tracker.describe()}")

    async def _reset_failed(self) -> None:
        await reset_failed(self._units, self._tracker, self._start_timeout)

    def _changed(self, old: str, change: UnitChanged) -> None:
        if self._settling or self._desired is not _PRIMARY:
            return
        if old in UP and change.active_state in DOWN:
            hang = change.result in ("watchdog", "timeout")
            kind = ErrorKind.HANG if hang else ErrorKind.CRASH
            detail = (
                f"{self.unit} is {change.active_state}/{change.sub_state} "
                f"(result {change.result}) while primary"
            )
            log.warning("%s: %s", self.name, detail)
            self._report(ErrorReport(self.name, kind, self._clock(), "systemd", detail))


async def make_driver(name: str, spec: ManagerSpec, deps: DriverDeps) -> Driver:
    """The driver for component ``name`` managed as ``spec``.

    For an OCF agent this reads its meta-data (promotable unless the spec says; timeouts)
    and checks the parameters: :class:`~haos.errors.ConfigError` names each bad one.
    """
    if spec.kind == "systemd":
        return UnitDriver(
            name,
            spec.unit,
            deps.units,
            deps.report,
            deps.tasks,
            stop_timeout=spec.stop_timeout,
            start_timeout=deps.timeout,
            clock=deps.clock,
        )
    if spec.kind == "ocf":
        return await make_ocf_driver(name, spec, deps)
    if spec.kind == "client":
        return make_client_driver(name, spec, deps)
    raise DriverError(f"{name}: unknown manager kind {spec.kind!r}")
