"""Simulated BMCs for the nodes of a systemd cluster: OpenIPMI's ``ipmi_sim``, one per node.

Each BMC listens on the cluster's first link, in the switch namespace (address
``10.10.0.254``, the harness's "host on the LAN", port ``6230 + K`` for node ``nK``), so the
nodes' cluster daemons reach it with Debian's ``fence_ipmilan`` over IPMI-over-LAN (RMCP+)
as they would reach a board's BMC. Its chassis power control is a script that asks the
cluster's fence bridge (:class:`~haoslab.harness.systemd_cluster.FenceBridge`) to cut
the node's power (``off``) or boot it (``on``): a fencing that reports success really
powered the container off. The power state it reports is what it last carried out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from haoslab.harness import netns
from haoslab.harness.systemd_cluster import SystemdCluster

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
USER, PASSWORD = "admin", "fence-secret"
BASE_PORT = 6230

LAN_CONF = """\
name "haos-bmc-{node}"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcde{k}
  endlan
  chassis_control "{workdir}/chassis.sh 0x20"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

SIM_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""

# ipmi_sim runs "chassis.sh <mc> get power" / "chassis.sh <mc> set power 0|1". A power off
# is reported done (power:0) only once the fence bridge answered that the node is off.
CHASSIS_SH = """\
#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/chassis.log"
fence() {{ PYTHONPATH={pythonpath} {python} -m haoslab.harness.systemd_cluster \\
    fence {bridge} {node} "$1"; }}
op=$2; shift 2
case $op in
get)
    for p in "$@"; do
        case $p in
        power) echo "power:$(cat "$dir/power")" ;;
        *) echo "$p:0" ;;
        esac
    done ;;
set)
    while [ $# -gt 1 ]; do
        p=$1; v=$2; shift 2
        [ "$p" = power ] || continue
        if [ "$v" = 0 ]; then
            (fence off >> "$dir/bridge.log" 2>&1 && echo 0 > "$dir/power") &
        else
            echo 1 > "$dir/power"
            (fence on >> "$dir/bridge.log" 2>&1) &
        fi
    done ;;
*) exit 1 ;;
esac
"""


class SimulatedBmcs(contextlib.AbstractContextManager["SimulatedBmcs"]):
    """One ``ipmi_sim`` per node of ``cluster`` (entered, with ``fence=True``)."""

    def __init__(self, cluster: SystemdCluster, workdir: Path) -> None:
        assert cluster.topo is not None and cluster.bridge is not None
        self.cluster = cluster
        self.workdir = workdir
        self.address = ""
        self._sims: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def port(node: str) -> int:
        return BASE_PORT + int(node[1:])

    def dir(self, node: str) -> Path:
        return self.workdir / f"bmc-{node}"

    def chassis_log(self, node: str) -> str:
        path = self.dir(node) / "chassis.log"
        return path.read_text() if path.exists() else ""

    def __enter__(self) -> SimulatedBmcs:
        topo, bridge = self.cluster.topo, self.cluster.bridge
        assert topo is not None and bridge is not None
        self.address = netns.attach_client(topo.names, 0)
        try:
            for node in self.cluster.names:
                self._start(node, topo.names.switch, bridge.directory)
            for node in self.cluster.names:
                self._await(node)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for sim in self._sims:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sim.pid, signal.SIGKILL)
            sim.wait(10)
        self._sims.clear()

    def _start(self, node: str, switch: str, bridge: Path) -> None:
        work = self.dir(node)
        (work / "state").mkdir(parents=True)
        (work / "power").write_text("1\n")
        k = node[1:]
        lan = LAN_CONF.format(
            node=node, address=self.address, port=self.port(node), k=k[-1], workdir=work,
            user=USER, password=PASSWORD,
        )  # fmt: skip
        (work / "lan.conf").write_text(lan)
        (work / "sim.emu").write_text(SIM_EMU)
        script = work / "chassis.sh"
        pythonpath = ":".join(p for p in sys.path if p)
        script.write_text(
            CHASSIS_SH.format(
                python=sys.executable, pythonpath=pythonpath, bridge=bridge, node=node
            )
        )
        script.chmod(0o755)
        program = shutil.which("ipmi_sim", path=PATH) or "ipmi_sim"
        argv = [*netns.nsenter(switch), program, "-n", "-c", str(work / "lan.conf")]
        argv += ["-f", str(work / "sim.emu"), "-s", str(work / "state")]
        with open(work / "ipmi_sim.log", "wb") as log:
            self._sims.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={"PATH": PATH},
                )
            )

    def _await(self, node: str) -> None:
        """Until the BMC answers ``chassis power status`` from the switch namespace."""
        topo = self.cluster.topo
        assert topo is not None
        argv = [*netns.nsenter(topo.names.switch), "ipmitool", "-I", "lanplus", "-C", "3"]
        argv += ["-H", self.address, "-p", str(self.port(node)), "-U", USER, "-P", PASSWORD]
        argv += ["-N", "1", "-R", "1", "chassis", "power", "status"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = subprocess.run(argv, capture_output=True, env={"PATH": PATH}, check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        log = (self.dir(node) / "ipmi_sim.log").read_text(errors="replace")
        raise AssertionError(f"the BMC of {node} did not answer within 15 s:\n{log}")
