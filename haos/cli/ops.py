"""``haosctl status | lock | unlock | offline | online | switchover | history``.

They talk to the node's cluster daemon over its control socket (``--control``, default
``/run/haos/control.sock``); operator commands are carried out by the CRIM on the master and
print its decision. Exit status: 0 done, 1 the CRIM refused (the reason is printed), 2 bad
usage or the cluster could not be reached.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from haos.errors import UsageError
from haos.services.control import ControlClient

DEFAULT_CONTROL = Path("/run/haos/control.sock")
ACTIONS = {
    "lock": "lock a node, service group or component: its work moves away",
    "unlock": "unlock a node, service group or component",
    "offline": "take a component off-line (stopped; its roles move away)",
    "online": "bring an off-line component back",
    "switchover": "move primary work off a component, group or instance to its standby",
}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("status", help="cluster, nodes, service groups, instances, components")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the raw state as JSON")
    p.set_defaults(run=_status)
    for action, text in ACTIONS.items():
        p = sub.add_parser(action, help=text, description=text)
        _common(p)
        p.add_argument("target", help="node, service group, instance or component name")
        p.add_argument("--json", action="store_true", help="print the decision as JSON")
        p.set_defaults(run=_operator, action=action)
    p = sub.add_parser("history", help="the CRIM's recent decisions and notifications")
    _common(p)
    p.add_argument("--limit", type=int, default=30, help="entries to show (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_history)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", type=Path, default=DEFAULT_CONTROL, help="node control socket")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")


def _client(args: argparse.Namespace) -> ControlClient:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    return ControlClient(args.control, timeout=args.timeout)


def _operator(args: argparse.Namespace) -> int:
    answer = _client(args).request("operator", action=args.action, target=args.target)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        verdict = "refused" if answer.get("refused") else "done"
        print(f"{args.action} {args.target}: {verdict}: {answer.get('reason')}")
    return 1 if answer.get("refused") else 0


def _history(args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise UsageError(f"--limit must be positive, got {args.limit}")
    entries = _client(args).request("history", limit=args.limit)["history"]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        when = (
            time.strftime("%H:%M:%S", time.localtime(e["at"]))
            + f".{int(e['at'] * 1000) % 1000:03d}"
        )
        if "note" in e:
            rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("seq", "at", "note"))
            print(f"{when}  #{e['seq']:<5} {e['note']}: {rest}")
        else:
            flag = " (refused)" if e.get("refused") else ""
            print(f"{when}  #{e['seq']:<5} {e['reason']}{flag}")
    return 0


def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    status = client.request("status")
    crim = client.request("crim")
    if args.json:
        print(json.dumps({"cluster": status, "availability": crim}, indent=2, default=str))
        return 0
    print(render_status(status, crim))
    return 0


def _name(node_id: int | None, ids: dict[int, str]) -> str:
    return "-" if node_id is None else f"{ids.get(node_id, '?')} ({node_id})"


def render_status(status: dict[str, Any], crim: dict[str, Any]) -> str:
    """A crm_mon-like text view of ``status`` and ``crim`` answers."""
    state = crim["crim"]
    hosts: dict[str, str] = crim["hosts"]
    ids = {int(k): v for k, v in status.get("node_names", {}).items()}
    lines = [
        f"Cluster: {'quorate' if status['quorate'] else 'NOT QUORATE'}, "
        f"master {_name(status['master'], ids)}, vice-master {_name(status['vice_master'], ids)}",
        f"Availability service: active on {crim['master']}, decision #{crim['seq']}",
        "",
        "Nodes:",
    ]
    for node, rt in sorted(state["nodes"].items()):
        member = "member" if rt["member"] else "OFFLINE"
        lines.append(f"  {node:<10} {member:<8} {rt['admin']}")
    running: dict[str, dict[str, Any] | None] = crim.get("running") or {}
    lines += ["", "Service instances:"]
    for si, info in crim["instances"].items():
        group = crim["groups"][info["group"]]
        served = "served" if info["served"] else "NOT SERVED"
        if not info["served"] and info.get("assigned"):
            served += " (assigned, but its primary does not run as primary: see 'runs as')"
        lines.append(f"  {si:<20} {info['group']} ({group['redundancy']}): {served}")
        for role in ("primary", "secondary"):
            for comp in info[role]:
                node = hosts.get(comp, "-")
                said = runs_as(running, node, comp)
                lines.append(f"      {role:<9} {comp} on {node}, runs as {said}")
    lines += [
        "",
        "Components:",
        f"  {'name':<36} {'state':<10} {'runs as':<13} {'health':<10} {'admin':<9} node",
    ]
    for comp, rt in state["components"].items():
        if comp not in hosts:
            continue  # hardware above the nodes (shelves, slots)
        node = hosts.get(comp, "-")
        said = runs_as(running, node, comp)
        lines.append(
            f"  {comp:<36} {rt['state']:<10} {said:<13} {rt['health']:<10} {rt['admin']:<9} {node}"
        )
        if rt.get("why"):
            lines.append(f"      why: {rt['why']}")
    return "\n".join(lines)


def runs_as(running: dict[str, dict[str, Any] | None], node: str, component: str) -> str:
    """What the node's agent says ``component`` runs as: a state, ``failed``, ``unknown``
    (the node did not answer) or ``-`` (its agent has not said)."""
    if node not in running:
        return "-"
    states = running[node]
    if states is None:
        return "unknown"
    said = states.get(component)
    return str(said["state"]) if isinstance(said, dict) else "-"
