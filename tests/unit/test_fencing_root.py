"""The cluster daemon's fencing root: from ``[fencing]`` to each node's fencer, its delays,
and the self-fencer; and the pieces it is made of (command fencer, password files,
per-node routing, delays, the self-fencer's first quorum)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from haos.cluster.cmm.policy import fence_delay
from haos.cluster.fencing.agent import AgentDevice, FenceAgentFencer
from haos.cluster.fencing.command import CommandFencer
from haos.cluster.fencing.watchdog import DevWatchdog, MemoryWatchdog, SelfFencer, Watchdog
from haos.config.loader import parse_config
from haos.config.model import ClusterConfig, NodeSpec
from haos.errors import ConfigError
from haos.services.fencing_root import Fencing, build_fencing


def config(fencing: str, nodes: int = 3, priorities: tuple[int, ...] = ()) -> ClusterConfig:
    text = '[cluster]\nname = "c"\n'
    for n in range(1, nodes + 1):
        prio = priorities[n - 1] if priorities else 0
        text += f'[[components]]\nname = "n{n}"\nclass = "node"\n'
        text += f'[[nodes]]\nname = "n{n}"\nnode_id = {n}\ncomponent = "n{n}"\npriority = {prio}\n'
    return parse_config(text + fencing, "cluster.toml")


def node(c: ClusterConfig, name: str) -> NodeSpec:
    return next(n for n in c.nodes if n.name == name)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def build(
    c: ClusterConfig,
    me: str = "n1",
    delays: tuple[float, float] = (0.0, 0.0),
    devices: tuple[str, ...] = (),
    sleep: Sleeps | None = None,
) -> tuple[Fencing, list[MemoryWatchdog]]:
    made: list[MemoryWatchdog] = []

    def watchdog(path: str, timeout: int) -> Watchdog:
        made.append(MemoryWatchdog())
        return made[-1]

    built = build_fencing(
        c,
        node(c, me),
        lambda: delays,
        exists=lambda path: path in devices,
        watchdog=watchdog,
        sleep=sleep or Sleeps(),
    )
    return built, made


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    """A fence agent that records its argv and stdin, and succeeds."""
    script = tmp_path / "fence_recorder"
    script.write_text(
        f'#!/bin/sh\necho "argv: $*" > {tmp_path}/agent.log\ncat >> {tmp_path}/agent.log\n'
    )
    script.chmod(0o755)
    return script


def test_each_node_gets_the_device_its_table_names(agent: Path, tmp_path: Path) -> None:
    secret = tmp_path / "n1.pass"
    secret.write_text("s3cret\n")
    marker = tmp_path / "fenced"
    c = config(f"""
[fencing]
action = "off"
[fencing.nodes.n1]
agent = "{agent}"
params = {{ ip = "10.0.0.1", lanplus = true }}
password_file = "{secret}"
[fencing.nodes.n2]
command = ["/bin/sh", "-c", "echo {{node}} {{node_id}} {{action}} > {marker}"]
""")
    built, _ = build(c, me="n3")
    assert built.action == "off"
    assert built.described[2] == "n3: none"
    assert built.unfenced == {"n3"} and built.has_devices

    async def scenario() -> None:
        one = await built.fencer.fence(node(c, "n1"), built.action)
        assert one.ok and "fence_recorder off succeeded" in one.detail
        two = await built.fencer.fence(node(c, "n2"), built.action)
        assert two.ok, two.detail
        three = await built.fencer.fence(node(c, "n3"), built.action)
        assert not three.ok
        assert "no fence device configured for n3" in three.detail

    asyncio.run(scenario())
    recorded = (tmp_path / "agent.log").read_text().splitlines()
    assert recorded == ["argv: ", "action=off", "ip=10.0.0.1", "lanplus=1", "password=s3cret"]
    assert marker.read_text() == "n2 2 off\n"


def test_the_password_is_read_at_fence_time_and_never_shown(agent: Path, tmp_path: Path) -> None:
    secret = tmp_path / "bmc.pass"
    secret.write_text("first\n")
    device = AgentDevice(str(agent), (("ip", "x"),), str(secret))
    fencer = FenceAgentFencer({"n2": device})
    target = NodeSpec("n2", 2, "n2")
    secret.write_text("changed\n")  # rotated after the daemon started
    assert asyncio.run(fencer.fence(target, "reboot")).ok
    assert "password=changed" in (tmp_path / "agent.log").read_text()
    assert "changed" not in device.redacted() and "password=***" in device.redacted()
    os.unlink(secret)
    failed = asyncio.run(fencer.fence(target, "reboot"))
    assert not failed.ok and "cannot read password file" in failed.detail


def test_a_command_that_fails_or_hangs_is_a_failed_fencing_with_its_reason() -> None:
    target = NodeSpec("n2", 2, "n2")
    failing = CommandFencer(["/bin/sh", "-c", "echo no power switch >&2; exit 3"])
    result = asyncio.run(failing.fence(target, "off"))
    assert not result.ok and result.detail == "fence command exited 3: no power switch"
    hanging = CommandFencer(["/bin/sleep", "30"], timeout=0.2)
    result = asyncio.run(hanging.fence(target, "off"))
    assert not result.ok and "timed out after 0.2 s" in result.detail
    missing = CommandFencer(["/nonexistent/fence"])
    assert "cannot run" in asyncio.run(missing.fence(target, "off")).detail


@pytest.mark.parametrize(
    ("nodes", "priorities", "me", "target", "expected"),
    [
        (2, (0, 0), "n2", "n1", 0.5 + 2.0),  # n1 preferred (lower id): n2 waits
        (2, (0, 0), "n1", "n2", 0.5),  # the preferred node shoots first
        (2, (0, 9), "n1", "n2", 0.5 + 2.0),  # priority beats the id
        (3, (0, 0, 0), "n3", "n1", 0.5),  # three nodes: no race, the base only
    ],
)
def test_the_fencing_delay_favours_the_preferred_node_of_a_two_node_cluster(
    nodes: int, priorities: tuple[int, ...], me: str, target: str, expected: float
) -> None:
    c = config('[fencing]\ncommand = "true"\n', nodes, priorities)
    assert fence_delay(c.nodes, node(c, me), node(c, target), 0.5, 2.0) == expected
    sleeps = Sleeps()
    built, _ = build(c, me=me, delays=(0.5, 2.0), sleep=sleeps)
    assert asyncio.run(built.fencer.fence(node(c, target), "off")).ok
    assert sleeps.calls == [expected]


def test_the_delays_in_force_at_fencing_time_count() -> None:
    c = config('[fencing]\ncommand = "true"\n', 2)
    delays = [(0.0, 1.0)]
    sleeps = Sleeps()
    built = build_fencing(c, node(c, "n2"), lambda: delays[0], exists=lambda p: False, sleep=sleeps)
    delays[0] = (0.25, 3.0)  # changed in the repository while the daemon runs
    asyncio.run(built.fencer.fence(node(c, "n1"), "off"))
    assert sleeps.calls == [3.25]


def test_self_fencing_by_default_only_where_the_watchdog_exists() -> None:
    c = config("")
    without, _ = build(c)
    assert without.self_fencer is None and without.self_fence_after is None
    with_device, made = build(c, devices=("/dev/watchdog-haos",))
    assert with_device.self_fencer is not None and with_device.self_fence_after == 5.0
    assert len(made) == 1
    off, _ = build(config("[fencing]\nself_fence = false\n"), devices=("/dev/watchdog-haos",))
    assert off.self_fencer is None


def test_a_configured_watchdog_that_is_missing_refuses_the_start_naming_the_key() -> None:
    c = config('[fencing]\nself_fence = { after = "3s", device = "/dev/watchdog7" }\n')
    with pytest.raises(ConfigError) as caught:
        build(c, devices=("/dev/watchdog-haos",))
    assert "cluster.toml: fencing.self_fence.device: no watchdog device /dev/watchdog7" in str(
        caught.value
    )
    built, _ = build(c, devices=("/dev/watchdog7",))
    assert built.self_fence_after == 3.0


def test_no_fencing_configured_is_said_loudly_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        built, _ = build(config(""))
    assert not built.has_devices
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert loud and "NO FENCING CONFIGURED" in loud[0].getMessage()
    result = asyncio.run(built.fencer.fence(node(config(""), "n2"), "reboot"))
    assert not result.ok  # so the node stays "to be fenced" and its work is not taken over


def test_a_node_booted_alone_is_not_self_fenced_before_it_ever_had_quorum() -> None:
    watchdog = MemoryWatchdog()
    fencer = SelfFencer(watchdog, self_fence_after=2.0)
    fencer.start()
    assert [fencer.observe(False, t) for t in (0.0, 5.0, 60.0)] == [False, False, False]
    assert watchdog.pets == 3
    assert fencer.observe(True, 61.0) is False
    assert fencer.observe(False, 62.0) is False
    assert fencer.observe(False, 64.0) is True  # lost quorum 2 s ago: stop petting
    assert watchdog.fired


def test_a_watchdog_whose_timeout_cannot_be_set_still_arms_and_is_petted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    watchdog = DevWatchdog(str(device), timeout=7)
    with caplog.at_level(logging.WARNING):
        watchdog.arm()
    assert "cannot set its timeout to 7 s" in caplog.text
    watchdog.pet()
    watchdog.disarm()
    assert device.read_bytes() == b"\0V"


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("fencing", "said"),
    [
        (
            'agent = "fence_ipmilan"\npassword_file = "/nonexistent/bmc.pass"',
            "fencing.password_file: no such file: '/nonexistent/bmc.pass'",
        ),
        (
            'command = "true"\nself_fence = { device = "/dev/nonexistent-watchdog" }',
            "fencing.self_fence.device: no watchdog device /dev/nonexistent-watchdog",
        ),
    ],
)
def test_the_cluster_daemon_refuses_a_bad_fencing_section_with_exit_status_2(
    tmp_path: Path, fencing: str, said: str
) -> None:
    example = (REPO / "haos" / "examples" / "small-2n.toml").read_text()
    config = tmp_path / "cluster.toml"
    config.write_text(example + "\n[fencing]\n" + fencing + "\n")
    argv = [sys.executable, "-m", "haos.services.clusterd", "--config", str(config)]
    argv += ["--node", "n1", "--state-dir", str(tmp_path / "state")]
    argv += ["--control", str(tmp_path / "c.sock")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert f"{config}: {said}" in proc.stderr
