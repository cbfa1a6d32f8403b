"""OcfAgent and OcfComponent against real, unchanged OCF agents: ``ocf:heartbeat:Dummy``
(Debian's ``resource-agents``) and ``ocf:pacemaker:Stateful`` / ``ocf:pacemaker:Dummy``
(``pacemaker-resource-agents``). Their state files live in the test's tmp dir.

Stateful calls Pacemaker's ``crm_attribute`` to set promotion scores; without a cluster that
fails (and is not installed), which the agent ignores, as it should here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from haos.errors import ConfigError
from haos.model.reports import ErrorKind
from haos.model.states import AvailabilityState
from haos.services.ocf import OcfAction, OcfAgent, OcfComponent, OcfRc

pytestmark = pytest.mark.timeout(120)

AGENTS = Path("/usr/lib/ocf/resource.d")
for _agent in ("heartbeat/Dummy", "pacemaker/Stateful", "pacemaker/Dummy"):
    if not (AGENTS / _agent).is_file():
        pytest.fail(
            f"{AGENTS / _agent} missing: install resource-agents and pacemaker-resource-agents",
            pytrace=False,
        )


def dummy(tmp_path: Path) -> OcfAgent:
    return OcfAgent("heartbeat", "Dummy", {"state": str(tmp_path / "dummy.state")}, "dummy1")


def stateful(tmp_path: Path) -> OcfAgent:
    return OcfAgent(
        "pacemaker",
        "Stateful",
        {"state": str(tmp_path / "stateful.state")},
        "stateful1",
        promotable=True,
    )


def test_heartbeat_dummy_start_monitor_stop(tmp_path: Path) -> None:
    agent = dummy(tmp_path)
    state = tmp_path / "dummy.state"

    async def scenario() -> list[tuple[OcfRc, bool]]:
        seen = []
        for action in (
            agent.validate_all,
            lambda: agent.monitor(probe=True),
            agent.start,
            agent.monitor,
            agent.stop,
            agent.monitor,
        ):
            result = await action()
            seen.append((result.rc, state.exists()))
        return seen

    assert asyncio.run(scenario()) == [
        (OcfRc.SUCCESS, False),
        (OcfRc.NOT_RUNNING, False),
        (OcfRc.SUCCESS, True),
        (OcfRc.SUCCESS, True),
        (OcfRc.SUCCESS, False),
        (OcfRc.NOT_RUNNING, False),
    ]


def test_pacemaker_stateful_start_promote_demote_stop(tmp_path: Path) -> None:
    agent = stateful(tmp_path)
    state = tmp_path / "stateful.state"

    async def scenario() -> list[tuple[OcfAction, OcfRc, str]]:
        seen = []
        for action in (
            agent.start,
            agent.monitor,
            agent.promote,
            agent.monitor,
            agent.demote,
            agent.monitor,
            agent.stop,
            agent.monitor,
        ):
            result = await action()
            seen.append(
                (result.action, result.rc, state.read_text().strip() if state.exists() else "-")
            )
        return seen

    M = OcfAction.MONITOR
    assert asyncio.run(scenario()) == [
        (OcfAction.START, OcfRc.SUCCESS, "Unpromoted"),
        (M, OcfRc.SUCCESS, "Unpromoted"),
        (OcfAction.PROMOTE, OcfRc.SUCCESS, "Promoted"),
        (M, OcfRc.RUNNING_PROMOTED, "Promoted"),
        (OcfAction.DEMOTE, OcfRc.SUCCESS, "Unpromoted"),
        (M, OcfRc.SUCCESS, "Unpromoted"),
        (OcfAction.STOP, OcfRc.SUCCESS, "-"),
        (M, OcfRc.NOT_RUNNING, "-"),
    ]


def test_stateful_as_a_component_through_the_availability_states(tmp_path: Path) -> None:
    agent = stateful(tmp_path)
    comp = OcfComponent("db", agent, promotable=True)

    async def scenario() -> list[tuple[AvailabilityState, OcfRc, ErrorKind | None]]:
        seen = []
        for target in (
            AvailabilityState.SECONDARY,
            AvailabilityState.PRIMARY,
            AvailabilityState.SPARE,
            AvailabilityState.PRIMARY,
            AvailabilityState.OFFLINE,
        ):
            await comp.transition(target)
            monitor = await agent.monitor()
            report = await comp.check(now=1.0)
            seen.append((comp.state, monitor.rc, report.kind if report else None))
        return seen

    assert asyncio.run(scenario()) == [
        (AvailabilityState.SECONDARY, OcfRc.SUCCESS, None),
        (AvailabilityState.PRIMARY, OcfRc.RUNNING_PROMOTED, None),
        (AvailabilityState.SPARE, OcfRc.NOT_RUNNING, ErrorKind.CRASH),
        (AvailabilityState.PRIMARY, OcfRc.RUNNING_PROMOTED, None),
        (AvailabilityState.OFFLINE, OcfRc.NOT_RUNNING, ErrorKind.CRASH),
    ]


def test_dummy_killed_behind_its_back_is_reported_as_crash(tmp_path: Path) -> None:
    agent = dummy(tmp_path)
    comp = OcfComponent("web", agent, promotable=False)
    asyncio.run(comp.transition(AvailabilityState.PRIMARY))
    assert asyncio.run(comp.check(now=5.0)) is None
    (tmp_path / "dummy.state").unlink()  # the resource vanished
    report = asyncio.run(comp.check(now=6.0))
    assert report is not None
    assert (report.component, report.kind, report.observed_at) == ("web", ErrorKind.CRASH, 6.0)
    assert report.source == "ocf:heartbeat:Dummy"


def test_heartbeat_dummy_meta_data(tmp_path: Path) -> None:
    meta = asyncio.run(dummy(tmp_path).check_params())
    assert meta.name == "Dummy"
    state = meta.parameter("state")
    assert state is not None and state.unique and not state.required
    assert state.default is not None and state.default.endswith("/Dummy-dummy1.state")
    assert {p.name for p in meta.parameters} >= {"state", "fake"}
    assert not meta.promotable
    monitor = meta.action("monitor")
    assert monitor is not None and (monitor.timeout, monitor.interval) == (20.0, 10.0)
    assert meta.default_timeouts()["start"] == 20.0


def test_pacemaker_stateful_meta_data(tmp_path: Path) -> None:
    meta = asyncio.run(stateful(tmp_path).check_params())
    assert meta.name == "Stateful" and meta.promotable
    assert {p.name for p in meta.parameters} >= {"state", "envfile", "notify_delay"}
    promoted = meta.action("monitor", role="Promoted")
    unpromoted = meta.action("monitor", role="Unpromoted")
    assert promoted is not None and unpromoted is not None
    assert (promoted.interval, unpromoted.interval) == (10.0, 11.0)
    timeouts = meta.default_timeouts()
    assert (timeouts["promote"], timeouts["demote"], timeouts["start"]) == (10.0, 10.0, 20.0)


def test_unknown_param_of_a_real_agent_is_a_config_error(tmp_path: Path) -> None:
    agent = OcfAgent("heartbeat", "Dummy", {"stat": str(tmp_path / "s")}, "d1")
    with pytest.raises(ConfigError, match=r"params\.stat: unknown parameter of OCF agent Dummy"):
        asyncio.run(agent.check_params())


def test_stateful_sees_the_promotable_clone_environment(tmp_path: Path) -> None:
    envfile = tmp_path / "env"
    agent = OcfAgent(
        "pacemaker",
        "Stateful",
        {"state": str(tmp_path / "s.state"), "envfile": str(envfile)},
        "stateful1",
        promotable=True,
    )
    asyncio.run(agent.start())
    dumped = envfile.read_text()
    assert "OCF_RESKEY_CRM_meta_promotable=true" in dumped
    assert "OCF_RESKEY_CRM_meta_timeout=20000" in dumped


def test_hanging_real_agent_is_killed_within_its_timeout(tmp_path: Path) -> None:
    # ocf:pacemaker:Dummy sleeps op_sleep seconds in every monitor, in a child ``sleep``.
    instance = f"hang-{time.monotonic_ns()}"
    agent = OcfAgent(
        "pacemaker",
        "Dummy",
        {"state": str(tmp_path / "d.state"), "op_sleep": "30"},
        instance,
        {"monitor": 1.0},
    )
    started = time.monotonic()
    result = asyncio.run(agent.monitor())
    assert time.monotonic() - started < 3.0
    assert result.timed_out and result.rc is OcfRc.ERR_GENERIC
    # Nothing that ran for it (the agent's shell, its sleep) is left.
    deadline = time.monotonic() + 2
    while _processes_of(instance) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _processes_of(instance) == []


def _processes_of(instance: str) -> list[int]:
    """Live processes whose environment names ``instance`` as their OCF resource."""
    marker = f"OCF_RESOURCE_INSTANCE={instance}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if status != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found
