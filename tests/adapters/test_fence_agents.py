"""FenceAgentFencer against a real agent: Debian's ``fence_ipmilan`` (fence-agents), unchanged,
talking IPMI-over-LAN (RMCP+, via ``ipmitool``) to OpenIPMI's BMC simulator ``ipmi_sim`` on
127.0.0.1.

The simulated BMC's chassis power control is a small script (``chassis_control`` in
``lan.conf``): the "board" it powers is a process -- power off kills it, power on starts a new
one, power status says whether it runs. So a fencing that reports success really killed it.

Needs the Debian packages ``fence-agents``, ``ipmitool`` and ``openipmi``; skipped without.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from haos.cluster.fencing.agent import AgentDevice, FenceAgentFencer
from haos.cluster.fencing.types import FenceError
from haos.config.model import NodeSpec

pytestmark = pytest.mark.timeout(120)

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NODE = NodeSpec("node2", 2, "n2")
USER, PASSWORD = "admin", "secret"

LAN_CONF = """\
name "haos-test-bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{workdir}/board.sh 0x20"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

# The BMC's firmware: one management controller that is the BMC.
SIM_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""

# ipmi_sim runs "board.sh <mc> get power" / "board.sh <mc> set power 0|1" (see OpenIPMI's
# ipmi_sim_chassiscontrol); the board is the process in board.pid.
BOARD_SH = """\
#!/bin/sh
dir=$(dirname "$0")
pidfile="$dir/board.pid"
echo "$*" >> "$dir/chassis.log"
alive() {{ [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }}
op=$2; shift 2
case $op in
get)
    for p in "$@"; do
        case $p in
        power) if alive; then echo "power:1"; else echo "power:0"; fi ;;
        *) echo "$p:0" ;;
        esac
    done ;;
set)
    while [ $# -gt 1 ]; do
        p=$1; v=$2; shift 2
        [ "$p" = power ] || continue
        if [ "$v" = 0 ]; then
            alive && kill -9 "$(cat "$pidfile")"
            rm -f "$pidfile"
        elif ! alive; then
            setsid {sleep} 600 </dev/null >/dev/null 2>&1 &
            echo $! > "$pidfile"
        fi
    done ;;
*) exit 1 ;;
esac
"""


@dataclass
class Bmc:
    port: int
    workdir: Path

    def board(self) -> int | None:
        """The running board's pid, or None while it is powered off."""
        try:
            pid = int((self.workdir / "board.pid").read_text())
        except FileNotFoundError:
            return None
        return pid if _alive(pid) else None

    def device(self, **override: str) -> AgentDevice:
        options = {
            "ip": "127.0.0.1",
            "ipport": str(self.port),
            "username": USER,
            "password": PASSWORD,
            "lanplus": "1",
            "cipher": "3",  # ipmi_sim does not answer "Get Channel Cipher Suites"
            "power_wait": "1",
            **override,
        }
        return AgentDevice.of("fence_ipmilan", **options)

    def fencer(self, timeout: float = 60, **override: str) -> FenceAgentFencer:
        return FenceAgentFencer({NODE.name: self.device(**override)}, timeout=timeout, path=PATH)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _needs(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool, path=PATH) is None:
            pytest.skip(f"needs {tool} (Debian packages fence-agents, ipmitool, openipmi)")


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[Bmc]:
    _needs("fence_ipmilan", "ipmitool", "ipmi_sim")
    port = _free_udp_port()
    (tmp_path / "state").mkdir()
    (tmp_path / "lan.conf").write_text(
        LAN_CONF.format(port=port, workdir=tmp_path, user=USER, password=PASSWORD)
    )
    (tmp_path / "sim.emu").write_text(SIM_EMU)
    board_sh = tmp_path / "board.sh"
    board_sh.write_text(BOARD_SH.format(sleep=shutil.which("sleep", path=PATH)))
    board_sh.chmod(0o755)
    subprocess.run([board_sh, "0x20", "set", "power", "1"], check=True)  # the board runs
    log = open(tmp_path / "ipmi_sim.log", "wb")  # noqa: SIM115 -- closed in the finally
    program = shutil.which("ipmi_sim", path=PATH) or "ipmi_sim"
    config: list[str | Path] = [
        "-c",
        tmp_path / "lan.conf",
        "-f",
        tmp_path / "sim.emu",
        "-s",
        tmp_path / "state",
    ]
    sim = subprocess.Popen(
        [program, "-n", *config],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={"PATH": PATH},
    )
    found = Bmc(port, tmp_path)
    try:
        _await_bmc(found, sim)
        yield found
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sim.pid, signal.SIGKILL)
        sim.wait(10)
        log.close()
        pid = found.board()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def _await_bmc(bmc: Bmc, sim: subprocess.Popen[bytes]) -> None:
    argv = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(bmc.port)]
    argv += ["-U", USER, "-P", PASSWORD, "-N", "1", "-R", "1", "chassis", "power", "status"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if sim.poll() is not None:
            log = (bmc.workdir / "ipmi_sim.log").read_text(errors="replace")
            pytest.fail(f"ipmi_sim exited with {sim.returncode}:\n{log}")
        probe = subprocess.run(argv, capture_output=True, env={"PATH": PATH}, check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail("the simulated BMC did not answer within 15 s")


def test_fence_ipmilan_powers_the_board_off_and_reports_its_status(bmc: Bmc) -> None:
    fencer = bmc.fencer()
    board = bmc.board()
    assert board is not None

    async def scenario() -> None:
        assert await fencer.status(NODE) == "on"
        result = await fencer.fence(NODE, "off")
        assert result.ok, result.detail
        assert "fence_ipmilan off succeeded" in result.detail
        assert bmc.board() is None and not _alive(board)  # really powered off
        assert await fencer.status(NODE) == "off"  # agent exit code 2
        again = await fencer.fence(NODE, "off")  # idempotent: "Success: Already OFF"
        assert again.ok, again.detail

    asyncio.run(scenario())
    log = (bmc.workdir / "chassis.log").read_text().splitlines()
    assert "0x20 set power 0" in log


def test_fence_ipmilan_reboot_cycles_the_board(bmc: Bmc) -> None:
    before = bmc.board()
    result = asyncio.run(bmc.fencer().fence(NODE, "reboot"))
    assert result.ok, result.detail
    after = bmc.board()
    assert before is not None and after is not None and after != before
    assert not _alive(before)


def test_a_wrong_password_is_a_clean_failure_that_leaves_the_board_alone(bmc: Bmc) -> None:
    board = bmc.board()
    result = asyncio.run(bmc.fencer(password="wrong").fence(NODE, "off"))
    assert not result.ok
    assert result.detail.startswith("fence_ipmilan off exited 1: ")
    assert bmc.board() == board
    with pytest.raises(FenceError, match="status of node2"):
        asyncio.run(bmc.fencer(password="wrong").status(NODE))


def test_an_unreachable_bmc_fails_within_the_adapter_timeout(bmc: Bmc) -> None:
    # Nothing listens on this port: the agent itself would wait ~20 s; we give it 3.
    fencer = bmc.fencer(timeout=3, ipport=str(_free_udp_port()))
    started = time.monotonic()
    result = asyncio.run(fencer.fence(NODE, "off"))
    assert not result.ok and "timed out after 3" in result.detail
    assert time.monotonic() - started < 8
    assert bmc.board() is not None


def test_check_validates_options_against_the_real_agents_metadata(bmc: Bmc) -> None:
    asyncio.run(bmc.fencer().check(NODE))  # -o metadata, then validate-all
    with pytest.raises(FenceError, match="has no parameter ipaddress"):
        asyncio.run(bmc.fencer(ipaddress="127.0.0.1").check(NODE))
    missing_ip = FenceAgentFencer({NODE.name: AgentDevice.of("fence_ipmilan")}, path=PATH)
    with pytest.raises(FenceError, match="You have to enter fence address"):
        asyncio.run(missing_ip.check(NODE))
