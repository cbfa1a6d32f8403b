"""Benchmark: CRIM decision time on a large cluster (32 nodes, ~2,000 components).

Prints, per run and over all runs, the median and p99 of the time one ``decide`` call takes
for: a node loss (the headline figure), a component crash, and an operator switchover.
Target for the node loss: p99 <= 100 ms on a 2-core machine.

    .venv/bin/python bench/policy.py [--runs 5] [--trials 100]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable

from haos.cluster.crim import events as ev
from haos.cluster.crim.policy import decide
from haos.config.model import ClusterConfig
from haos.model.redundancy import RecoveryPolicy
from haos.model.redundancy import RedundancyModel as RM
from haos.model.reports import ErrorKind, ErrorReport
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.crimdriver import CrimDriver

NODES = 32


def big_cluster(target_components: int = 2000) -> ClusterConfig:
    """Groups of every model spread round-robin over 32 nodes until ~2,000 components."""
    shapes = [
        (RM.TWO_N, 3, {}),
        (RM.N_PLUS_M, 4, {"instances": 3, "active": 2, "standby": 1}),
        (RM.N_WAY_ACTIVE, 4, {"instances": 2, "active": 4, "actives": 2}),
        (RM.HOT_RESTART, 2, {"standby": 0}),
        (RM.NO_REDUNDANCY, 2, {"standby": 0}),
    ]
    plans: list[GroupPlan] = []
    fixed = NODES * 2 + (NODES + 7) // 8  # slots, node boards, chassis
    apps, cursor, i = 0, 0, 0
    while fixed + apps < target_components:
        model, size, extra = shapes[i % len(shapes)]
        nodes = [(cursor + k) % NODES + 1 for k in range(size)]
        cursor += size
        plans.append(GroupPlan(f"g{i}", model, nodes, **extra))
        apps += size
        i += 1
    return generated_cluster(NODES, plans, RecoveryPolicy(restart_max=0))


def timed(fn: Callable[[], object], trials: int) -> list[float]:
    out = []
    gc.collect()
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()

    config = big_cluster()
    driver = CrimDriver(config)
    t0 = time.perf_counter()
    driver.boot()
    boot_s = time.perf_counter() - t0
    topo, base = driver.topo, driver.state
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{len(topo.nodes)} nodes, {len(topo.tree)} components, {len(topo.groups)} groups, "
        f"{len(topo.instances)} instances; boot of the model took {boot_s:.2f} s"
    )

    nodes = sorted(topo.nodes)
    primaries = sorted(c for c, rt in base.components.items() if rt.state.value == "primary")
    counter = {"node": 0, "crash": 0, "switch": 0}

    def node_loss() -> object:
        counter["node"] += 1
        node = nodes[counter["node"] % len(nodes)]
        return decide(topo, base, ev.NodeLeft(node), 100.0)

    def crash() -> object:
        counter["crash"] += 1
        comp = primaries[counter["crash"] % len(primaries)]
        return decide(topo, base, ev.ErrorReported(ErrorReport(comp, ErrorKind.CRASH, 99.0)), 100.0)

    def switchover() -> object:
        counter["switch"] += 1
        comp = primaries[counter["switch"] % len(primaries)]
        return decide(topo, base, ev.OperatorSwitchover(comp), 100.0)

    results: dict[str, list[float]] = {"node loss": [], "component crash": [], "switchover": []}
    for run in range(1, args.runs + 1):
        line = []
        for name, fn in (
            ("node loss", node_loss),
            ("component crash", crash),
            ("switchover", switchover),
        ):
            values = timed(fn, args.trials)
            results[name].extend(values)
            line.append(
                f"{name} median {statistics.median(values):.2f} ms p99 {p99(values):.2f} ms"
            )
        print(f"run {run}: " + "; ".join(line))
    print("all runs:")
    for name, values in results.items():
        print(
            f"  {name:<16} n={len(values):<5} median {statistics.median(values):7.2f} ms"
            f"   p99 {p99(values):7.2f} ms   max {max(values):7.2f} ms"
        )
    verdict = "meets" if p99(results["node loss"]) <= 100.0 else "MISSES"
    print(f"node-loss decision p99 {p99(results['node loss']):.2f} ms {verdict} the 100 ms target")


if __name__ == "__main__":
    main()
