"""One scenario, run on every UnitManager: the fake must tell the same story as systemd.

The unit tests run it on :class:`haoslab.fakes.cmf.FakeUnits`, the adapter tests on
:class:`haos.services.cmf.systemd.SystemdUnits` against a real systemd; both compare the
transcript with :data:`EXPECTED`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from haos.services.cmf.types import UnitChanged, UnitExists, UnitManager, UnitState

ARGV = ("/bin/sleep", "1000")


@dataclass(frozen=True)
class Transcript:
    """What one run observed: the states reported after each step, and timings."""

    started: tuple[UnitState, ...]
    killed: tuple[UnitState, ...]
    reset: tuple[UnitState, ...]
    state_after_reset: str
    restarted: tuple[UnitState, ...]
    refused_duplicate: bool
    stopped: UnitState
    kill_to_event: float  # clock time from the KillUnit call to the failed event

    def without_timing(self) -> Transcript:
        return Transcript(
            self.started,
            self.killed,
            self.reset,
            self.state_after_reset,
            self.restarted,
            self.refused_duplicate,
            self.stopped,
            0.0,
        )


ACTIVE = UnitState("active", "running", "success")
EXPECTED = Transcript(
    started=(ACTIVE,),
    killed=(UnitState("failed", "failed", "signal"),),
    reset=(UnitState("inactive", "dead", "success"),),
    state_after_reset="inactive",
    restarted=(ACTIVE,),
    refused_duplicate=True,
    stopped=UnitState("inactive", "dead", "success"),
    kill_to_event=0.0,
)


async def start_kill_reset_restart(
    units: UnitManager, name: str, clock: Callable[[], float], deadline: float = 10.0
) -> Transcript:
    """start → SIGKILL → failed → reset-failed → restart → stop, watching ``name`` throughout.

    Each step waits (at most ``deadline`` seconds) for the state it leads to. A stop may pass
    through ``deactivating`` or not, depending on how fast the process dies, so only its
    final state is recorded.
    """
    async with units.watch([name]) as changes:
        await units.start_transient(name, ARGV, {"Description": "cmf conformance"})
        started = await _until(changes, "active", deadline)
        t_kill = clock()
        await units.kill(name, signal.SIGKILL)
        killed = await _until(changes, "failed", deadline)
        kill_to_event = killed[-1].at - t_kill
        await units.reset_failed(name)
        reset = await _until(changes, "inactive", deadline)
        state_after_reset = await units.active_state(name)
        await units.start_transient(name, ARGV)
        restarted = await _until(changes, "active", deadline)
        try:
            await units.start_transient(name, ARGV)
            refused = False
        except UnitExists:
            refused = True
        await units.stop(name)
        stopped = await _until(changes, "inactive", deadline)
    return Transcript(
        started=_states(started),
        killed=_states(killed),
        reset=_states(reset),
        state_after_reset=state_after_reset,
        restarted=_states(restarted),
        refused_duplicate=refused,
        stopped=stopped[-1].state,
        kill_to_event=kill_to_event,
    )


async def _until(
    changes: AsyncIterator[UnitChanged], active_state: str, deadline: float
) -> list[UnitChanged]:
    """The changes up to and including the first one into ``active_state``."""
    seen: list[UnitChanged] = []
    async with asyncio.timeout(deadline):
        async for change in changes:
            seen.append(change)
            if change.active_state == active_state:
                return seen
    raise AssertionError(f"watch ended before {active_state}: {seen}")


def _states(changes: list[UnitChanged]) -> tuple[UnitState, ...]:
    return tuple(c.state for c in changes)
