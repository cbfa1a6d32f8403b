"""Operation locks (COpCo) on the 3-node demo cluster, through ``haosctl`` run on the nodes.

An operator's maintenance lock on the slot of the 2N counter's primary, taken on the spare's
node, holds off a switchover asked on another node: it fails with the error ``locked`` naming
the lock's node and reason, and the primary stays. Then the lock's node loses its power: once
it is fenced and has left the cluster its lock is released, and the same switchover goes
through.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from haoslab.demo.run import DemoCluster
from haoslab.harness.systemd_cluster import CLUSTERD

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SI = "counter-si"


def haosctl(demo: DemoCluster, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``haosctl`` run inside ``node`` against its own daemon, with the daemon's haos."""
    env = demo.cluster.node(node).unit_property(CLUSTERD, "Environment").split()
    path = next(e for e in env if e.startswith("PYTHONPATH="))
    argv_in = ["env", path, "python3", "-m", "haos.cli.main", *argv, "--timeout", "20"]
    return demo.cluster.node(node).run(argv_in, check=False, timeout=60.0)


def locks(demo: DemoCluster, node: str) -> list[dict[str, Any]] | None:
    done = haosctl(demo, node, "lock-ops", "list", "--json")
    found: list[dict[str, Any]] | None = json.loads(done.stdout) if done.returncode == 0 else None
    return found


def test_a_maintenance_lock_holds_off_a_switchover_until_its_node_is_power_cut_and_fenced(
    cache: Path,
) -> None:
    with DemoCluster(3, cache=cache) as demo:
        demo.wait_placed(90.0)
        primary, secondary, spare = (demo.holder(r) for r in ("primary", "secondary", "spare"))
        assert primary is not None and secondary is not None and spare is not None
        slot = f"shelf1/slot{primary[1:]}"

        took = haosctl(demo, spare, "lock-ops", "take", slot, "--reason", "maintenance")
        assert took.returncode == 0, took.stderr
        listed = locks(demo, secondary)
        assert listed is not None
        assert [(x["subtree"], x["node"], x["kind"], x["reason"]) for x in listed] == [
            (slot, spare, "maintenance", "maintenance")
        ]

        refused = haosctl(demo, secondary, "switchover", SI, "--json")
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        error = json.loads(refused.stdout)
        assert error["error"] == "locked", error
        assert f"{slot} is locked by {spare}" in error["message"], error
        assert "maintenance" in error["message"], error
        assert demo.holder("primary") == primary  # nothing was applied

        demo.power_cut(spare)
        released = demo.cluster.wait_for(
            lambda: locks(demo, secondary) == [], 90.0, f"the lock of {spare} released"
        )
        print(f"the lock of {spare} was released {released:.1f} s after its power cut")
        journals = "".join(
            demo.cluster.node(n)
            .run(["journalctl", "--no-pager", "-o", "cat", "-u", CLUSTERD])
            .stdout
            for n in (primary, secondary)
        )
        assert f"lock on {slot} dropped ({spare} left)" in journals

        done = haosctl(demo, secondary, "switchover", SI, "--json")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert not json.loads(done.stdout)["refused"]
        demo.cluster.wait_for(
            lambda: demo.holder("primary") not in (None, primary), 60.0, "the switchover done"
        )
