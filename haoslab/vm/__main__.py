"""``python -m haoslab.vm``: start a cluster of appliance guests by hand, or poke one over QMP.

    python -m haoslab.vm up N [--image RAW] [--workdir DIR] [--no-provision] [--no-fw-cfg NODE]
    python -m haoslab.vm qmp DIR NODE COMMAND [JSON-ARGUMENTS]
    python -m haoslab.vm sh DIR NODE SCRIPT
    python -m haoslab.vm bench-boot N [--image RAW] [--workdir DIR]

``up`` boots N guests (each with its own overlay, two links on two hubs), prints where their
sockets and logs are (and the directory of their fencing monitors, for ``fence_haos_qmp``),
reports each node's commit verdict as it arrives and keeps them running until interrupted; a
node given with ``--no-fw-cfg`` boots its own copy of the image, provisioned with ``haosctl
provision``, as a flashed board. ``qmp`` runs one QMP command on a running guest (e.g.
``set_link '{"name": "link0", "up": false}'``, ``system_reset``, ``quit``); ``sh`` runs a
shell script in the guest through its agent. ``bench-boot`` starts N guests at once and
prints, per guest, the seconds from QEMU's start to its commit report (which comes after
multi-user.target and the haos units) and the guest's own ``systemd-analyze`` figures; then
stops them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from haos.errors import HaosError, UsageError
from haos.proc import run
from haoslab.vm.machine import Cluster
from haoslab.vm.qga import wait_agent
from haoslab.vm.qmp import Qmp

REPO = Path(__file__).resolve().parents[2]


def _node(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a node number, not {text!r}") from None
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"node numbers are 1..8, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m haoslab.vm", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="boot N guests and keep them running until interrupted")
    p.add_argument("n", type=_node, help="number of guests (1..8)")
    p.add_argument("--image", type=Path, help="the disk image (default: image/build.sh's)")
    p.add_argument("--workdir", type=Path, default=Path("/run/haos-vm"))
    p.add_argument("--memory", type=int, default=1024, help="MiB per guest")
    p.add_argument("--no-provision", action="store_true", help="no corosync/haos config")
    p.add_argument(
        "--no-fw-cfg",
        type=_node,
        action="append",
        default=[],
        metavar="NODE",
        help="boot NODE without fw_cfg, from its own image provisioned by haosctl provision",
    )
    p = sub.add_parser("bench-boot", help="time N guests booting at once, then stop them")
    p.add_argument("n", type=_node, help="number of guests (1..8)")
    p.add_argument("--image", type=Path, help="the disk image (default: image/build.sh's)")
    p.add_argument("--workdir", type=Path, default=Path("/run/haos-vm-bench"))
    p = sub.add_parser("qmp", help="run one QMP command on a running guest")
    p.add_argument("workdir", type=Path)
    p.add_argument("node", type=_node)
    p.add_argument("qmp_command")
    p.add_argument("arguments", nargs="?", default="{}", help="the arguments as a JSON object")
    p = sub.add_parser("sh", help="run a shell script in a running guest (guest agent)")
    p.add_argument("workdir", type=Path)
    p.add_argument("node", type=_node)
    p.add_argument("script")
    return parser


def _image(args: argparse.Namespace) -> Path:
    if args.image is not None:
        path: Path = args.image
        return path
    return Path(run([str(REPO / "image" / "build.sh")], timeout=1800).strip())


def _bench_boot(args: argparse.Namespace) -> int:
    image = _image(args)
    with Cluster(image, args.workdir, args.n) as cluster:
        started = time.time()
        cluster.start()
        for m in cluster.machines:
            assert m.reports is not None
            commit = m.reports.wait_event("commit", timeout=900)
            took = commit["received"] - started
            analyze = m.sh(
                "systemd-analyze time | head -n 2; df -h / | tail -n 1", check=False
            ).strip()
            units = " ".join(f"{u}={s}" for u, s in commit["units"].items())
            print(f"n{m.spec.node}: commit report {took:.0f} s after start; {units}")
            print(f"    {analyze}", flush=True)
    return 0


def _up(args: argparse.Namespace) -> int:
    image = _image(args)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Cluster(
        image,
        args.workdir,
        args.n,
        memory_mb=args.memory,
        provision=not args.no_provision,
        no_fw_cfg=frozenset(args.no_fw_cfg),
    ) as cluster:
        cluster.start()
        for m in cluster.machines:
            print(
                f"n{m.spec.node}: console {m.spec.file('console.log')}, "
                f"qmp {m.spec.file('qmp.sock')}, agent {m.spec.file('qga.sock')}",
                flush=True,
            )
        fence_dir = cluster.machines[0].spec.fence_socket().parent
        print(f"fencing monitors: fence_haos_qmp --qmp-dir {fence_dir} -n nN", flush=True)
        waiting = list(cluster.machines)
        while waiting and not stop.is_set():
            for m in list(waiting):
                assert m.reports is not None
                try:
                    commit = m.reports.wait_event("commit", timeout=1.0)
                except HaosError:
                    continue
                print(
                    f"n{m.spec.node}: {'; '.join(commit['reasons'])}; units {commit['units']}",
                    flush=True,
                )
                waiting.remove(m)
        print("running; interrupt to stop", flush=True)
        stop.wait()
    return 0


def _qmp(args: argparse.Namespace) -> int:
    try:
        arguments: dict[str, Any] = json.loads(args.arguments)
    except json.JSONDecodeError as e:
        raise UsageError(f"arguments must be a JSON object: {e}") from e
    if not isinstance(arguments, dict):
        raise UsageError("arguments must be a JSON object")
    with Qmp(args.workdir / f"node{args.node}.qmp.sock") as qmp:
        print(json.dumps(qmp.execute(args.qmp_command, **arguments), indent=2))
    return 0


def _sh(args: argparse.Namespace) -> int:
    with wait_agent(args.workdir / f"node{args.node}.qga.sock", timeout=10) as agent:
        res = agent.exec(["/bin/sh", "-c", args.script], timeout=600)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.exitcode


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"up": _up, "qmp": _qmp, "sh": _sh, "bench-boot": _bench_boot}
    try:
        return handlers[args.command](args)
    except HaosError as e:
        print(f"haoslab.vm: {e.code} error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
