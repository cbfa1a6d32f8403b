"""The driver of an HA-aware application (``kind = "client"``, linked with ``haos.client``).

The application runs as the transient unit ``haos-comp-<escaped name>.service`` with
``HAOS_COMPONENT`` and ``HAOS_AGENT_SOCKET`` in its environment; it registers on the
:class:`~haos.services.agent.endpoint.Endpoint` and gets its role there. Every state but
offline keeps the process running and is a role message the application acks; offline stops
the unit. Before a planned (graceful) switchover a primary is asked to quiesce, for at most
``quiesce_timeout`` s, then the new role is sent. An application that registers again (it
reconnected) is given its role again.

Errors reported: the process ends while it should run (CRASH, as soon as systemd says so);
the application closes its connection but its process stays up for ``disconnect_grace`` s
(ERROR); and whatever the application reports itself (through the endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence

from haos import trace
from haos.config.model import ManagerSpec
from haos.errors import HaosError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.base import (
    DriverDeps,
    DriverError,
    Report,
    check_recovery,
    reset_failed,
    stop_unit,
)
from haos.services.agent.endpoint import Endpoint, EndpointError, Session, SessionTimeout
from haos.services.agent.tracking import DOWN, UP, UnitTracker
from haos.services.cmf.types import (
    NoSuchUnit,
    PropertyValue,
    UnitChanged,
    UnitError,
    UnitManager,
)

log = logging.getLogger(__name__)
# An application gets this long to acknowledge going off-line before its unit is stopped: a
# hung one (the usual reason for taking it off-line) must not hold its repair up.
OFFLINE_NOTICE = 1.0

_PRIMARY, _OFFLINE = AvailabilityState.PRIMARY, AvailabilityState.OFFLINE


def systemd_escape(text: str) -> str:
    """``text`` escaped as ``systemd-escape`` does: ``/`` becomes ``-``, and every byte
    outside ``[A-Za-z0-9:_.]`` (and a leading ``.``) becomes ``\\xNN``."""
    out: list[str] = []
    for i, char in enumerate(text):
        if char == "/":
            out.append("-")
        elif char.isascii() and (char.isalnum() or char in ":_.") and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def unit_name(component: str) -> str:
    """The transient unit that runs a client component."""
    return f"haos-comp-{systemd_escape(component)}.service"


class ClientDriver:
    """Runs one HA-aware application and assigns its roles (see the module docstring)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        units: UnitManager,
        endpoint: Endpoint,
        report: Report,
        tasks: asyncio.TaskGroup,
        *,
        socket_path: str,
        environment: Mapping[str, str] | None = None,
        stop_timeout: float = 10.0,
        quiesce_timeout: float = 5.0,
        timeout: float = 30.0,
        disconnect_grace: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.unit = unit_name(name)
        self._command = tuple(command)
        self._units = units
        self._endpoint = endpoint
        self._report = report
        self._tasks = tasks
        self._socket_path = socket_path
        self._environment = dict(environment or {})
        self._stop_timeout = stop_timeout
        self._quiesce_timeout = quiesce_timeout
        self._timeout = timeout
        self._grace = disconnect_grace
        self._clock = clock
        self._tracker = UnitTracker(units, self.unit, self._changed)
        self._background: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._desired = _OFFLINE
        self._role: AvailabilityState | None = None  # acked by the session _acked
        self._acked: Session | None = None
        self._settling = False  # our own start/stop/restart: no reports

    # --- the Driver contract --------------------------------------------------------------

    async def apply(self, state: AvailabilityState, graceful: bool) -> None:
        async with self._lock:
            await self._ensure_watch()
            was_primary = self._live_role() is _PRIMARY
            self._desired = state
            if state is _OFFLINE:
                await self._retire(quiesce=graceful and was_primary)
                return
            session = await self._ensure_running()
            if session is self._acked and self._role is state:
                return
            if graceful and was_primary and state is not _PRIMARY:
                await self._quiesce(session)
            await self._assign(session, state, graceful)

    async def recover(self, level: RecoveryLevel) -> None:
        """Restart the process (RESTART: SIGKILL; SOFT_RESET: a clean stop), then give the
        new one its role back."""
        check_recovery(self.name, level)
        async with self._lock:
            await self._ensure_watch()
            self._settling = True
            try:
                if level is RecoveryLevel.RESTART and self._tracker.active_state in UP:
                    with contextlib.suppress(NoSuchUnit):
                        await self._units.kill(self.unit, signal.SIGKILL)
                await stop_unit(self._units, self._tracker, self._stop_timeout)
            finally:
                self._settling = False
            self._role, self._acked = None, None
            if self._desired is not _OFFLINE:
                await self._assign(await self._ensure_running(), self._desired, False)

    async def current(self) -> AvailabilityState | None:
        """Offline while the process is down; the acked role of the registered process; None
        while it runs without a role (not registered yet, or not acked)."""
        await self._ensure_watch()
        if self._tracker.active_state not in UP:
            return _OFFLINE
        return self._live_role()

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        self._background.clear()

    # --- steps ----------------------------------------------------------------------------

    def _live_role(self) -> AvailabilityState | None:
        session = self._endpoint.session(self.name)
        return self._role if session is not None and session is self._acked else None

    async def _ensure_watch(self) -> None:
        if not self._background:
            self._background.append(self._tasks.create_task(self._tracker.run()))
            self._background.append(self._tasks.create_task(self._guard()))
        try:
            await self._tracker.wait_live(self._timeout)
        except TimeoutError:
            why = self._tracker.trouble or "no answer"
            raise DriverError(f"{self.name}: cannot watch {self.unit}: {why}") from None

    async def _assign(self, session: Session, state: AvailabilityState, graceful: bool) -> None:
        try:
            await session.assign(state, graceful, self._timeout)
        except EndpointError as e:
            raise DriverError(f"{self.name}: {e}") from e
        self._role, self._acked = state, session
        log.info("%s is %s", self.name, state)

    async def _quiesce(self, session: Session) -> None:
        started = time.monotonic()
        try:
            await session.quiesce(self._quiesce_timeout)
        except SessionTimeout:
            log.warning(
                "%s: not quiesced within %g s; switching over", self.name, self._quiesce_timeout
            )
        except EndpointError as e:
            raise DriverError(f"{self.name}: quiesce: {e}") from e
        else:
            log.info("%s quiesced in %.1f ms", self.name, (time.monotonic() - started) * 1e3)

    async def _retire(self, quiesce: bool) -> None:
        """Offline: quiesce (graceful primary), tell the application, stop its unit."""
        session = self._endpoint.session(self.name)
        self._settling = True
        try:
            if session is not None:
                with contextlib.suppress(EndpointError):
                    if quiesce:
                        await session.quiesce(self._quiesce_timeout)
                    await session.assign(_OFFLINE, quiesce, min(self._timeout, OFFLINE_NOTICE))
            await stop_unit(self._units, self._tracker, self._stop_timeout)
            await self._reset_failed()
        finally:
            self._settling = False
        self._role, self._acked = _OFFLINE, None

    async def _ensure_running(self) -> Session:
        session = self._endpoint.session(self.name)
        if session is not None and self._tracker.active_state in UP:
            return session
        # Until it registers, a process that ends is this call's DriverError, not a report.
        self._settling = True
        try:
            mark = self._tracker.generation
            if self._tracker.active_state not in UP:
                if session is not None:  # its process is gone; its EOF may not be read yet
                    session.close("its process ended")
                mark = await self._start()
            return await self._registered(mark)
        finally:
            self._settling = False

    async def _start(self) -> int:
        """Start the unit; the tracker generation from just before the start."""
        if self._tracker.active_state == "deactivating":
            await stop_unit(self._units, self._tracker, self._stop_timeout)
        await self._reset_failed()
        mark = self._tracker.generation
        try:
            await self._units.start_transient(self.unit, self._command, self._properties())
        except UnitError as e:
            raise DriverError(f"{self.name}: cannot start {self.unit}: {e}") from e
        return mark

    async def _registered(self, mark: int) -> Session:
        """The application's session once it registers; DriverError if its unit ends first."""
        try:
            async with asyncio.TaskGroup() as tg:
                down = tg.create_task(self._fail_when_down(mark))
                session = await self._endpoint.wait_session(self.name, self._timeout)
                down.cancel()
        except BaseExceptionGroup as group:
            first = group.exceptions[0]
            if isinstance(first, HaosError):
                raise DriverError(f"{self.name}: {first}") from first
            raise
        return session

    async def _fail_when_down(self, mark: int) -> None:
        await self._tracker.wait(DOWN, self._timeout + 1.0, after=mark)
        raise DriverError(f"{self.unit} ended before registering: {self._tracker.describe()}")

    async def _reset_failed(self) -> None:
        await reset_failed(self._units, self._tracker, self._timeout)

    def _properties(self) -> dict[str, PropertyValue]:
        env = {**self._environment, "HAOS_COMPONENT": self.name}
        env["HAOS_AGENT_SOCKET"] = self._socket_path
        return {
            "Description": f"haos component {self.name}",
            "Environment": [f"{k}={v}" for k, v in env.items()],
            "TimeoutStopUSec": round(self._stop_timeout * 1e6),
        }

    # --- health ---------------------------------------------------------------------------

    def _changed(self, old: str, change: UnitChanged) -> None:
        if self._settling or self._desired is _OFFLINE:
            return
        if old in UP and change.active_state in DOWN:
            trace.point("agent.crash", self.name)
            self._acked = None
            detail = (
                f"{self.unit} is {change.active_state}/{change.sub_state} "
                f"(result {change.result}) while it should be {self._desired}"
            )
            self._raise(ErrorKind.CRASH, detail)

    async def _guard(self) -> None:
        """Give a re-registered application its role; report one that hung up but runs on."""
        while True:
            try:
                session = await self._endpoint.wait_session(self.name, 3600.0)
            except SessionTimeout:
                continue
            if session is not self._acked and self._desired is not _OFFLINE:
                await self._adopt(session)
            await session.closed.wait()
            if self._settling or self._desired is _OFFLINE or session is not self._acked:
                continue
            with contextlib.suppress(TimeoutError):
                await self._tracker.wait(DOWN, self._grace)
                continue  # the process ended: _changed reported it
            if self._endpoint.session(self.name) is None and not self._settling:
                self._raise(ErrorKind.ERROR, "the application closed its agent connection")

    async def _adopt(self, session: Session) -> None:
        async with self._lock:
            if session is self._acked or session.closed.is_set() or self._desired is _OFFLINE:
                return
            try:
                await self._assign(session, self._desired, False)
            except DriverError as e:
                self._raise(ErrorKind.ERROR, str(e))

    def _raise(self, kind: ErrorKind, detail: str) -> None:
        log.warning("%s: %s", self.name, detail)
        self._report(ErrorReport(self.name, kind, self._clock(), "agent", detail))


def make_client_driver(name: str, spec: ManagerSpec, deps: DriverDeps) -> ClientDriver:
    if deps.endpoint is None:
        raise DriverError(f"{name}: a client component needs the component endpoint")
    return ClientDriver(
        name,
        spec.command,
        deps.units,
        deps.endpoint,
        deps.report,
        deps.tasks,
        socket_path=deps.socket_path,
        environment=spec.environment,
        stop_timeout=spec.stop_timeout,
        quiesce_timeout=spec.quiesce_timeout,
        timeout=deps.timeout,
        clock=deps.clock,
    )
