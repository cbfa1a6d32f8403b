"""Fencers with fakes: a stand-in fence agent script, callables, an in-memory watchdog."""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
import time
from pathlib import Path

import pytest

from haos.cluster.fencing.agent import AgentDevice, FenceAgentFencer, metadata_parameters
from haos.cluster.fencing.types import FenceError, FenceResult, PowerStatus
from haos.cluster.fencing.watchdog import DevWatchdog, MemoryWatchdog, SelfFencer
from haos.config.model import NodeSpec
from haos.errors import UnavailableError, UsageError
from haoslab.fakes.fencing import ScriptedFencer

pytestmark = pytest.mark.timeout(30)

NODE = NodeSpec("node2", 2, "n2")

# A stand-in for a fence agent, speaking the same stdin protocol: it records what it read
# and behaves as its ``mode`` option says.
FAKE_AGENT = """#!{python}
import os, signal, subprocess, sys, time
options = dict(line.rstrip("\\n").split("=", 1) for line in sys.stdin if "=" in line)
with open(options["record"], "a") as record:
    record.write(repr(sorted(options.items())) + "\\n")
mode, action = options.get("mode", "ok"), options["action"]
if mode == "hang":
    child = subprocess.Popen(["sleep", "60"])
    with open(options["record"] + ".child", "w") as f:
        f.write(str(child.pid))
    time.sleep(60)
if action == "metadata":
    print('<resource-agent><parameters><parameter name="action"/><parameter name="ip"/>'
          '<parameter name="password"/><parameter name="record"/><parameter name="mode"/>'
          '</parameters></resource-agent>')
    sys.exit(0)
if mode == "fail":
    print("2026-01-01 00:00:00,000 ERROR: Failed: Unable to connect", file=sys.stderr)
    print("2026-01-01 00:00:00,001 ERROR: Please use '-h' for usage", file=sys.stderr)
    sys.exit(1)
if action == "status":
    print("Status: OFF" if mode == "off" else "Status: ON")
    sys.exit(2 if mode == "off" else 0)
print("Success: Powered OFF")
"""


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    path = tmp_path / "fence_fake"
    path.write_text(FAKE_AGENT.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fencer_for(
    agent: Path, tmp_path: Path, mode: str = "ok", timeout: float = 10
) -> FenceAgentFencer:
    device = AgentDevice.of(
        str(agent), ip="192.0.2.9", password="s3cret", record=str(tmp_path / "record"), mode=mode
    )
    return FenceAgentFencer({"node2": device}, timeout=timeout)


def recorded(tmp_path: Path) -> list[str]:
    return (tmp_path / "record").read_text().splitlines()


# -- the fence agent adapter ----------------------------------------------------------------


def test_the_agent_reads_action_and_options_as_key_value_lines(agent: Path, tmp_path: Path) -> None:
    result = asyncio.run(fencer_for(agent, tmp_path).fence(NODE, "reboot"))
    assert result.ok and result.node == "node2" and result.action == "reboot"
    assert recorded(tmp_path) == [
        repr(
            sorted(
                {
                    "action": "reboot",
                    "ip": "192.0.2.9",
                    "password": "s3cret",
                    "record": str(tmp_path / "record"),
                    "mode": "ok",
                }.items()
            )
        )
    ]
    assert AgentDevice.of("fence_x", ip="a", plug="3").stdin("off") == b"action=off\nip=a\nplug=3\n"


def test_exit_code_one_is_a_failure_with_the_agents_first_error(
    agent: Path, tmp_path: Path
) -> None:
    result = asyncio.run(fencer_for(agent, tmp_path, "fail").fence(NODE))
    assert not result.ok
    assert result.detail.endswith("off exited 1: Failed: Unable to connect")


@pytest.mark.parametrize(("mode", "power"), [("ok", "on"), ("off", "off")])
def test_status_exit_zero_is_on_and_two_is_off(
    agent: Path, tmp_path: Path, mode: str, power: PowerStatus
) -> None:
    assert asyncio.run(fencer_for(agent, tmp_path, mode).status(NODE)) == power


def test_status_that_fails_raises_fence_error(agent: Path, tmp_path: Path) -> None:
    with pytest.raises(FenceError, match=r"status of node2: .*exited 1"):
        asyncio.run(fencer_for(agent, tmp_path, "fail").status(NODE))


def test_an_agent_past_its_timeout_is_killed_with_its_helpers(agent: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    result = asyncio.run(fencer_for(agent, tmp_path, "hang", timeout=1.0).fence(NODE))
    assert not result.ok and "timed out after 1." in result.detail
    assert time.monotonic() - started < 5
    child = int((tmp_path / "record.child").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the agent's helper survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_missing_agent_is_a_failed_fencing_not_a_crash() -> None:
    fencer = FenceAgentFencer({"node2": AgentDevice("fence_no_such_agent")})
    result = asyncio.run(fencer.fence(NODE))
    assert not result.ok and "fence_no_such_agent not found" in result.detail


def test_passwords_are_not_logged(
    agent: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="haos.cluster.fencing"):
        asyncio.run(fencer_for(agent, tmp_path).fence(NODE))
    assert "password=***" in caplog.text and "s3cret" not in caplog.text


def test_options_cannot_smuggle_lines_or_override_the_action() -> None:
    with pytest.raises(UsageError, match="one line"):
        AgentDevice.of("fence_x", ip="a\naction=on")
    with pytest.raises(UsageError, match="option name 'action'"):
        AgentDevice("fence_x", (("action", "on"),))
    with pytest.raises(UsageError, match="fence action"):
        asyncio.run(FenceAgentFencer({"node2": AgentDevice("x")}).fence(NODE, "on"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no fence device configured for node node9"):
        asyncio.run(FenceAgentFencer({}).fence(NodeSpec("node9", 9, "n9")))


def test_check_finds_options_the_agent_does_not_know(agent: Path, tmp_path: Path) -> None:
    good = fencer_for(agent, tmp_path)
    asyncio.run(good.check(NODE))  # metadata lists every option; validate-all exits 0
    bad = FenceAgentFencer(
        {"node2": AgentDevice.of(str(agent), record=str(tmp_path / "r"), ipp="x")}
    )
    with pytest.raises(FenceError, match="has no parameter ipp"):
        asyncio.run(bad.check(NODE))


def test_metadata_parameters_are_read_from_the_xml() -> None:
    xml = (
        '<resource-agent><parameters><parameter name="ip"/><parameter name="plug"/>'
        "</parameters></resource-agent>"
    )
    assert metadata_parameters(xml) == {"ip", "plug"}
    with pytest.raises(FenceError, match="not XML"):
        metadata_parameters("Usage: fence_x")


# -- scripted fencer ---------------------------------------------------------------------


def test_scripted_fencer_answers_from_its_script_then_succeeds() -> None:
    fencer = ScriptedFencer({"node2": [False]})
    first, second = asyncio.run(_twice(fencer))
    assert (first.ok, second.ok) == (False, True)
    assert fencer.calls == [("node2", "off"), ("node2", "off")]
    assert asyncio.run(fencer.status(NODE)) == "off"


async def _twice(fencer: ScriptedFencer) -> tuple[FenceResult, FenceResult]:
    return await fencer.fence(NODE), await fencer.fence(NODE)


# -- watchdog self-fencing ------------------------------------------------------------------


def test_the_watchdog_is_petted_while_quorate_and_through_the_grace_time_only() -> None:
    watchdog = MemoryWatchdog()
    fencer = SelfFencer(watchdog, self_fence_after=5.0)
    fencer.start()
    assert [fencer.observe(q, t) for q, t in [(True, 0), (True, 1), (False, 2), (False, 6.9)]] == [
        False
    ] * 4
    assert watchdog.pets == 4
    assert fencer.observe(False, 7.0) is True  # 5 s without quorum
    assert watchdog.fired and watchdog.armed and fencer.fired_reason == "inquorate for 5.0 s"
    assert fencer.observe(True, 8.0) is True  # no way back: never petted again
    assert watchdog.pets == 4
    fencer.stop()  # a clean stop after firing must not disarm it
    assert watchdog.calls[-1] == "fire"


def test_regaining_quorum_restarts_the_grace_time() -> None:
    watchdog = MemoryWatchdog()
    fencer = SelfFencer(watchdog, self_fence_after=5.0)
    fencer.start()
    for quorate, now in [(False, 0), (False, 4), (True, 4.5), (False, 5), (False, 9.9)]:
        assert not fencer.observe(quorate, now)
    fencer.stop()
    assert watchdog.calls[-1] == "disarm" and not watchdog.armed


def test_self_fence_action_fires_at_once() -> None:
    watchdog = MemoryWatchdog()
    fencer = SelfFencer(watchdog, self_fence_after=30)
    fencer.start()
    fencer.fire("the CMM asked")
    fencer.fire("again")
    assert watchdog.calls == ["arm", "fire"] and fencer.fired_reason == "the CMM asked"


def test_dev_watchdog_writes_keepalives_and_the_magic_v_only_on_a_clean_close(
    tmp_path: Path,
) -> None:
    # A regular file stands in for /dev/watchdog: tests never open the real device.
    path = tmp_path / "watchdog"
    path.touch()
    dog = DevWatchdog(str(path))
    dog.arm()
    dog.pet()
    dog.pet()
    dog.disarm()
    assert path.read_bytes() == b"\0\0V"
    path.write_bytes(b"")
    dog.arm()
    dog.pet()
    dog.fire()
    assert path.read_bytes() == b"\0"
    with pytest.raises(UsageError, match="not armed"):
        dog.pet()


def test_dev_watchdog_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="cannot open watchdog"):
        DevWatchdog(str(tmp_path / "missing" / "watchdog")).arm()
