"""``haosctl harness`` and ``python -m haoslab.harness``: drive the multi-node test harness.

* ``cleanup [--force] [--dry-run]``: remove the namespaces, processes, /dev/shm files and work
  directories of harness clusters whose owning process is gone (``--force``: of all of them).
* ``up [--nodes N]``: start a cluster, print how to enter its nodes, keep it until Ctrl-C or
  SIGTERM, then remove it.
* ``soak [--nodes N] [--seconds S] [--loss PCT]``: start a cluster, count its membership
  changes (exit status 1 if there were any).

Entry point only: it parses, calls the library, prints and picks the exit status (0 fine,
1 the command found a problem, 2 bad usage or a harness error).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from haos.cli import args as argtypes
from haos.errors import HaosError
from haoslab.harness.cleanup import cleanup
from haoslab.harness.cluster import Cluster
from haoslab.harness.config import ClusterSpec
from haoslab.harness.netns import MAX_NODES
from haoslab.harness.owner import DEFAULT_BASE
from haoslab.harness.soak import soak


def add_parser(sub: Any) -> None:
    """Register ``harness`` with its subcommands on haosctl's subparsers."""
    p = sub.add_parser(
        "harness",
        help="multi-node corosync test clusters in network namespaces",
        description="Start, soak and clean up test clusters (needs root and corosync).",
    )
    add_commands(p)


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="work directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="harness_command", required=True)
    p = sub.add_parser("cleanup", help="remove leftovers of crashed harness runs")
    p.add_argument("--force", action="store_true", help="also clusters whose owner runs")
    p.add_argument("--dry-run", action="store_true", help="only list what would go")
    p.set_defaults(run=_cleanup)
    nodes = argtypes.whole_number("--nodes", 1, MAX_NODES)
    p = sub.add_parser("up", help="start a cluster and keep it until Ctrl-C")
    p.add_argument("--nodes", type=nodes, default=3)
    p.set_defaults(run=_up)
    p = sub.add_parser("soak", help="count the membership changes of a cluster")
    p.add_argument("--nodes", type=nodes, default=3)
    p.add_argument("--seconds", type=argtypes.duration("--seconds", 7 * 86400.0), default=60.0)
    p.add_argument(
        "--loss",
        type=argtypes.whole_number("--loss", 0, 100),
        default=0,
        help="loss of what every node sends, %%",
    )
    p.set_defaults(run=_soak)
    p = sub.add_parser(
        "fence",
        help="power a node of a running cluster off (SIGKILL everything in its namespace)",
        description="The harness's fencing device: 'off' and 'reboot' kill every process of "
        "the node (a reboot's power-on is the owner's business); 'status' prints on or off.",
    )
    p.add_argument("--cluster", required=True, help="the cluster id (six hex digits)")
    p.add_argument("--node", required=True, type=nodes, help="node id")
    p.add_argument("--action", choices=("off", "reboot", "status"), default="off")
    p.set_defaults(run=_fence)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haoslab.harness``."""
    parser = argparse.ArgumentParser(prog="python -m haoslab.harness")
    add_commands(parser)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except HaosError as e:
        print(f"harness: {e.code} error: {e}", file=sys.stderr)
        return 2
    return status


def _logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR)


def _cleanup(args: argparse.Namespace) -> int:
    _logging(args)
    report = cleanup(args.base, force=args.force, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for cluster_id in report.removed:
        print(f"{verb} cluster {cluster_id}")
    for name in report.namespaces:
        print(f"  namespace {name}")
    if report.killed:
        print(f"  killed processes {sorted(report.killed)}")
    for cluster_id in report.skipped:
        print(f"kept cluster {cluster_id}: its owner still runs (--force removes it)")
    for cluster_id in report.unowned:
        print(
            f"kept cluster {cluster_id}: no work directory in {args.base}; "
            "started with another --base? (--force removes it)"
        )
    return 0


def _up(args: argparse.Namespace) -> int:
    _logging(args)
    stop = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    with Cluster(ClusterSpec(nodes=args.nodes), base_dir=args.base) as cluster:
        print(f"cluster {cluster.cluster_id} is up; work directory {cluster.workdir}")
        print(cluster.describe())
        for node in cluster.node_ids:
            # corosync's own namespaces: its network and its private /etc/corosync, /run, ...
            print(f"  enter n{node}: nsenter -t {cluster.pid(node)} --net --mount bash")
        print(f"  switch: ip -n {cluster.names.switch} link")
        print("Ctrl-C or SIGTERM removes it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _soak(args: argparse.Namespace) -> int:
    _logging(args)
    with Cluster(ClusterSpec(nodes=args.nodes), base_dir=args.base) as cluster:
        if args.loss:
            for node in cluster.node_ids:
                cluster.loss(node, args.loss)
        report = soak(cluster, args.seconds)
    print(f"{report.duration:.1f} s, {args.loss} % loss: new rings {report.rings}")
    print(f"membership protocol runs (stats.srp.gather_entered): {report.gathers}")
    for change in report.changes:
        offset = change.at - report.changes[0].at
        print(f"  +{offset:7.3f} s n{change.node} {change.ring_id} {sorted(change.members)}")
    return 1 if report.total else 0


def _fence(args: argparse.Namespace) -> int:
    from haoslab.harness import netns

    name = netns.Names(args.cluster).node(args.node)
    if not netns.exists(name):
        print(f"harness: no namespace {name}", file=sys.stderr)
        return 1
    ident = netns.ident(name)
    if args.action == "status":
        alive = netns.pids_in([ident])
        print("on" if alive else "off")
        return 0 if alive else 2
    killed = netns.kill_processes([ident])
    print(f"node {args.node} of cluster {args.cluster}: {len(killed)} processes killed")
    return 0
