"""A unit watch that the unit manager refuses fails that one component, not the node agent.

The drivers of a node share one unit manager connection and one task group: a watch refused
for one unit (systemd answered an error, not "unreachable") must not end the group that the
other components' watches and the agent itself run in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import pytest

from haos.model.states import AvailabilityState
from haos.services.agent.drivers import DriverError, UnitDriver
from haos.services.cmf.types import UnitChanged, UnitError, UnitWatch
from haoslab.testing.agentfakes import FakeServiceUnits

pytestmark = pytest.mark.timeout(30)

PRIMARY = AvailabilityState.PRIMARY
REFUSAL = "AddMatch: too many match rules (org.freedesktop.DBus.Error.LimitsExceeded)"


class RefusingUnits(FakeServiceUnits):
    """Refuses every watch that includes one of ``refused`` with a :class:`UnitError`."""

    def __init__(self, installed: Iterable[str], refused: Iterable[str]) -> None:
        super().__init__(installed)
        self.refused = frozenset(refused)
        self.refusals = 0

    def watch(self, names: Iterable[str]) -> UnitWatch:
        names = list(names)
        if self.refused.isdisjoint(names):
            return super().watch(names)
        return self._refuse()

    @contextlib.asynccontextmanager
    async def _refuse(self) -> AsyncIterator[AsyncIterator[UnitChanged]]:
        self.refusals += 1
        raise UnitError(REFUSAL)
        yield  # an async generator, as a watch is  # type: ignore[unreachable]


def test_a_refused_watch_fails_its_component_and_the_others_run_on() -> None:
    async def go() -> None:
        units = RefusingUnits({"web.service", "db.service"}, refused={"db.service"})
        async with asyncio.TaskGroup() as tg:
            web = UnitDriver("n1/web", "web.service", units, lambda r: None, tg)
            db = UnitDriver("n1/db", "db.service", units, lambda r: None, tg, start_timeout=0.3)
            results = await asyncio.gather(
                web.apply(PRIMARY, False), db.apply(PRIMARY, False), return_exceptions=True
            )
            assert results[0] is None
            assert isinstance(results[1], DriverError)
            assert str(results[1]) == f"n1/db: cannot watch db.service: {REFUSAL}"
            assert units.units["web.service"].state.active_state == "active"
            assert "db.service" not in units.units  # never started without a watch
            assert await web.current() is PRIMARY
            assert units.refusals >= 1
            await web.close()
            await db.close()

    asyncio.run(go())  # the group ended cleanly: no UnitError escaped from the db's watch
