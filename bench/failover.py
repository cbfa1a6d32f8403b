"""Fail-over as a client of the service sees it, on three nodes with a real systemd.

    python bench/failover.py [--trials 30] [--kinds kill,hang,node] [--json] [--trace]
                                                                        (as root)

The demo cluster (:class:`haoslab.demo.run.DemoCluster`: corosync, haos-clusterd and
haos-agentd as services of each node's systemd; the 2N counter as a client component) with a
client (:mod:`haoslab.demo.probe`) in a node's network namespace sending ``INCR`` every 2 ms.
Each trial waits until the roles have settled and ``--pause`` more seconds (default 1: the
previous trial's repair is over), injects one fault into the node or process that serves
the counter and measures,
on the machine's monotonic clock, from the fault to the client's first answer from another
member:

* ``kill`` — SIGKILL of the primary's process (the ladder is set to fail over at once);
* ``hang`` — SIGSTOP of the primary's process: only its audit (period ``--audit-period``)
  notices; the figure is detection plus fail-over, and ``detected`` is the time until the
  CRIM logged the audit's report (from the history every node keeps);
* ``node`` — power cut of the primary's node (all its processes SIGKILLed); detection by
  corosync, fencing, then fail-over. The node is booted again after each trial.

Every trial also checks that the counter went on from the last answered value (no answered
increment lost). Prints p50, p99 and max per kind. With ``--trace`` every node records the
tracepoints of :mod:`haos.trace`, and each kind also gets its breakdown: per point, p50 and
p99 of the time from the fault to the point's first passage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from haos.errors import ConfigError, HaosError
from haos.trace import read as read_trace
from haoslab.demo.run import DemoCluster, ProbeProcess, first_from_other
from haoslab.harness import nspawn
from haoslab.harness.config import ClusterSpec, add_totem_options, with_totem_options
from haoslab.harness.systemd_cluster import NODEROOT_CACHE, REPO

# The points of a fail-over, in the order a fault passes them (see haos.trace).
STAGES = (
    "agent.crash",
    "agent.report",
    "crim.report",
    "crim.decided",
    "crim.commit",
    "orders.recv",
    "agent.apply",
    "app.role",
    "app.serving",
    "app.incr",
    "cd.ckpt_open",
    "cd.ckpt_write",
    "cd.ckpt_written",
    "app.first",
    "agent.applied",
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def settle(demo: DemoCluster, timeout: float = 60.0) -> None:
    demo.cluster.wait_for(
        lambda: sorted(demo.roles().values()) == ["primary", "secondary", "spare"],
        timeout,
        "the counter has a primary, a secondary and a spare",
    )


def trial(demo: DemoCluster, probe: ProbeProcess, kind: str, pause: float) -> dict[str, Any]:
    settle(demo)
    time.sleep(pause)  # the last trial's repair (restart, registration, name bind) is over
    primary = demo.holder("primary")
    assert primary is not None
    old = demo.address(primary)
    probe.wait(lambda a: a[-1] if a and a[-1].target == old else None, 30.0)
    wall = time.time()
    if kind == "kill":
        at = demo.kill_component(primary)
    elif kind == "hang":
        at = demo.kill_component(primary, signal.SIGSTOP)
    else:
        at = demo.power_cut(primary)
    answer = probe.wait(first_from_other(at, old), 60.0)
    last_old = max(a.value for a in probe.answers if a.target == old)
    result: dict[str, Any] = {
        "at": at,
        "answered": answer.t,
        "ms": (answer.t - at) * 1000.0,
        "lost": answer.value <= last_old,  # an answered increment went missing
        "from": primary,
    }
    if kind == "hang":  # the CRIM took it off-line: its unit is stopped, then repaired
        result["detected_ms"] = detected(demo, wall)
    if kind == "node":
        demo.cluster.start_node(primary)
    return result


def detected(demo: DemoCluster, since: float) -> float | None:
    """ms from ``since`` (wall clock) to the CRIM's first decision on an audit report."""
    for name in demo.names:
        try:
            history = demo.cluster.control(name).request("history", limit=200)["history"]
        except HaosError:
            continue
        for entry in history:
            if entry["at"] >= since and "audit" in str(entry.get("reason", "")):
                return float(entry["at"] - since) * 1000.0
    return None


def breakdown(trace_dir: Path, trials: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage and node: p50 and p99 ms from each trial's fault to the stage's first point
    after it (and before the trial's answer + 1 s or the next fault) on that node. A node is
    named by its part: ``old`` (where the component crashed), ``new`` (where the new primary
    serves) or ``other``; stages no trial passed are left out."""
    points = sorted(
        (p.t, f.stem, p.name) for f in sorted(trace_dir.glob("*.trace")) for p in read_trace(f)
    )
    offsets: dict[str, list[float]] = {}
    for i, r in enumerate(trials):
        end = r["answered"] + 1.0
        if i + 1 < len(trials):
            end = min(end, trials[i + 1]["at"])
        window = [
            (t, node, name) for t, node, name in points if r["at"] <= t <= end and name in STAGES
        ]
        old = next((node for _, node, name in window if name == "agent.crash"), None)
        new = next((node for _, node, name in window if name == "app.serving"), None)
        seen: set[str] = set()
        for t, node, name in window:
            part = "old" if node == old else "new" if node == new else "other"
            key = f"{part}:{name}"
            if key not in seen:
                seen.add(key)
                offsets.setdefault(key, []).append((t - r["at"]) * 1000.0)
    rows = {
        key: {"n": len(ms), "p50_ms": statistics.median(ms), "p99_ms": pct(ms, 0.99)}
        for key, ms in offsets.items()
    }
    return dict(sorted(rows.items(), key=lambda kv: kv[1]["p50_ms"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--kinds", default="kill,hang,node")
    p.add_argument("--json", action="store_true")
    p.add_argument("--audit-period", type=float, default=0.5, help="the counter's audit, s")
    p.add_argument("--audit-timeout", type=float, default=0.1, help="its timeout, s")
    p.add_argument(
        "--pause", type=float, default=1.0, help="s of quiet after the roles settled, per trial"
    )
    add_totem_options(p)
    p.add_argument("--trace", action="store_true", help="break each kind down by tracepoint")
    p.add_argument(
        "--probation",
        type=float,
        default=1.0,
        help="seconds after a fail-over in which a member that fails again is taken out of"
        " service (the demo's 60 s would hold out a member this benchmark kills again within"
        " seconds)",
    )
    a = p.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    if a.trials < 1 or not kinds or any(k not in ("kill", "hang", "node") for k in kinds):
        p.error("--trials >= 1 and --kinds from kill,hang,node")
    if not 0.001 <= a.probation <= 3600:
        p.error("--probation: seconds in 0.001..3600")
    if os.geteuid() != 0:
        p.error("needs root")
    reason = nspawn.unavailable()
    if reason:
        p.error(reason)
    cache = nspawn.build_noderoot(REPO, NODEROOT_CACHE)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    trace_dir = Path(tempfile.mkdtemp(prefix="haos-trace-")) if a.trace else None
    try:
        spec = with_totem_options(ClusterSpec(nodes=3), a)
    except ConfigError as e:
        p.error(str(e))
    demo_cluster = DemoCluster(
        3,
        cache=cache,
        restart_max=0,
        component_probation=f"{a.probation}s",
        audit_period=a.audit_period,
        audit_timeout=a.audit_timeout,
        trace_dir=trace_dir,
        spec=spec,
    )
    with demo_cluster as demo:
        demo.wait_settled()
        watcher = demo.names[-1]
        probe = demo.probe_from(watcher)
        try:
            for kind in kinds:
                for i in range(a.trials):
                    r = trial(demo, probe, kind, a.pause)
                    results[kind].append(r)
                    print(f"{kind} {i + 1}/{a.trials}: {r}", file=sys.stderr, flush=True)
        finally:
            probe.close()
    summary = {}
    for kind, rs in results.items():
        ms = [r["ms"] for r in rs]
        row = {
            "n": len(ms),
            "p50_ms": statistics.median(ms),
            "p99_ms": pct(ms, 0.99),
            "max_ms": max(ms),
            "lost": sum(r["lost"] for r in rs),
        }
        det = [r["detected_ms"] for r in rs if r.get("detected_ms") is not None]
        if det:
            row |= {"detected_p50_ms": statistics.median(det), "detected_p99_ms": pct(det, 0.99)}
        if trace_dir is not None:
            row["stages"] = breakdown(trace_dir, rs)
        summary[kind] = row
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        for kind, row in summary.items():
            extra = ""
            if "detected_p50_ms" in row:
                extra = (
                    f"  detected p50 {row['detected_p50_ms']:.1f} ms"
                    f" p99 {row['detected_p99_ms']:.1f} ms"
                )
            print(
                f"{kind:5} n={row['n']:3}  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
                f"  max {row['max_ms']:7.1f} ms  lost {row['lost']}{extra}"
            )
            for stage, st in row.get("stages", {}).items():
                print(
                    f"      {stage:22} n={st['n']:3}  p50 {st['p50_ms']:7.1f} ms"
                    f"  p99 {st['p99_ms']:7.1f} ms"
                )
    if trace_dir is not None:
        shutil.rmtree(trace_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
