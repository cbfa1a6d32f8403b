"""The unit manager contract of the CMF: what haos needs from systemd, and nothing more.

Two implementations keep this contract: :class:`haos.services.cmf.systemd.SystemdUnits` (systemd
over D-Bus) and :class:`haoslab.fakes.cmf.FakeUnits` (in memory). The scenario in
:mod:`haoslab.fakes.cmf_conformance` runs on both and must give the same transcript.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from haos.errors import HaosError

# A transient unit property value: str -> "s", bool -> "b", a sequence of str -> "as"; int
# properties need a known D-Bus type (see systemd.INT_PROPERTY_SIGNATURES).
PropertyValue = str | bool | int | Sequence[str]


class UnitError(HaosError):
    """systemd refused an operation on a unit (the message says why)."""

    code = "unit"


class NoSuchUnit(UnitError):
    """The unit is not loaded: it never existed, or it was garbage-collected."""

    code = "no-such-unit"


class UnitExists(UnitError):
    """A transient unit of that name is still loaded (running, or failed and not reset)."""

    code = "unit-exists"


@dataclass(frozen=True)
class Job:
    """A job systemd queued for a unit; ``path`` is its D-Bus object path."""

    unit: str
    path: str


@dataclass(frozen=True)
class UnitState:
    """systemd's ActiveState, SubState and (for services) Result of one unit."""

    active_state: str
    sub_state: str
    result: str


# What a unit that is not loaded looks like; also the state a new unit reports first.
UNLOADED = UnitState("inactive", "dead", "success")


@dataclass(frozen=True)
class UnitChanged:
    """A unit's state changed; ``at`` is the receiver's monotonic clock at arrival."""

    name: str
    active_state: str
    sub_state: str
    result: str
    at: float

    @property
    def state(self) -> UnitState:
        return UnitState(self.active_state, self.sub_state, self.result)


# ``async with units.watch(names) as changes: async for change in changes: ...``
UnitWatch = AbstractAsyncContextManager[AsyncIterator[UnitChanged]]


class UnitManager(Protocol):
    """Start, stop, signal and watch systemd units.

    Every method may raise :class:`haos.errors.UnavailableError` when the manager cannot be
    reached (retrying may succeed) and :class:`UnitError` when it refused the request.
    """

    async def start_transient(
        self, name: str, argv: Sequence[str], properties: Mapping[str, PropertyValue] | None = None
    ) -> Job:
        """Create transient unit ``name`` running ``argv`` and queue its start.

        Returns once the job is queued, not when the unit is active: watch for that. Raises
        :class:`UnitExists` while a unit of that name is loaded.
        """
        ...

    async def stop(self, name: str) -> Job:
        """Queue a stop job (replacing a pending start). Raises :class:`NoSuchUnit`."""
        ...

    async def kill(self, name: str, signal: int) -> None:
        """Send ``signal`` to every process of the unit. Raises :class:`NoSuchUnit`."""
        ...

    async def reset_failed(self, name: str) -> None:
        """Forget a failure so the unit becomes inactive (and a transient one goes away).

        A no-op on a unit that has not failed. Raises :class:`NoSuchUnit`.
        """
        ...

    async def active_state(self, name: str) -> str:
        """The unit's ActiveState; "inactive" for a unit that is not loaded."""
        ...

    def watch(self, names: Iterable[str]) -> UnitWatch:
        """Subscribe to state changes of ``names`` (loaded or not yet).

        The subscription is live when the context is entered, so a unit started afterwards
        misses no change. Only real changes are reported: an update that repeats the last
        state of the unit (such as the ``inactive`` a new unit reports first) is dropped.
        Iterating raises :class:`haos.errors.UnavailableError` when the connection is lost.
        """
        ...


class ChangeFilter:
    """Turns raw state reports into :class:`UnitChanged` events, dropping repeats.

    A unit the filter has not seen is assumed :data:`UNLOADED`, which is exactly what a new
    transient unit reports right after creation: that early report is therefore dropped.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._last = {name: UNLOADED for name in names}
        self._reported: set[str] = set()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._last)

    def seed(self, name: str, state: UnitState) -> None:
        """Set the state later reports are compared with, unless a report came first.

        Seeding happens after the subscription is live; a report that overtook the seed is
        newer than it and wins.
        """
        if name in self._last and name not in self._reported:
            self._last[name] = state

    def report(self, name: str, state: UnitState, at: float) -> UnitChanged | None:
        if name not in self._last:
            return None
        self._reported.add(name)
        if self._last[name] == state:
            return None
        self._last[name] = state
        return UnitChanged(name, state.active_state, state.sub_state, state.result, at)
