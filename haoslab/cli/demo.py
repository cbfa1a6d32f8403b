"""``haosctl demo``: watch haos keep a service alive (the README's main job).

Boots three to five nodes (``--nodes``, default three) with a real systemd each (corosync,
haos-clusterd, haos-agentd as services; about 2 s once the node root is built), runs the 2N
demo counter (a primary, a secondary, a spare on every other node), shows the cluster's status,
then SIGKILLs the primary's process and cuts the power of the node that took over, measuring
each time until a client is served again and checking that the counter went on from where it
was. Everything is torn down at the end. Needs root (namespaces, systemd-nspawn).

Exit status: 0 the service survived both faults, 1 it did not, 2 it could not run here.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from haos.cli.ops import render_status
from haos.errors import HaosError, UsageError
from haoslab.harness import nspawn
from haoslab.harness.systemd_cluster import NODEROOT_CACHE, REPO


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="a 3- to 5-node cluster keeps a counter service alive through two faults",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--nodes", type=int, default=3, help="cluster size (3..5, default 3)")
    p.set_defaults(run=run)


def say(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from haoslab.demo.run import DemoCluster, first_from_other, probing

    if not 3 <= args.nodes <= 5:
        raise UsageError(f"--nodes must be 3..5, got {args.nodes}")
    if os.geteuid() != 0:
        raise UsageError("the demo needs root (network namespaces, systemd-nspawn)")
    reason = nspawn.unavailable()
    if reason is not None:
        raise UsageError(f"the demo cannot run here: {reason}")
    started = time.monotonic()
    say(started, "preparing the node root file system (built once, then cached)")
    cache = nspawn.build_noderoot(REPO, NODEROOT_CACHE)
    with DemoCluster(args.nodes, cache=cache, restart_max=0) as demo:
        say(
            started,
            f"{args.nodes} nodes running systemd, corosync and haos "
            f"(booted in {demo.cluster.up_after:.1f} s)",
        )
        demo.wait_placed(60.0)
        primary = demo.holder("primary")
        spare = demo.holder("spare") or demo.names[-1]
        assert primary is not None
        print(_status(demo), flush=True)
        ok = True
        with probing(demo, spare) as probe:
            first = probe.wait(lambda a: a[-1] if len(a) >= 20 else None, 30.0)
            say(
                started,
                f"a client on {spare} is using the counter on {primary}: value {first.value}",
            )
            ok &= _fault(
                started,
                demo,
                probe,
                primary,
                f"SIGKILL of the counter's process on {primary}",
                lambda: demo.kill_component(primary),
                first_from_other,
            )
            demo.wait_settled()
            primary = demo.holder("primary")
            assert primary is not None
            ok &= _fault(
                started,
                demo,
                probe,
                primary,
                f"power cut of node {primary}",
                lambda: demo.power_cut(primary),
                first_from_other,
            )
        print(
            render_status(
                demo.cluster.control(spare).request("status"),
                demo.cluster.control(spare).request("crim"),
            ),
            flush=True,
        )
        say(started, "tearing the cluster down")
    say(started, "done: the service survived" if ok else "FAILED: see above")
    return 0 if ok else 1


def _status(demo: Any) -> str:
    """``haosctl status`` as seen from the first node that answers."""
    for name in demo.names:
        try:
            control = demo.cluster.control(name)
            return render_status(control.request("status"), control.request("crim"))
        except HaosError:
            continue
    return "(no node answered)"


def _fault(
    started: float,
    demo: Any,
    probe: Any,
    primary: str,
    what: str,
    inject: Any,
    first_from_other: Any,
) -> bool:
    old = demo.address(primary)
    at = inject()
    say(started, what)
    after = probe.wait(first_from_other(at, old), 30.0)
    last_old = max(a.value for a in probe.answers if a.target == old)
    new_primary = next(n for n in demo.names if demo.address(n) == after.target)
    say(
        started,
        f"served again by {new_primary} after {(after.t - at) * 1000:.0f} ms; "
        f"counter {last_old} -> {after.value}",
    )
    # an increment in flight at the fault may have been stored but not answered: it counts
    if after.value <= last_old:
        say(started, f"LOST: the counter should have gone on from {last_old}")
        return False
    return True
