"""Benchmark: the cluster layer on a real 3-node corosync cluster (the harness).

Prints, over many trials: node-loss detection after SIGKILL and after SIGSTOP (time from the
fault to the ring without the node, on each survivor), p50/p99; then an idle soak counting
false membership changes (by the CPG ring events and by totem's gather counter).

    .venv/bin/python bench/cluster.py [--trials 30] [--soak 600]

Needs root, network namespaces and corosync (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from haos.cluster.harness import Cluster, ClusterSpec, Kind, soak

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=30, help="kills and freezes each (30)")
    parser.add_argument("--soak", type=float, default=600.0, help="idle soak seconds (600)")
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
