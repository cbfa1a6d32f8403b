"""Drivers on the fakes: a systemd unit, an OCF agent, an HA-aware application (through a real
endpoint socket, its 'process' a task that the fake unit manager starts and kills)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from haos.client import Client
from haos.config.model import ManagerSpec
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.clientdriver import systemd_escape, unit_name
from haos.services.agent.drivers import (
    ClientDriver,
    DriverDeps,
    DriverError,
    OcfDriver,
    UnitDriver,
    make_driver,
)
from haos.services.agent.endpoint import Endpoint
from haos.services.agent.ocfdriver import OcfActionFailed
from haos.services.cmf.types import Job, PropertyValue
from haos.services.ocf import AgentResult, OcfAction, OcfComponent, OcfRc
from haoslab.testing.agentfakes import FakeServiceUnits, MemoryBackend

pytestmark = pytest.mark.timeout(30)

PRIMARY, SECONDARY = AvailabilityState.PRIMARY, AvailabilityState.SECONDARY
SPARE, OFFLINE = AvailabilityState.SPARE, AvailabilityState.OFFLINE


async def until(what: str, check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.002)


# --- UnitDriver ---------------------------------------------------------------------------


@asynccontextmanager
async def unit_driver() -> AsyncIterator[tuple[UnitDriver, FakeServiceUnits, list[ErrorReport]]]:
    units = FakeServiceUnits(installed={"web.service"})
    reports: list[ErrorReport] = []
    async with asyncio.TaskGroup() as tg:
        driver = UnitDriver("n1/web", "web.service", units, reports.append, tg, clock=lambda: 7.0)
        try:
            yield driver, units, reports
        finally:
            await driver.close()


def test_unit_is_started_while_primary_and_stopped_otherwise() -> None:
    async def go() -> None:
        async with unit_driver() as (driver, units, reports):
            assert await driver.current() is OFFLINE
            await driver.apply(PRIMARY, False)
            assert units.units["web.service"].state.active_state == "active"
            await driver.apply(PRIMARY, False)  # idempotent
            assert await driver.current() is PRIMARY
            await driver.apply(SPARE, True)
            assert "web.service" not in units.units
            assert await driver.current() is SPARE
            await driver.apply(SPARE, False)
            assert reports == []

    asyncio.run(go())


def test_a_primary_unit_that_dies_is_reported_at_once_and_a_restart_brings_it_back() -> None:
    async def go() -> None:
        async with unit_driver() as (driver, units, reports):
            await driver.apply(PRIMARY, False)
            started = time.monotonic()
            await units.kill("web.service", signal.SIGKILL)
            await until("a report", lambda: reports)
            assert time.monotonic() - started < 0.1
            assert reports == [
                ErrorReport(
                    "n1/web",
                    ErrorKind.CRASH,
                    7.0,
                    "systemd",
                    "web.service is failed/failed (result signal) while primary",
                )
            ]
            assert await driver.current() is OFFLINE
            await driver.recover(RecoveryLevel.RESTART)
            assert units.units["web.service"].state.active_state == "active"
            units.exit("web.service", 0)  # a clean exit while primary is a crash too
            await until("a second report", lambda: len(reports) == 2)
            with pytest.raises(DriverError, match="failover is not a recovery"):
                await driver.recover(RecoveryLevel.FAILOVER)

    asyncio.run(go())


def test_a_unit_that_cannot_start_is_a_driver_error() -> None:
    async def go() -> None:
        units = FakeServiceUnits()
        async with asyncio.TaskGroup() as tg:
            driver = UnitDriver("n1/web", "web.service", units, lambda r: None, tg)
            with pytest.raises(DriverError, match=r"cannot start web\.service: .*not found"):
                await driver.apply(PRIMARY, False)
            await driver.close()

    asyncio.run(go())


# --- OcfDriver ----------------------------------------------------------------------------


class FakeAgent:
    """An OcfRunner that records actions; ``failing`` actions return OCF_ERR_GENERIC."""

    name = "ocf:test:Fake"

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.failing: set[OcfAction] = set()
        self.codes: dict[OcfAction, OcfRc] = {}  # what other failing actions return
        self.monitor_rc = OcfRc.SUCCESS

    async def run(self, action: OcfAction, *, interval: float = 0.0) -> AgentResult:
        self.ran.append(action.value)
        rc = OcfRc.ERR_GENERIC if action in self.failing else OcfRc.SUCCESS
        rc = self.codes.get(action, rc)
        return AgentResult(action, rc, "", 0.0, int(rc))

    async def monitor(self, *, probe: bool = False) -> AgentResult:
        return AgentResult(OcfAction.MONITOR, self.monitor_rc, "", 0.0, int(self.monitor_rc))


@asynccontextmanager
async def ocf_driver(promotable: bool) -> AsyncIterator[tuple[OcfDriver, FakeAgent, list[Any]]]:
    agent = FakeAgent()
    reports: list[ErrorReport] = []
    async with asyncio.TaskGroup() as tg:
        component = OcfComponent("n1/db", agent, promotable=promotable)
        driver = OcfDriver(component, reports.append, tg, monitor_interval=0.01)
        try:
            yield driver, agent, reports
        finally:
            await driver.close()


def test_ocf_states_run_the_agent_and_primary_to_secondary_passes_through_spare() -> None:
    async def go() -> None:
        async with ocf_driver(promotable=True) as (driver, agent, _):
            await driver.apply(PRIMARY, False)
            await driver.apply(PRIMARY, False)
            assert agent.ran == ["start", "promote"]
            await driver.apply(SECONDARY, True)
            assert agent.ran[2:] == ["demote", "stop", "start"]
            agent.monitor_rc = OcfRc.SUCCESS
            assert await driver.current() is SECONDARY
            agent.monitor_rc = OcfRc.RUNNING_PROMOTED
            assert await driver.current() is PRIMARY
            await driver.apply(OFFLINE, False)
            agent.monitor_rc = OcfRc.NOT_RUNNING
            assert await driver.current() is OFFLINE

    asyncio.run(go())


def test_an_ocf_action_that_fails_is_a_driver_error_and_the_state_stays() -> None:
    async def go() -> None:
        async with ocf_driver(promotable=False) as (driver, agent, _):
            agent.failing.add(OcfAction.START)
            with pytest.raises(DriverError, match=r"offline -> primary.*OCF_ERR_GENERIC"):
                await driver.apply(PRIMARY, False)
            assert driver.state is OFFLINE
            agent.failing.clear()
            await driver.apply(PRIMARY, False)
            assert driver.state is PRIMARY

    asyncio.run(go())


@pytest.mark.parametrize(
    ("rc", "kind"),
    [
        pytest.param(OcfRc.ERR_INSTALLED, ErrorKind.HARD, id="not_installed_is_hard"),
        pytest.param(OcfRc.ERR_PERM, ErrorKind.HARD, id="no_permission_is_hard"),
        pytest.param(OcfRc.ERR_ARGS, ErrorKind.HARD, id="bad_arguments_are_hard"),
        pytest.param(OcfRc.ERR_CONFIGURED, ErrorKind.MISCONFIGURED, id="misconfigured"),
        pytest.param(OcfRc.ERR_GENERIC, None, id="generic_is_left_to_the_caller"),
    ],
)
def test_a_start_that_fails_definitively_is_reported_with_its_class(
    rc: OcfRc, kind: ErrorKind | None
) -> None:
    async def go() -> None:
        async with ocf_driver(promotable=False) as (driver, agent, reports):
            agent.codes[OcfAction.START] = rc
            with pytest.raises(OcfActionFailed, match=str(rc)) as raised:
                await driver.apply(PRIMARY, False)
            assert raised.value.reported is (kind is not None)
            assert [r.kind for r in reports] == ([kind] if kind else [])
            assert all(str(rc) in r.detail and r.source == agent.name for r in reports)
            # the same during a restart in place
            del agent.codes[OcfAction.START]
            await driver.apply(PRIMARY, False)
            agent.codes[OcfAction.START] = rc
            with pytest.raises(OcfActionFailed):
                await driver.recover(RecoveryLevel.RESTART)
            assert len(reports) == (2 if kind else 0)

    asyncio.run(go())


def test_a_failed_monitor_is_reported_once_until_recovered() -> None:
    async def go() -> None:
        async with ocf_driver(promotable=False) as (driver, agent, reports):
            await driver.apply(PRIMARY, False)
            await until("monitor runs", lambda: driver.monitors >= 3)
            assert reports == []
            agent.monitor_rc = OcfRc.NOT_RUNNING
            await until("a report", lambda: reports)
            await asyncio.sleep(0.05)  # five more monitor periods
            assert len(reports) == 1 and reports[0].kind is ErrorKind.CRASH
            agent.monitor_rc = OcfRc.SUCCESS
            await driver.recover(RecoveryLevel.RESTART)
            assert agent.ran[-2:] == ["stop", "start"]
            agent.monitor_rc = OcfRc.ERR_GENERIC
            await until("a second report", lambda: len(reports) == 2)

    asyncio.run(go())


def test_ocf_monitor_runs_only_while_the_resource_should_run() -> None:
    async def go() -> None:
        async with ocf_driver(promotable=True) as (driver, agent, reports):
            await driver.apply(SPARE, False)
            agent.monitor_rc = OcfRc.NOT_RUNNING
            await asyncio.sleep(0.05)
            assert driver.monitors == 0 and reports == []

    asyncio.run(go())


# --- ClientDriver -------------------------------------------------------------------------

App = Callable[[Mapping[str, str]], Coroutine[Any, Any, None]]


class AppUnits(FakeServiceUnits):
    """Starting a transient unit runs ``app`` (a task) with the unit's environment; stopping,
    killing or :meth:`crash` ends it, as its process would end."""

    def __init__(self, tg: asyncio.TaskGroup, app: App) -> None:
        super().__init__()
        self.tg, self.app = tg, app
        self.procs: dict[str, asyncio.Task[None]] = {}
        self.started: list[Mapping[str, PropertyValue]] = []

    async def start_transient(
        self, name: str, argv: Sequence[str], properties: Mapping[str, PropertyValue] | None = None
    ) -> Job:
        job = await super().start_transient(name, argv, properties)
        props = dict(properties or {})
        self.started.append(props)
        assert isinstance(props["Environment"], list)
        env = dict(str(e).partition("=")[::2] for e in props["Environment"])
        self.procs[name] = self.tg.create_task(self.app(env))
        return job

    def end(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.cancel()

    async def stop(self, name: str) -> Job:
        self.end(name)
        return await super().stop(name)

    async def kill(self, name: str, signal: int) -> None:
        self.end(name)
        await super().kill(name, signal)

    def crash(self, name: str) -> None:
        self.end(name)
        self.exit(name, 1)


class Recorder:
    """The application: records what it is asked, acks roles (or refuses, when told to)."""

    def __init__(self, quiesce_for: float = 0.0) -> None:
        self.seen: list[str] = []
        self.refuse = False
        self.clients: list[Client] = []
        self.quiesce_for = quiesce_for

    async def __call__(self, env: Mapping[str, str]) -> None:
        async def quiesce() -> None:
            self.seen.append("quiesce")
            await asyncio.sleep(self.quiesce_for)

        component, path = env["HAOS_COMPONENT"], env["HAOS_AGENT_SOCKET"]
        async with Client(component, path, on_quiesce=quiesce) as client:
            self.clients.append(client)
            await client.register()
            async for assignment in client.assignments():
                self.seen.append(assignment.state)
                await client.ack(assignment, ok=not self.refuse, message="no")


class ClientBench:
    def __init__(self, units: AppUnits, endpoint: Endpoint, driver: ClientDriver) -> None:
        self.units, self.endpoint, self.driver = units, endpoint, driver
        self.reports: list[ErrorReport] = []


@asynccontextmanager
async def client_driver(tmp_path: Path, app: App) -> AsyncIterator[ClientBench]:
    reports: list[ErrorReport] = []
    async with asyncio.TaskGroup() as tg:
        endpoint = Endpoint(tmp_path / "c.sock", MemoryBackend(), reports.append)
        started = asyncio.Event()
        serving = tg.create_task(endpoint.run(started.set))
        await started.wait()
        units = AppUnits(tg, app)
        spec = ManagerSpec(
            "client", command=("demo",), environment={"A": "1"}, stop_timeout=2, quiesce_timeout=0.2
        )
        deps = DriverDeps(units, reports.append, tg, endpoint, str(tmp_path / "c.sock"), timeout=2)
        driver = await make_driver("n1/demo", spec, deps)
        assert isinstance(driver, ClientDriver)
        bench = ClientBench(units, endpoint, driver)
        bench.reports = reports
        try:
            yield bench
        finally:
            await driver.close()
            for name in list(units.procs):
                units.end(name)
            serving.cancel()


UNIT = "haos-comp-n1-demo.service"


def test_unit_names_are_escaped_as_systemd_escape_does() -> None:
    assert unit_name("shelf1/slot1/node/demo") == "haos-comp-shelf1-slot1-node-demo.service"
    assert systemd_escape("a-b/.c d/é") == "a\\x2db-.c\\x20d-\\xc3\\xa9"
    assert systemd_escape(".hidden") == "\\x2ehidden"


def test_the_application_runs_as_a_transient_unit_and_takes_its_roles(tmp_path: Path) -> None:
    app = Recorder()

    async def go() -> None:
        async with client_driver(tmp_path, app) as b:
            assert await b.driver.current() is OFFLINE
            await b.driver.apply(PRIMARY, False)
            assert b.units.units[UNIT].argv == ("demo",)
            env = b.units.started[0]["Environment"]
            assert env == ["A=1", "HAOS_COMPONENT=n1/demo", f"HAOS_AGENT_SOCKET={tmp_path}/c.sock"]
            assert b.units.started[0]["TimeoutStopUSec"] == 2_000_000
            assert await b.driver.current() is PRIMARY
            await b.driver.apply(PRIMARY, False)  # idempotent: not sent again
            await b.driver.apply(SPARE, True)  # graceful: quiesce first
            await b.driver.apply(SECONDARY, False)
            await b.driver.apply(OFFLINE, False)
            assert UNIT not in b.units.units
            assert await b.driver.current() is OFFLINE
            assert b.reports == []

    asyncio.run(go())
    assert app.seen == ["primary", "quiesce", "spare", "secondary", "offline"]


def test_the_death_of_the_process_is_reported_and_a_restart_gives_the_role_back(
    tmp_path: Path,
) -> None:
    app = Recorder()

    async def go() -> None:
        async with client_driver(tmp_path, app) as b:
            await b.driver.apply(SECONDARY, False)
            b.units.crash(UNIT)
            await until("a report", lambda: b.reports)
            report = b.reports[0]
            assert (report.component, report.kind) == ("n1/demo", ErrorKind.CRASH)
            assert "failed/failed (result exit-code) while it should be secondary" in report.detail
            assert await b.driver.current() is OFFLINE
            await b.driver.recover(RecoveryLevel.RESTART)
            assert await b.driver.current() is SECONDARY
            assert len(b.reports) == 1

    asyncio.run(go())
    assert app.seen == ["secondary", "secondary"]


def test_a_hung_up_application_is_reported_and_one_that_registers_again_gets_its_role(
    tmp_path: Path,
) -> None:
    app = Recorder()

    async def go() -> None:
        async with client_driver(tmp_path, app) as b:
            await b.driver.apply(PRIMARY, False)
            await app.clients[0].close()  # the process lives on without its connection
            await until("a report", lambda: b.reports, timeout=3)
            assert b.reports[0].kind is ErrorKind.ERROR
            assert "closed its agent connection" in b.reports[0].detail
            # The same process registers again (as after an agent restart): role re-sent.
            again = b.units.tg.create_task(app({"HAOS_COMPONENT": "n1/demo",
                                                "HAOS_AGENT_SOCKET": b.endpoint.path}))  # fmt: skip
            await until("the role again", lambda: app.seen.count("primary") == 2)
            async with asyncio.timeout(5):
                while await b.driver.current() is not PRIMARY:  # acked just after it was seen
                    await asyncio.sleep(0.002)
            assert len(b.reports) == 1
            again.cancel()

    asyncio.run(go())


def test_an_application_that_refuses_or_never_registers_is_a_driver_error(tmp_path: Path) -> None:
    app = Recorder()
    app.refuse = True

    async def never(env: Mapping[str, str]) -> None:
        await asyncio.sleep(3600)

    async def go() -> None:
        async with client_driver(tmp_path, app) as b:
            with pytest.raises(DriverError, match="refused the role primary: no"):
                await b.driver.apply(PRIMARY, False)
        async with client_driver(tmp_path, never) as b:
            with pytest.raises(DriverError, match="did not register within 2 s"):
                await b.driver.apply(SPARE, False)

    asyncio.run(go())


def test_a_process_that_exits_before_registering_is_a_driver_error(tmp_path: Path) -> None:
    async def go() -> None:
        async def dies(env: Mapping[str, str]) -> None:
            await asyncio.sleep(0.01)
            bench.units.exit(UNIT, 3)

        async with client_driver(tmp_path, dies) as bench:
            with pytest.raises(DriverError, match="ended before registering: failed"):
                await bench.driver.apply(PRIMARY, False)
            assert bench.reports == []

    asyncio.run(go())


def test_a_quiesce_that_takes_too_long_delays_the_switchover_only_by_quiesce_timeout(
    tmp_path: Path,
) -> None:
    app = Recorder(quiesce_for=60.0)

    async def go() -> None:
        async with client_driver(tmp_path, app) as b:
            await b.driver.apply(PRIMARY, False)
            started = time.monotonic()
            await b.driver.apply(SPARE, True)
            assert 0.2 <= time.monotonic() - started < 1.0
            assert await b.driver.current() is SPARE

    asyncio.run(go())
    assert app.seen == ["primary", "quiesce", "spare"]
