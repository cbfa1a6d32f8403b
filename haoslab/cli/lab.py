"""``haosctl lab up | down``: a cluster from your own cluster.toml, on this machine.

* ``up --config FILE [--nodes N] [--vm] [--workdir DIR]``: check FILE with haos' own loader
  and the lab's rules (:mod:`haoslab.labplan`; a bad configuration is a ``config`` error
  naming the key, exit status 2, and nothing is started), then boot its nodes: systemd-nspawn
  containers with a real systemd running corosync, haos-clusterd and haos-agentd
  (:class:`~haoslab.harness.systemd_cluster.SystemdCluster`), or with ``--vm`` QEMU guests of
  the appliance image (:class:`~haoslab.vm.machine.Cluster`). Without ``[fencing]`` the
  nodes fence through the lab: the harness's fence bridge, or ``fence_haos_qmp`` over the
  guests' QMP monitors. Prints how to reach each node and a line starting ``ready:``, then
  keeps the cluster until Ctrl-C or SIGTERM and tears it down. Without ``--config``: the
  lab's demo cluster (the 2N counter) of ``--nodes`` nodes.
* ``down [--workdir DIR]``: remove the lab of DIR (:mod:`haoslab.labdown`), also after its
  ``up`` was SIGKILLed; with none there it says so and exits 0.

What ``up`` created is recorded in ``DIR/lab.json`` (:mod:`haoslab.labstate`; default DIR
``/run/haos-lab``). Needs root. Exit status: 0 fine, 2 bad usage or configuration, or the
cluster could not be built.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from haos.cli import args as argtypes
from haos.errors import UsageError
from haoslab import labstate
from haoslab.harness.netns import MAX_NODES, Names
from haoslab.labplan import LabPlan, plan, vm_toml

log = logging.getLogger(__name__)

NODE_HAOSCTL = "/usr/local/bin/haosctl"
# haosctl in an nspawn node: haos from the copy the node's units run (their drop-in's path)
NODE_HAOSCTL_SCRIPT = """#!/bin/sh
# haosctl of this lab node: haos as the node's haos units run it
export $(sed -n 's/^Environment=//p' /etc/systemd/system/haos-clusterd.service.d/harness.conf)
exec python3 -m haos.cli.main "$@"
"""
COMMIT_WAIT = 900.0  # seconds a guest has to send its commit report (TCG on a loaded host)


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: tear the lab down (raised once; later signals are ignored)."""


def add_parser(sub: Any) -> None:
    """Register ``lab`` with ``up`` and ``down`` on haosctl's subparsers."""
    p = sub.add_parser(
        "lab",
        help="a cluster from your own cluster.toml on this machine (nspawn or QEMU)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    lab = p.add_subparsers(dest="lab_command", required=True)
    up = lab.add_parser("up", help="boot the cluster of a cluster.toml; Ctrl-C removes it")
    up.add_argument("--config", type=Path, help="cluster.toml (default: the lab's demo)")
    up.add_argument("--nodes", type=argtypes.whole_number("--nodes", 1, MAX_NODES))
    up.add_argument("--vm", action="store_true", help="QEMU guests of the appliance image")
    up.add_argument("--workdir", type=Path, default=labstate.DEFAULT_WORKDIR)
    up.add_argument("--image", type=Path, help="--vm: the disk image (default: built)")
    up.add_argument("--memory", type=argtypes.whole_number("--memory", 256, 65536), default=1024)
    up.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    up.set_defaults(run=_up)
    down = lab.add_parser("down", help="remove the lab, also what a killed 'up' left")
    down.add_argument("--workdir", type=Path, default=labstate.DEFAULT_WORKDIR)
    down.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    down.set_defaults(run=_down)


def _up(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.image is not None and not args.vm:
        raise UsageError("--image is for --vm")
    lab = plan(args.config, args.nodes, vm=args.vm)  # nothing is started before this passed
    _preflight(args)
    _claim(args.workdir)
    state = labstate.for_this_process("vm" if args.vm else "nspawn", lab.source)
    labstate.save(args.workdir, state)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        if args.vm:
            _up_vm(args, lab, state)
        else:
            _up_nspawn(args, lab, state)
    except Interrupted:
        pass  # the cluster's context closed it on the way out
    finally:
        _ignore_signals()  # the teardown must not be cut short
        _sweep(args.workdir)
    print("removed", flush=True)
    return 0


def _sweep(workdir: Path) -> None:
    """After the cluster closed: remove what it leaves (the guests' disks), then the state
    file. If that fails the state file stays, for ``down``."""
    from haoslab.labdown import sweep

    state = labstate.load(workdir)
    if state is None:
        return
    try:
        sweep(state)
    except BaseException:
        log.error("the lab was not removed completely: haosctl lab down --workdir %s", workdir)
        raise
    labstate.forget(workdir)


def _interrupt(_sig: int, _frame: FrameType | None) -> NoReturn:
    _ignore_signals()  # the teardown must not be cut short
    raise Interrupted


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise UsageError("the lab needs root (namespaces, mounts, systemd-nspawn, QEMU)")
    if args.vm:
        if shutil.which("qemu-system-x86_64") is None:
            raise UsageError("--vm needs qemu-system-x86_64 (scripts/setup-image.sh)")
        return
    from haoslab.harness import nspawn

    reason = nspawn.unavailable()
    if reason is not None:
        raise UsageError(f"nspawn nodes cannot run here: {reason}")


def _claim(workdir: Path) -> None:
    state = labstate.load(workdir)
    if state is None:
        return
    if state.up_alive():
        raise UsageError(
            f"a lab runs in {workdir} already (haosctl lab up, pid {state.pid}): "
            f"stop it, or give another --workdir"
        )
    raise UsageError(
        f"{workdir} holds what a killed lab left: haosctl lab down --workdir {workdir} first"
    )


def _wait_forever() -> NoReturn:
    while True:
        signal.pause()  # until a signal's handler raises Interrupted


# -- nspawn nodes ------------------------------------------------------------------------------


def _up_nspawn(args: argparse.Namespace, lab: LabPlan, state: labstate.LabState) -> None:
    from haoslab.harness import nspawn
    from haoslab.harness.config import ClusterSpec
    from haoslab.harness.systemd_cluster import (
        NODEROOT_CACHE,
        REPO,
        SystemdCluster,
        agent_available,
    )

    print(f"{lab.source}: {lab.nodes} nodes; preparing the node root (cached)", flush=True)
    cache = nspawn.build_noderoot(REPO, NODEROOT_CACHE)
    cluster = SystemdCluster(
        ClusterSpec(nodes=lab.nodes),
        cache=cache,
        agent=agent_available(REPO),
        config_toml=lab.toml,
        fence=True,  # the lab's fence bridge, unless the configuration has a [fencing]
        files={NODE_HAOSCTL: NODE_HAOSCTL_SCRIPT},
    )
    with cluster:
        assert cluster.topo is not None
        lines = []
        for name in cluster.names:
            node = cluster.node(name)
            node.run(["chmod", "755", NODE_HAOSCTL])
            lines.append(nspawn_access(name, node.leader, cluster.topo.names))
        labstate.save(
            args.workdir,
            dataclasses.replace(state, clusters=(str(cluster.topo.workdir),), nodes=tuple(lines)),
        )
        for line in lines:
            print(line)
        fencing = "its own [fencing]" if lab.fencing else "the lab's fence bridge"
        print(
            f"ready: {lab.nodes} nspawn nodes run {lab.source} (up in "
            f"{cluster.up_after or 0:.1f} s; fencing: {fencing}); Ctrl-C, SIGTERM or "
            f"'haosctl lab down --workdir {args.workdir}' removes them",
            flush=True,
        )
        _wait_forever()


def nspawn_access(name: str, leader: int, names: Names) -> str:
    """How to reach nspawn node ``name`` whose PID 1 is ``leader`` on the host."""
    k = int(name[1:])
    return (
        f"{name}: nsenter -t {leader} -a haosctl status   "
        f"(a shell: nsenter -t {leader} -a bash; netns {names.node(k)}, "
        f"addresses {names.address(k, 0)} {names.address(k, 1)})"
    )


# -- QEMU guests -------------------------------------------------------------------------------


def _up_vm(args: argparse.Namespace, lab: LabPlan, state: labstate.LabState) -> None:
    from haos.proc import run
    from haoslab.harness.systemd_cluster import REPO
    from haoslab.vm.machine import Cluster

    toml = vm_toml(lab)  # checked before the image is built or anything is started
    image = args.image
    if image is None:
        print("building the appliance image (cached once built)", flush=True)
        image = Path(run([str(REPO / "image" / "build.sh")], timeout=1800).strip())
    guests = args.workdir / "vm"
    state = dataclasses.replace(state, guests=str(guests))
    labstate.save(args.workdir, state)
    # Several TCG guests share the host's cores: a starved guest's i6300esb would reset it
    # although nothing hung (tests/vm/test_vm_cluster.py), so only a single guest has one.
    with Cluster(
        image,
        guests,
        lab.nodes,
        memory_mb=args.memory,
        watchdog=lab.nodes == 1,
        config_toml=toml,
    ) as cluster:
        cluster.start()
        lines = [vm_access(guests, m.spec.node) for m in cluster.machines]
        pids = tuple(m.proc.pid for m in cluster.machines if m.proc is not None)
        labstate.save(args.workdir, dataclasses.replace(state, qemu=pids, nodes=tuple(lines)))
        for line in lines:
            print(line, flush=True)
        _await_commits(cluster)
        print(
            f"ready: {lab.nodes} QEMU guests run {lab.source}; Ctrl-C, SIGTERM or "
            f"'haosctl lab down --workdir {args.workdir}' removes them",
            flush=True,
        )
        _wait_forever()


def vm_access(guests: Path, node: int) -> str:
    """How to reach guest ``node`` of the guests in ``guests``."""
    f = guests / f"node{node}"
    return (
        f"n{node}: qemu/haos-vms sh {guests} {node} 'haosctl status'   "
        f"(serial console {f}.console.log, QMP {f}.qmp.sock, guest agent {f}.qga.sock, "
        f"addresses {Names.address(node, 0)} {Names.address(node, 1)})"
    )


def _await_commits(cluster: Any) -> None:
    """Print each guest's commit report (haos units up, slot committed) as it arrives."""
    from haos.errors import HaosError

    for m in cluster.machines:
        assert m.reports is not None
        try:
            commit = m.reports.wait_event("commit", timeout=COMMIT_WAIT)
        except HaosError as e:
            print(f"n{m.spec.node}: no commit report: {e}", flush=True)
            continue
        print(f"n{m.spec.node}: {'; '.join(commit['reasons'])}; units {commit['units']}")


# -- down --------------------------------------------------------------------------------------


def _down(args: argparse.Namespace) -> int:
    from haoslab.labdown import down

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    report = down(args.workdir)
    if report is None:
        print(f"no lab in {args.workdir}: nothing to remove")
        return 0
    if report.stopped_up:
        print(f"lab up was running: stopped with {report.stopped_up}")
    if report.killed:
        print(f"killed processes {sorted(set(report.killed))}")
    for what, items in (
        ("unmounted", report.unmounted),
        ("removed cgroup", report.cgroups),
        ("deleted namespace", report.namespaces),
        ("removed", report.directories),
    ):
        for item in items:
            print(f"{what} {item}")
    print(f"lab ({report.kind}) in {args.workdir} removed")
    return 0
