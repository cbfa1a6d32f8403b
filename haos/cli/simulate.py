"""``haosctl simulate``: run the policy cores against a seeded random fault schedule."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from haos.cli import args as argtypes
from haos.cluster.asr.report import format_nines, nines, render_table
from haos.config.examples import builtin_examples, load_builtin_example
from haos.config.loader import load_config
from haos.config.model import ClusterConfig
from haos.errors import UsageError
from haos.sim.engine import SimResult, SimSettings, Simulation

DEFAULT_EXAMPLE = "cpci-2shelf"


# Beyond these a run would not end in any useful time (a simulated fault costs about 0.1 ms).
MAX_FAULTS = 10_000_000
MAX_SEED = 2**63 - 1
MAX_GAP = 365 * 86400.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="run the CRIM, CEC, HM and ASR over simulated nodes with random faults",
        description=(
            "Run the real policy cores over simulated nodes on a fake clock with a seeded "
            "random fault schedule (crashes, hangs, node losses, operator actions), check the "
            "invariants after every step and print the availability report. Exits 1 if any "
            "invariant was violated."
        ),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="FILE", help="cluster configuration (TOML)")
    src.add_argument(
        "--example",
        metavar="NAME",
        help=f"a built-in example configuration (default {DEFAULT_EXAMPLE}); "
        f"one of: {', '.join(builtin_examples())}",
    )
    p.add_argument(
        "--faults",
        type=argtypes.whole_number("--faults", 0, MAX_FAULTS),
        default=1000,
        help="faults to inject (1000)",
    )
    p.add_argument(
        "--seed", type=argtypes.whole_number("--seed", 0, MAX_SEED), default=1, help="seed (1)"
    )
    p.add_argument(
        "--mean-gap",
        type=argtypes.duration("--mean-gap", MAX_GAP),
        default=3.0,
        help="mean s between faults (3)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--trace",
        type=argtypes.whole_number("--trace", 0, MAX_FAULTS),
        default=0,
        metavar="N",
        help="print the last N decisions of the run",
    )
    p.set_defaults(run=run)


def _load(args: argparse.Namespace) -> ClusterConfig:
    if args.config:
        return load_config(args.config)
    name = args.example or DEFAULT_EXAMPLE
    if name not in builtin_examples():
        raise UsageError(f"no example {name!r}; choose one of: {', '.join(builtin_examples())}")
    return load_builtin_example(name)


def run(args: argparse.Namespace) -> int:
    config = _load(args)
    settings = SimSettings(faults=args.faults, seed=args.seed, mean_gap=args.mean_gap)
    sim = Simulation(config, settings)
    started = time.perf_counter()
    result = sim.run()
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(_as_json(config, settings, result, elapsed), indent=2))
    else:
        _print(config, settings, result, elapsed)
        if args.trace:
            print(f"\nlast {args.trace} decisions:")
            print("\n".join(sim.trace[-args.trace :]))
    return 1 if result.violations else 0


def _print(config: ClusterConfig, s: SimSettings, r: SimResult, elapsed: float) -> None:
    out = sys.stdout
    print(
        f"cluster {config.name} ({config.source or 'generated'}): {len(config.nodes)} nodes, "
        f"{len(config.components)} components, {len(config.groups)} service groups, "
        f"{len(config.instances)} service instances",
        file=out,
    )
    print(
        f"seed {s.seed}: {s.faults} faults over {r.sim_time:.0f} simulated s, "
        f"{r.steps} CRIM decisions ({r.refused} refused) in {elapsed:.2f} s",
        file=out,
    )
    print("faults:     " + _counter(r.faults), file=out)
    print("recoveries: " + _counter(r.recoveries), file=out)
    print(file=out)
    assert r.report is not None
    print(render_table(r.report), file=out)
    print(file=out)
    if r.violations:
        print(f"{len(r.violations)} invariant violations; the first ones:", file=out)
        for v in r.violations[:20]:
            print(f"  {v}", file=out)
    else:
        print("0 invariant violations", file=out)


def _counter(c: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def _as_json(config: ClusterConfig, s: SimSettings, r: SimResult, elapsed: float) -> Any:
    assert r.report is not None
    return {
        "cluster": config.name,
        "seed": s.seed,
        "faults_requested": s.faults,
        "sim_time": r.sim_time,
        "decisions": r.steps,
        "refused": r.refused,
        "wall_time": elapsed,
        "faults": dict(r.faults),
        "recoveries": dict(r.recoveries),
        "availability": {
            "overall": r.report.overall,
            "overall_nines": format_nines(nines(r.report.overall)),
            "worst": r.report.worst,
            "worst_instance": r.report.worst_instance,
            "instances": {
                i.instance: {
                    "incidents": i.incidents,
                    "outage_total": i.outage_total,
                    "availability": i.availability,
                }
                for i in r.report.instances
            },
        },
        "violations": [
            {
                "step": v.step,
                "at": v.at,
                "event": v.event,
                "invariant": v.invariant,
                "detail": v.detail,
            }
            for v in r.violations
        ],
    }
