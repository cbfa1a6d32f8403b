"""Five cluster daemons started in a staggered order, many times, on real corosync.

The membership service first elects the master of whatever quorate partial view formed (say
[n2, n3, n5]); as the others join, mastership moves to the node the full view ranks first.
Each start must show at most one active availability service at any time -- read from the
daemons' own logs, which stamp every activation and every step-down on the one clock of this
machine -- every activation must have its own, larger mastership epoch, and in the end every
node must follow the epoch of the one active service.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest

from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

NODES = (1, 2, 3, 4, 5)
ROUNDS = 20
PRIORITIES = {1: 50, 2: 40, 3: 30, 4: 20, 5: 10}
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) haos\.services\.crimd: "
ACTIVE = re.compile(STAMP + r"availability service active on node (\d+): .*, epoch (\d+),")
LEFT = re.compile(STAMP + r"availability service on node (\d+) no longer active")


def _when(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def active_intervals(logs: dict[int, str]) -> list[tuple[float, float, int, int]]:
    """(from, to, node, epoch) of every time a node's service was active; ``to`` is infinite
    while it still is."""
    out = []
    for node, text in logs.items():
        events = sorted(
            [(_when(m[1]), "up", int(m[3])) for m in ACTIVE.finditer(text)]
            + [(_when(m[1]), "down", 0) for m in LEFT.finditer(text)]
        )
        since: tuple[float, int] | None = None
        for at, kind, epoch in events:
            if kind == "up":
                assert since is None, f"n{node} activated twice without stepping down"
                since = (at, epoch)
            elif since is not None:
                out.append((since[0], at, node, since[1]))
                since = None
        if since is not None:
            out.append((since[0], float("inf"), node, since[1]))
    return sorted(out)


def overlaps(intervals: list[tuple[float, float, int, int]]) -> list[str]:
    found = []
    for i, (a0, a1, an, ae) in enumerate(intervals):
        for b0, b1, bn, be in intervals[i + 1 :]:
            if an != bn and b0 < a1 and a0 < b1:
                found.append(f"n{an} (epoch {ae}) and n{bn} (epoch {be}) active at once")
    return found


def service_lines(logs: dict[int, str]) -> str:
    """Every node's availability-service and membership lines: what a failure is read from."""
    keep = re.compile(r"availability service|cmm: |abandoned|stepped down|broke")
    lines = (f"n{n}: {line}" for n, text in logs.items() for line in text.splitlines())
    return "\n".join(line for line in lines if keep.search(line))


def test_staggered_five_node_starts_never_run_two_active_availability_services() -> None:
    rng = random.Random(20261207)
    with Cluster(ClusterSpec(nodes=5)) as cluster:
        d = Daemons(cluster, PRIORITIES)
        try:
            partial = 0
            for round_ in range(ROUNDS):
                order = list(NODES)
                rng.shuffle(order)
                gaps = [rng.uniform(0.0, 0.3) for _ in order]
                logs = run_once(cluster, d, order, gaps)
                intervals = active_intervals(logs)
                assert not overlaps(intervals), (
                    round_,
                    order,
                    overlaps(intervals),
                    service_lines(logs),
                )
                epochs = [e for *_, e in intervals]
                assert len(set(epochs)) == len(epochs), f"an epoch was claimed twice: {epochs}"
                firsts = [n for _, _, n, _ in intervals]
                partial += firsts[0] != 1
                print(f"round {round_}: start order {order}; active in turn: {firsts}")
            print(f"{partial} of {ROUNDS} starts first elected the master of a partial view")
        finally:
            d.close()


def run_once(cluster: Cluster, d: Daemons, order: list[int], gaps: list[float]) -> dict[int, str]:
    """Start every daemon afresh in ``order`` (each node's corosync restarted too: daemons
    stopped one after the other fence each other); wait until one service is active and every
    node follows its epoch; stop them all; return each node's log."""
    d.close()
    for n in NODES:
        cluster.restart(n)
    cluster.wait_membership(NODES, timeout=30)
    for n in NODES:
        shutil.rmtree(d.dir / f"n{n}-state", ignore_errors=True)
        d.log(n).unlink(missing_ok=True)
    for n, gap in zip(order, gaps, strict=True):
        d.start(n)
        time.sleep(gap)  # the stagger itself, not a wait for a condition
    d.wait_ready(NODES, timeout=60)

    def settled() -> bool:
        states = [((d.status(n) or {}).get("availability") or {}) for n in NODES]
        active = [s for s in states if s.get("role") == "active"]
        if len(active) != 1:
            return False
        return all(s.get("follows_epoch") == active[0].get("epoch") for s in states)

    d.wait(settled, 30, "one active availability service, followed by every node")
    d.close()
    return {n: Path(d.log(n)).read_text() for n in NODES}
