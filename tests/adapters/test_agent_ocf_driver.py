"""The OCF driver on real, unchanged agents: ``ocf:heartbeat:Dummy`` (plain) and
``ocf:pacemaker:Stateful`` (promotable), built by ``make_driver`` from a manager spec."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from haos.config.model import ManagerSpec
from haos.errors import ConfigError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.drivers import DriverDeps, OcfDriver, make_driver
from haoslab.testing.agentfakes import FakeServiceUnits

pytestmark = pytest.mark.timeout(120)

AGENTS = Path("/usr/lib/ocf/resource.d")
for _agent in ("heartbeat/Dummy", "pacemaker/Stateful"):
    if not (AGENTS / _agent).is_file():
        pytest.fail(
            f"{AGENTS / _agent} missing: install resource-agents and pacemaker-resource-agents",
            pytrace=False,
        )

PRIMARY, SECONDARY = AvailabilityState.PRIMARY, AvailabilityState.SECONDARY
SPARE, OFFLINE = AvailabilityState.SPARE, AvailabilityState.OFFLINE


@asynccontextmanager
async def driver(spec: ManagerSpec) -> AsyncIterator[tuple[OcfDriver, list[ErrorReport]]]:
    reports: list[ErrorReport] = []
    async with asyncio.TaskGroup() as tg:
        deps = DriverDeps(FakeServiceUnits(), reports.append, tg, monitor_interval=0.2)
        made = await make_driver("n1/res", spec, deps)
        assert isinstance(made, OcfDriver)
        try:
            yield made, reports
        finally:
            await made.close()


def test_dummy_runs_while_primary_and_its_death_is_reported_then_restarted(tmp_path: Path) -> None:
    state = tmp_path / "dummy.state"
    spec = ManagerSpec("ocf", agent="ocf:heartbeat:Dummy", params={"state": str(state)})

    async def go() -> None:
        async with driver(spec) as (d, reports):
            assert await d.current() is OFFLINE
            await d.apply(PRIMARY, False)
            assert state.exists() and await d.current() is PRIMARY
            await d.apply(SECONDARY, False)  # a plain agent's secondary is a cold standby
            assert not state.exists() and await d.current() is SECONDARY
            await d.apply(PRIMARY, False)
            state.unlink()  # the resource dies
            async with asyncio.timeout(5):
                while not reports:
                    await asyncio.sleep(0.05)
            assert reports[0].component == "n1/res" and reports[0].kind is ErrorKind.CRASH
            assert "not running" in reports[0].detail
            await d.recover(RecoveryLevel.RESTART)
            assert state.exists() and await d.current() is PRIMARY
            await asyncio.sleep(0.5)  # monitors run, all healthy
            assert len(reports) == 1
            await d.apply(SPARE, False)
            assert not state.exists() and await d.current() is SPARE

    asyncio.run(go())


def test_stateful_is_promoted_as_primary_and_started_as_secondary(tmp_path: Path) -> None:
    spec = ManagerSpec(
        "ocf", agent="ocf:pacemaker:Stateful", params={"state": str(tmp_path / "st.state")}
    )

    async def go() -> None:
        async with driver(spec) as (d, reports):
            await d.apply(SECONDARY, False)
            assert await d.current() is SECONDARY
            await d.apply(PRIMARY, False)
            assert await d.current() is PRIMARY
            await d.apply(SECONDARY, True)  # through spare: demote, stop, start
            assert await d.current() is SECONDARY
            await d.apply(OFFLINE, False)
            assert await d.current() is OFFLINE
            await asyncio.sleep(0.3)
            assert reports == []

    asyncio.run(go())


@pytest.mark.parametrize(
    ("spec", "key", "reason"),
    [
        (
            ManagerSpec("ocf", agent="ocf:heartbeat:Dummy", params={"colour": "red"}),
            "params.colour",
            "unknown parameter",
        ),
        (
            ManagerSpec("ocf", agent="ocf:heartbeat:Dummy", promotable=True),
            "manager.promotable",
            "cannot be promotable",
        ),
    ],
)
def test_bad_ocf_specs_are_config_errors(spec: ManagerSpec, key: str, reason: str) -> None:
    async def go() -> None:
        async with asyncio.TaskGroup() as tg:
            deps = DriverDeps(FakeServiceUnits(), lambda r: None, tg)
            with pytest.raises(ConfigError) as info:
                await make_driver("n1/res", spec, deps)
        problem = info.value.problems[0]
        assert problem.key == key and reason in problem.reason

    asyncio.run(go())
