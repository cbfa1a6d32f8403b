"""An in-memory :class:`~haos.services.cmf.types.UnitManager` that behaves like systemd 252.

It follows what the adapter tests observe on a real systemd for transient services with
``Type=simple``: a new unit reports ``inactive`` first, then ``active/running``; a fatal
signal leaves it ``failed/failed`` with Result ``signal``; SIGTERM, SIGINT, SIGHUP and SIGPIPE
count as a clean exit; a transient unit is garbage-collected once inactive, while a failed one
stays loaded until reset-failed; KillUnit on a loaded unit without processes does nothing; a
stop of a failed unit leaves it failed. Processes are not real: :meth:`FakeUnits.exit` plays
the main process ending on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal as signals
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from haos.services.cmf.types import (
    UNLOADED,
    ChangeFilter,
    Job,
    NoSuchUnit,
    PropertyValue,
    UnitChanged,
    UnitExists,
    UnitState,
)

# Signals after which systemd counts a service's exit as clean (SuccessExitStatus default).
CLEAN_SIGNALS = frozenset({signals.SIGHUP, signals.SIGINT, signals.SIGTERM, signals.SIGPIPE})
# Signals that neither end nor fail the process.
HARMLESS_SIGNALS = frozenset(
    {0, signals.SIGCONT, signals.SIGSTOP, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU,
     signals.SIGWINCH, signals.SIGURG, signals.SIGCHLD}
)  # fmt: skip

ACTIVE = UnitState("active", "running", "success")
DEACTIVATING = UnitState("deactivating", "stop-sigterm", "success")


@dataclass(frozen=True)
class FakeUnit:
    """A loaded unit as the fake keeps it."""

    name: str
    argv: tuple[str, ...]
    properties: Mapping[str, PropertyValue]
    state: UnitState


class FakeUnits:
    """In-memory unit manager; ``units`` shows what is loaded, for assertions."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.units: dict[str, FakeUnit] = {}
        self._watches: list[_FakeChanges] = []
        self._jobs = itertools.count(1)

    async def start_transient(
        self, name: str, argv: Sequence[str], properties: Mapping[str, PropertyValue] | None = None
    ) -> Job:
        if not argv:
            raise ValueError("argv must name a program")
        if properties and "ExecStart" in properties:
            raise ValueError("ExecStart comes from argv; do not pass it as a property")
        if name in self.units:
            raise UnitExists(f"StartTransientUnit: Unit {name} was already loaded.")
        self.units[name] = FakeUnit(name, tuple(argv), dict(properties or {}), UNLOADED)
        self._publish(name, UNLOADED)
        self._set(name, ACTIVE)
        return self._job(name)

    async def stop(self, name: str) -> Job:
        unit = self._loaded("StopUnit", name)
        if unit.state.active_state in ("active", "activating"):
            self._set(name, DEACTIVATING)
            self._set(name, UNLOADED)
        return self._job(name)

    async def kill(self, name: str, signal: int) -> None:
        unit = self._loaded("KillUnit", name)
        if unit.state.active_state != "active" or signal in HARMLESS_SIGNALS:
            return
        if signal in CLEAN_SIGNALS:
            self._set(name, UNLOADED)
        else:
            self._set(name, UnitState("failed", "failed", "signal"))

    async def reset_failed(self, name: str) -> None:
        unit = self._loaded("ResetFailedUnit", name)
        if unit.state.active_state == "failed":
            self._set(name, UNLOADED)

    async def active_state(self, name: str) -> str:
        unit = self.units.get(name)
        return unit.state.active_state if unit else UNLOADED.active_state

    @contextlib.asynccontextmanager
    async def watch(self, names: Iterable[str]) -> AsyncIterator[AsyncIterator[UnitChanged]]:
        changes = _FakeChanges(ChangeFilter(names))
        for name in changes.names:
            unit = self.units.get(name)
            changes.seed(name, unit.state if unit else UNLOADED)
        self._watches.append(changes)
        try:
            yield changes
        finally:
            self._watches.remove(changes)

    def exit(self, name: str, status: int) -> None:
        """Fault injection: the main process of active unit ``name`` exits with ``status``."""
        unit = self.units[name]
        if unit.state.active_state != "active":
            raise ValueError(f"{name} is {unit.state.active_state}, it has no process")
        self._set(name, UNLOADED if status == 0 else UnitState("failed", "failed", "exit-code"))

    def _loaded(self, member: str, name: str) -> FakeUnit:
        unit = self.units.get(name)
        if unit is None:
            raise NoSuchUnit(f"{member}: Unit {name} not loaded.")
        return unit

    def _job(self, name: str) -> Job:
        return Job(name, f"/org/freedesktop/systemd1/job/{next(self._jobs)}")

    def _set(self, name: str, state: UnitState) -> None:
        unit = self.units[name]
        if state.active_state == "inactive":
            del self.units[name]  # a transient unit is collected once inactive
        else:
            self.units[name] = FakeUnit(unit.name, unit.argv, unit.properties, state)
        self._publish(name, state)

    def _publish(self, name: str, state: UnitState) -> None:
        at = self._clock()
        for changes in self._watches:
            changes.report(name, state, at)


class _FakeChanges:
    def __init__(self, changes: ChangeFilter) -> None:
        self._filter = changes
        self._queue: asyncio.Queue[UnitChanged] = asyncio.Queue()

    @property
    def names(self) -> frozenset[str]:
        return self._filter.names

    def seed(self, name: str, state: UnitState) -> None:
        self._filter.seed(name, state)

    def report(self, name: str, state: UnitState, at: float) -> None:
        event = self._filter.report(name, state, at)
        if event is not None:
            self._queue.put_nowait(event)

    def __aiter__(self) -> _FakeChanges:
        return self

    async def __anext__(self) -> UnitChanged:
        return await self._queue.get()
