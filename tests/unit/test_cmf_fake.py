"""The in-memory unit manager tells the same story as systemd (see test_cmf_systemd.py)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from haos.services.cmf.types import NoSuchUnit, UnitChanged, UnitExists, UnitManager, UnitState
from haoslab.fakes.cmf import FakeUnits
from haoslab.fakes.cmf_conformance import EXPECTED, start_kill_reset_restart

pytestmark = pytest.mark.timeout(30)

ARGV = ["/bin/sleep", "1000"]


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _drain(changes: AsyncIterator[UnitChanged]) -> list[UnitChanged]:
    """The changes already queued (the fake reports synchronously)."""
    seen: list[UnitChanged] = []
    while True:
        try:
            async with asyncio.timeout(0.01):
                seen.append(await anext(changes))
        except TimeoutError:
            return seen


def test_fake_is_a_unit_manager() -> None:
    units: UnitManager = FakeUnits()
    assert units is not None


def test_fake_passes_the_systemd_conformance_scenario() -> None:
    clock = ManualClock()
    got = asyncio.run(start_kill_reset_restart(FakeUnits(clock), "app.service", clock))
    assert got == EXPECTED


def test_sigterm_is_a_clean_exit_and_the_unit_is_collected() -> None:
    async def go() -> None:
        units = FakeUnits()
        async with units.watch(["a.service"]) as changes:
            await units.start_transient("a.service", ARGV)
            await units.kill("a.service", signal.SIGTERM)
            states = [c.state for c in await _drain(changes)]
        assert states == [
            UnitState("active", "running", "success"),
            UnitState("inactive", "dead", "success"),
        ]
        assert "a.service" not in units.units
        with pytest.raises(NoSuchUnit):
            await units.reset_failed("a.service")

    asyncio.run(go())


def test_failed_unit_stays_failed_on_kill_and_stop_until_reset() -> None:
    async def go() -> None:
        units = FakeUnits()
        await units.start_transient("a.service", ARGV)
        units.exit("a.service", 3)
        await units.kill("a.service", signal.SIGKILL)
        await units.stop("a.service")
        assert await units.active_state("a.service") == "failed"
        assert units.units["a.service"].state.result == "exit-code"
        with pytest.raises(UnitExists):
            await units.start_transient("a.service", ARGV)
        await units.reset_failed("a.service")
        assert await units.active_state("a.service") == "inactive"
        await units.start_transient("a.service", ARGV)
        assert await units.active_state("a.service") == "active"

    asyncio.run(go())


def test_watch_reports_only_watched_units_and_is_seeded_with_current_state() -> None:
    async def go() -> None:
        units = FakeUnits()
        await units.start_transient("a.service", ARGV)
        async with units.watch(["a.service"]) as changes:
            await units.start_transient("b.service", ARGV)
            await units.kill("a.service", signal.SIGSTOP)  # harmless: no change
            await units.kill("a.service", signal.SIGKILL)
            seen = await _drain(changes)
        assert [(c.name, c.active_state) for c in seen] == [("a.service", "failed")]

    asyncio.run(go())


def test_unknown_units_are_refused_and_read_as_inactive() -> None:
    async def go() -> None:
        units = FakeUnits()
        assert await units.active_state("nope.service") == "inactive"
        for call in (units.stop("nope.service"), units.kill("nope.service", signal.SIGKILL)):
            with pytest.raises(NoSuchUnit):
                await call

    asyncio.run(go())
