"""Two components of every kind on one node, against a real systemd (a cluster node's root
booted under systemd-nspawn, as in the unit and client driver tests).

The drivers are built by ``make_driver`` as the node agent builds them: on one D-Bus
connection, one component endpoint and one task group. Two installed services, two counter
demos (HA-aware applications, as transient units) and two ``ocf:heartbeat:Dummy`` resources
are made primary at once; each must run, and a fault of one is reported for that one only.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_agent_drivers_systemd import SOCKET, WEB, _noderoot, systemd
from test_cmf_systemd import REPO, Container, _skip_unless_possible, booted

from haos.config.model import ManagerSpec
from haos.model.reports import ErrorReport
from haos.model.states import AvailabilityState
from haos.services.agent.base import Driver
from haos.services.agent.clientdriver import unit_name
from haos.services.agent.drivers import DriverDeps, make_driver
from haos.services.agent.endpoint import Endpoint
from haos.services.agent.units import SystemdServiceUnits
from haoslab.testing.agentfakes import MemoryBackend

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

PRIMARY, OFFLINE = AvailabilityState.PRIMARY, AvailabilityState.OFFLINE
DB = "haos-test-db.service"
OCF_ROOT = Path("/usr/lib/ocf")
COUNTERS = {"n1/count-a": 7071, "n1/count-b": 7072}


def specs(states: Path) -> dict[str, ManagerSpec]:
    out = {
        "n1/web": ManagerSpec("systemd", unit=WEB, stop_timeout=5),
        "n1/db": ManagerSpec("systemd", unit=DB, stop_timeout=5),
    }
    for name, port in COUNTERS.items():
        argv = ["/usr/bin/python3", "-m", "haos.apps.counter", "--port", str(port)]
        argv += ["--name", f"demo/{name}", "--advertise", f"127.0.0.1:{port}"]
        out[name] = ManagerSpec(
            "client", command=tuple(argv), environment={"PYTHONPATH": "/opt/haos"}, stop_timeout=5
        )
    for name in ("n1/dummy-a", "n1/dummy-b"):
        params = {"state": str(states / f"{name.replace('/', '_')}.state")}
        out[name] = ManagerSpec("ocf", agent="ocf:heartbeat:Dummy", params=params)
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    _skip_unless_possible()
    if not (OCF_ROOT / "resource.d" / "heartbeat" / "Dummy").is_file():
        pytest.fail("ocf:heartbeat:Dummy missing: install resource-agents", pytrace=False)
    with booted(_noderoot(), tmp_path_factory.mktemp("many")) as c:
        _install(c.root)
        yield c


def _install(root: Path) -> None:
    """haos for the counters' python3 (the whole package: what the client library imports
    changes), the two installed services, and the endpoint's directory."""
    target = root / "opt" / "haos" / "haos"
    shutil.copytree(REPO / "haos", target, ignore=shutil.ignore_patterns("__pycache__"))
    for unit in (WEB, DB):
        (root / "etc" / "systemd" / "system" / unit).write_text(
            "[Service]\nExecStart=/bin/sleep infinity\n"
        )
    (root / SOCKET.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)


async def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout:g} s") from None


def test_two_components_of_every_kind_on_one_node_run_and_fail_apart(
    node: Container, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[ErrorReport] = []
    backend = MemoryBackend()
    endpoint = Endpoint(
        node.root / SOCKET.lstrip("/"), backend, reports.append, components=set(COUNTERS)
    )

    async def go() -> None:
        async with systemd(node) as units, asyncio.TaskGroup() as tg:
            started = asyncio.Event()
            serving = tg.create_task(endpoint.run(started.set))
            await started.wait()
            deps = DriverDeps(
                units, reports.append, tg, endpoint, SOCKET, ocf_root=str(OCF_ROOT),
                monitor_interval=0.2, timeout=30,
            )  # fmt: skip
            drivers: dict[str, Driver] = {}
            for name, spec in specs(tmp_path).items():
                drivers[name] = await make_driver(name, spec, deps)
            try:
                await every_one_runs(drivers, units, backend)
                await a_fault_of_one_is_reported_for_that_one(drivers, units, tmp_path)
            finally:
                await asyncio.gather(
                    *(d.apply(OFFLINE, False) for d in drivers.values()), return_exceptions=True
                )
                for d in drivers.values():
                    await d.close()
                serving.cancel()

    async def every_one_runs(
        drivers: dict[str, Driver], units: SystemdServiceUnits, backend: MemoryBackend
    ) -> None:
        # all at once, as the agent applies its node's desired state: every watch opens now
        await asyncio.gather(*(d.apply(PRIMARY, False) for d in drivers.values()))
        for name, d in drivers.items():
            assert await d.current() is PRIMARY, name
        for unit in (WEB, DB, *map(unit_name, COUNTERS)):
            assert await units.active_state(unit) == "active", unit
        for name, port in COUNTERS.items():
            assert backend.names[f"demo/{name}"] == (f"127.0.0.1:{port}", name)
        assert all((tmp_path / f"n1_dummy-{k}.state").exists() for k in "ab")
        assert reports == []

    async def a_fault_of_one_is_reported_for_that_one(
        drivers: dict[str, Driver], units: SystemdServiceUnits, states: Path
    ) -> None:
        await units.kill(DB, signal.SIGKILL)
        await units.kill(unit_name("n1/count-b"), signal.SIGKILL)
        (states / "n1_dummy-b.state").unlink()  # the resource "dies"
        await until("three reports", lambda: len(reports) >= 3)
        assert sorted(r.component for r in reports) == ["n1/count-b", "n1/db", "n1/dummy-b"]
        for name in ("n1/web", "n1/count-a", "n1/dummy-a"):
            assert await drivers[name].current() is PRIMARY, name
        assert await drivers["n1/db"].current() is OFFLINE
        assert await drivers["n1/count-b"].current() is OFFLINE

    asyncio.run(go())
    # every watch went live at its first try (none was refused and tried again later)
    assert [r.message for r in caplog.records if "refused" in r.message] == []
