"""Benchmark: the cluster layer on a real 3-node corosync cluster (the harness).

Prints, over many trials: node-loss detection after SIGKILL and after SIGSTOP (time from the
fault to the ring without the node, on each survivor), p50/p99; CCR write -> watch
notification on every node and synchronous checkpoint writes (cluster daemons on every
node); then an idle soak counting false membership changes (by the CPG ring events and by
totem's gather counter).

    .venv/bin/python bench/cluster.py [--trials 30] [--soak 600]

Needs root, network namespaces and corosync (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time

from haos.cluster.harness import Cluster, ClusterSpec, Kind, soak
from haos.cluster.harness.daemons import Daemons

DEADLINE = 15.0


def p99(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[98]
        if len(values) > 1
        else values[0]
    )


def detection(cluster: Cluster, victim: int, fault_at: float) -> list[float]:
    """Seconds from the fault until each survivor installed a ring without ``victim``."""
    survivors = [n for n in cluster.node_ids if n != victim]
    cluster.wait_for(
        lambda: all(victim not in cluster.members(n) for n in survivors),
        DEADLINE,
        f"survivors drop node {victim}",
    )
    out = []
    for n in survivors:
        firsts = [
            o.at
            for o in cluster.observations(fault_at)
            if o.node == n and o.kind is Kind.RING and victim not in o.members
        ]
        out.append(min(firsts) - fault_at)
    return out


def trial(cluster: Cluster, victim: int, how: str) -> list[float]:
    if how == "kill":
        at = cluster.kill(victim)
        values = detection(cluster, victim, at)
        cluster.restart(victim)
    else:
        at = cluster.freeze(victim)
        values = detection(cluster, victim, at)
        cluster.thaw(victim)
    cluster.wait_membership(set(cluster.node_ids), timeout=DEADLINE)
    # let knet settle after the rejoin, so the next trial starts from a steady cluster
    cluster.wait_until(lambda: False, 1.0)
    return values


def repository_and_checkpoints(d: Daemons, writes: int) -> None:
    """CCR write (on node 1) -> watch notification on every node; sync checkpoint writes."""
    arrivals: dict[int, dict[str, float]] = {1: {}, 2: {}, 3: {}}
    opened = threading.Barrier(4)

    def follow(n: int) -> None:
        stream = d.control(n).stream("watch", prefix="/bench")
        next(stream)  # the stream is open
        opened.wait()
        for item in stream:
            arrivals[n][item["key"]] = time.perf_counter()
            if len(arrivals[n]) == writes:
                return

    threads = [threading.Thread(target=follow, args=(n,), daemon=True) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    opened.wait()
    client = d.control(1)
    sent: dict[str, float] = {}
    for i in range(writes):
        key = f"/bench/{i:05d}"
        sent[key] = time.perf_counter()
        client.request("put", key=key, value="x" * 64)
        time.sleep(0.002)  # paced: latency, not throughput
    for t in threads:
        t.join(30)
    lat = [(arrivals[n][k] - sent[k]) * 1000 for n in (1, 2, 3) for k in sent if k in arrivals[n]]
    print(
        f"CCR write on n1 -> watch event on every node  n={len(lat)}  p50 "
        f"{statistics.median(lat):.2f} ms  p99 {p99(lat):.2f} ms  (through the control socket)",
        flush=True,
    )
    d.control(1).request("ckpt_open", name="bench", role="active")
    for n in (2, 3):
        d.control(n).request("ckpt_open", name="bench", role="standby")
    ms = [
        d.control(1).request("ckpt_write", name="bench", section="s", data=str(i), sync=True)[
            "elapsed_ms"
        ]
        for i in range(writes)
    ]
    assert d.control(3).request("ckpt_read", name="bench", section="s")["data"] == str(writes - 1)
    print(
        f"synchronous checkpoint write, 2 standbys     n={len(ms)}  p50 "
        f"{statistics.median(ms):.2f} ms  p99 {p99(ms):.2f} ms  (inside the daemon)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=30, help="kills and freezes each (30)")
    parser.add_argument("--soak", type=float, default=600.0, help="idle soak seconds (600)")
    parser.add_argument("--writes", type=int, default=500, help="CCR and checkpoint writes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a killed node's broken connections are expected
    spec = ClusterSpec(nodes=3)
    print(
        f"3 nodes, two knet links each, crypto on; token {spec.token_ms} ms, knet ping "
        f"interval {spec.knet_ping_interval_ms} ms, timeout {spec.knet_ping_timeout_ms} ms, "
        f"pong count {spec.knet_pong_count}"
    )
    with Cluster(spec) as cluster:
        for how in ("kill", "freeze"):
            values: list[float] = []
            for i in range(args.trials):
                victim = cluster.node_ids[i % len(cluster.node_ids)]
                values.extend(trial(cluster, victim, how))
            ms = [v * 1000 for v in values]
            p50 = statistics.median(ms)
            print(
                f"node loss by {how:<6} n={len(ms):<3} detection p50 {p50:6.1f} ms"
                f"  p99 {p99(ms):6.1f} ms  max {max(ms):6.1f} ms",
                flush=True,
            )
        with Daemons(cluster, {1: 30, 2: 20, 3: 10}) as daemons:
            repository_and_checkpoints(daemons, args.writes)
        if args.soak > 0:
            cluster.wait_until(lambda: False, 5.0)  # settle after the last fault
            started = time.monotonic()
            report = soak(cluster, args.soak)
            print(
                f"idle soak {time.monotonic() - started:.0f} s: {report.total} false membership "
                f"changes (rings {report.rings}, gathers {report.gathers})"
            )


if __name__ == "__main__":
    main()
