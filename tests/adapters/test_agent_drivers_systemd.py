"""The unit and client drivers against a real systemd: a cluster node's root (python3 included)
booted under systemd-nspawn with the CMF adapter tests' ``booted`` helper.

The client component is the counter demo, run by the container's systemd as a transient unit;
its ``haos.client`` reaches the endpoint, which the test serves on a socket inside the
container's /run (through ``/proc/<container init>/root``).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from test_cmf_systemd import REPO, Container, _skip_unless_possible, booted

from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.clientdriver import ClientDriver
from haos.services.agent.drivers import DriverError, UnitDriver
from haos.services.agent.endpoint import Endpoint
from haos.services.agent.units import SystemdServiceUnits
from haos.services.cmf.systemd import MANAGER, MANAGER_PATH
from haoslab.testing.agentfakes import MemoryBackend

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

NODEROOT_CACHE = Path("/var/cache/haos/noderoot")
PRIMARY, SPARE, OFFLINE = (
    AvailabilityState.PRIMARY,
    AvailabilityState.SPARE,
    AvailabilityState.OFFLINE,
)
WEB = "haos-test-web.service"
SOCKET = "/run/haos-test/components.sock"  # as the container sees it
DEMO = "n1/demo"


def _noderoot() -> Path:
    proc = subprocess.run(
        [str(REPO / "image" / "rootfs.sh"), "--node", str(NODEROOT_CACHE)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"image/rootfs.sh --node failed:\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


def _install(root: Path) -> None:
    """The client library and the demo for the container's python3, and a plain service
    (what an application linked with haos.client needs of haos, and no more)."""
    for part in (
        "__init__.py",
        "errors.py",
        "trace.py",
        "jsonlines.py",
        "limits.py",
        "client",
        "apps",
    ):
        source, target = REPO / "haos" / part, root / "opt" / "haos" / "haos" / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    unit = root / "etc" / "systemd" / "system" / WEB
    unit.write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    (root / "run" / "haos-test").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    _skip_unless_possible()
    with booted(_noderoot(), tmp_path_factory.mktemp("agent")) as c:
        _install(c.root)
        yield c


@asynccontextmanager
async def systemd(node: Container) -> AsyncIterator[SystemdServiceUnits]:
    units = await SystemdServiceUnits.connect(node.bus_address)
    try:
        await units.systemd.call(MANAGER_PATH, MANAGER, "Reload")  # sees haos-test-web
        yield units
    finally:
        units.systemd.bus.disconnect()


async def wait_for(reports: list[ErrorReport], count: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while len(reports) < count:
            await asyncio.sleep(0.001)


def test_unit_driver_starts_stops_and_reports_a_killed_primary_at_once(node: Container) -> None:
    async def go() -> None:
        reports: list[ErrorReport] = []
        async with systemd(node) as units, asyncio.TaskGroup() as tg:
            driver = UnitDriver("n1/web", WEB, units, reports.append, tg, stop_timeout=5)
            try:
                await driver.apply(PRIMARY, False)
                assert await units.active_state(WEB) == "active"
                assert await driver.current() is PRIMARY
                started = time.monotonic()
                await units.kill(WEB, signal.SIGKILL)
                await wait_for(reports, 1)
                print(f"SIGKILL -> error report: {(time.monotonic() - started) * 1e3:.1f} ms")
                assert time.monotonic() - started < 1.0
                assert reports[0].kind is ErrorKind.CRASH
                assert "failed/failed (result signal) while primary" in reports[0].detail
                await driver.recover(RecoveryLevel.RESTART)
                assert await units.active_state(WEB) == "active"
                await driver.apply(SPARE, True)
                assert await units.active_state(WEB) == "inactive"
                assert await driver.current() is SPARE
                assert len(reports) == 1
                missing = UnitDriver("n1/x", "haos-test-none.service", units, reports.append, tg)
                with pytest.raises(DriverError, match="not found"):
                    await missing.apply(PRIMARY, False)
                await missing.close()
            finally:
                await driver.close()

    asyncio.run(go())


def test_client_driver_runs_the_demo_as_a_transient_unit_with_roles(node: Container) -> None:
    async def go() -> None:
        reports: list[ErrorReport] = []
        backend = MemoryBackend()
        host_socket = node.root / SOCKET.lstrip("/")
        endpoint = Endpoint(host_socket, backend, reports.append, components={DEMO})
        async with systemd(node) as units, asyncio.TaskGroup() as tg:
            started = asyncio.Event()
            serving = tg.create_task(endpoint.run(started.set))
            await started.wait()
            driver = ClientDriver(
                DEMO,
                ["/usr/bin/python3", "-m", "haos.apps.counter", "--advertise", "127.0.0.1:7070"],
                units,
                endpoint,
                reports.append,
                tg,
                socket_path=SOCKET,
                environment={"PYTHONPATH": "/opt/haos"},
                stop_timeout=5,
                timeout=30,
            )
            try:
                await scenario(driver, units, endpoint, backend, reports)
            finally:
                await driver.close()
                serving.cancel()

    asyncio.run(go())


async def scenario(
    driver: ClientDriver,
    units: SystemdServiceUnits,
    endpoint: Endpoint,
    backend: MemoryBackend,
    reports: list[ErrorReport],
) -> None:
    unit = "haos-comp-n1-demo.service"
    assert driver.unit == unit
    await driver.apply(PRIMARY, False)
    assert await units.active_state(unit) == "active"
    assert await driver.current() is PRIMARY
    assert backend.names["demo/counter"] == ("127.0.0.1:7070", DEMO)  # it took the role
    await driver.apply(SPARE, True)  # quiesce, then spare
    assert await driver.current() is SPARE
    await driver.apply(PRIMARY, False)

    started = time.monotonic()
    await units.kill(unit, signal.SIGKILL)
    await wait_for(reports, 1)
    print(f"SIGKILL -> error report: {(time.monotonic() - started) * 1e3:.1f} ms")
    assert time.monotonic() - started < 1.0
    assert reports[0].kind is ErrorKind.CRASH and "(result signal)" in reports[0].detail
    assert await driver.current() is OFFLINE

    await driver.recover(RecoveryLevel.RESTART)
    assert await driver.current() is PRIMARY
    session = endpoint.session(DEMO)
    assert session is not None and session.pid is not None
    await driver.apply(OFFLINE, True)
    assert await units.active_state(unit) == "inactive"
    assert endpoint.session(DEMO) is None
    assert len(reports) == 1
