"""A hung HM gets the node agent restarted by systemd's watchdog; failing audits do not.

Three nodes with a real systemd and the shipped ``haos-agentd.service`` (``WatchdogSec=5s``).
Each node runs one application component (a systemd unit) with one command audit every
second, each a different kind of trouble:

* n1: ``/bin/false`` -- an audit that fails, every time;
* n2: ``cat /mnt/hung/status`` -- an audit that reads a file system;
* n3: ``/mnt/hung/check`` -- an audit whose program lives on a file system.

At first ``/mnt/hung`` is an empty directory: all three audits fail (error reports), and no
agent is restarted. Then a FUSE file system whose server never answers is mounted on
``/mnt/hung`` in n2 and n3 (what a network mount does when its server hangs). n2's ``cat``
hangs in ``open()``; the HM kills it at its timeout: an overdue audit, an error report, no
restart. n3's audit program never starts executing, and the HM's thread, which starts it,
waits for that: the HM's rounds stop while the agent's loop runs on, the agent's gate
withholds ``WATCHDOG=1`` (it says so in the journal), and systemd kills and restarts the agent
after ``WatchdogSec``. Once the file system's server goes away (its device closed), its
files answer "not connected": n3's audit fails again, and its agent stays up.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haoslab.harness.config import ClusterSpec
from haoslab.harness.nspawn import NspawnNode
from haoslab.harness.systemd_cluster import AGENTD, SystemdCluster, cluster_toml

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = ClusterSpec(nodes=3)
APP = "haos-test-app.service"
HUNG = "/mnt/hung"
AUDITS = {1: "/bin/false", 2: f"/bin/cat {HUNG}/status", 3: f"{HUNG}/check"}
WATCHDOG = 5.0  # WatchdogSec= of the unit
ABORT, RESTART = 2.0, 1.0  # TimeoutAbortSec=, RestartSec=
WATCHDOG_SLACK = 0.25  # systemd enforces WatchdogSec with up to this much delay here
DEADLINE = 60.0


def config() -> str:
    lines = [cluster_toml(SPEC, "hm-hang")]
    for n in SPEC.node_ids:
        app = f"shelf1/slot{n}/node/app"
        lines += ["", "[[components]]", f'name = "{app}"', 'class = "application"']
        lines += [f'manager = {{ kind = "systemd", unit = "{APP}" }}']
        lines += ["", "[[audits]]", f'component = "{app}"', 'name = "alive"']
        lines += ['period = "1s"', 'timeout = "500ms"', f'target = "{AUDITS[n]}"']
    return "\n".join(lines) + "\n"


class AuditedCluster(SystemdCluster):
    """Every node also has the application's unit installed."""

    def _node_files(self, name: str, toml: str) -> dict[str, str]:
        files = super()._node_files(name, toml)
        files[f"/etc/systemd/system/{APP}"] = "[Service]\nExecStart=/bin/sleep infinity\n"
        return files


@pytest.fixture
def cluster(cache: Path) -> Iterator[SystemdCluster]:
    with AuditedCluster(SPEC, cache=cache, agent=True, config_toml=config()) as c:
        yield c


def mount_hung(node: NspawnNode) -> int:
    """Mount a FUSE file system on ``HUNG`` in ``node`` whose server never answers: every
    access waits (killably). Returns the FUSE device's descriptor: closing it ends the
    server, and the file system answers ENOTCONN from then on."""
    device = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={device},rootmode=40000,user_id=0,group_id=0"
    argv = node.argv(["mount", "-i", "-n", "-t", "fuse", "-o", options, "haos-hung", HUNG])
    done = subprocess.run(
        argv, pass_fds=(device,), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        os.close(device)
    assert done.returncode == 0, f"mount: {done.stderr}"
    return device


def restarts(c: SystemdCluster) -> dict[str, int]:
    return {name: c.restarts(name, AGENTD) for name in c.names}


def pets(c: SystemdCluster, name: str) -> int:
    """systemd's time of the agent's last WATCHDOG=1 (µs, monotonic; 0: never petted)."""
    return int(c.node(name).unit_property(AGENTD, "WatchdogTimestampMonotonic") or 0)


def audit_reports(c: SystemdCluster, name: str, text: str) -> int:
    return c.node(name).journal(AGENTD, 2000).count(text)


def test_a_hung_hm_gets_the_agent_restarted_while_failing_and_overdue_audits_do_not(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    for name in c.names:
        c.node(name).run(["mkdir", "-p", HUNG])
        assert c.node(name).unit_state(AGENTD) == "active"
    c.wait_for(
        lambda: all(audit_reports(c, n, "audit alive failed") >= 3 for n in c.names),
        DEADLINE,
        "every node's audit failed three times",
    )
    # failing audits are error reports: the agents are petted on and stay up
    first = {n: pets(c, n) for n in c.names}
    time.sleep(2 * WATCHDOG)
    assert restarts(c) == {"n1": 0, "n2": 0, "n3": 0}
    assert all(pets(c, n) > first[n] > 0 for n in c.names)

    devices = [mount_hung(c.node("n2")), mount_hung(c.node("n3"))]
    try:
        hung_at = time.monotonic()
        bound = 1.0 + WATCHDOG + WATCHDOG_SLACK + ABORT + RESTART + 5.0
        c.wait_for(lambda: c.restarts("n3", AGENTD) >= 1, bound, "n3's agent restarted")
        restarted = time.monotonic() - hung_at
        print(f"HM hung on n3: agent restarted after {restarted:.2f} s")
        assert restarted >= WATCHDOG / 2  # not before the gate withheld for a while
        journal = c.node("n3").journal(AGENTD, 3000)
        assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal
        # the agent's loop ran on and said why it withheld the pets
        assert "watchdog withheld: hm: no progress for" in journal
        assert "_execute_child" in journal  # the HM's thread, in the start of the program
        # n2's audit hangs in the file system too, but the HM times it out: no restart
        c.wait_for(
            lambda: audit_reports(c, "n2", "audit alive gave no result within 0.5s") >= 3,
            DEADLINE,
            "n2's audit overdue three times",
        )
        assert c.restarts("n2", AGENTD) == 0 and c.restarts("n1", AGENTD) == 0
        assert "Watchdog timeout" not in c.node("n2").journal(AGENTD, 3000)
    finally:
        for device in devices:
            os.close(device)

    # the file system's server is gone: the audit fails at once, the agent stays up
    c.wait_for(
        lambda: audit_reports(c, "n3", "Transport endpoint is not connected") >= 1,
        DEADLINE,
        "n3's audit failing on the dead mount",
    )
    time.sleep(ABORT + RESTART + 1.0)  # a kill the watchdog had already decided on is over
    c.wait_for(lambda: c.node("n3").unit_state(AGENTD) == "active", DEADLINE, "n3's agent up")
    settled, agent = c.restarts("n3", AGENTD), c.main_pid("n3", AGENTD)
    time.sleep(2 * WATCHDOG)
    assert (c.restarts("n3", AGENTD), c.main_pid("n3", AGENTD)) == (settled, agent)
    assert c.node("n3").unit_state(AGENTD) == "active"
    assert restarts(c)["n1"] == 0 and restarts(c)["n2"] == 0
