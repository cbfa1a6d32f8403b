"""``haosctl status | lock | unlock | offline | online | switchover | history``.

They talk to the node's cluster daemon over its control socket (``--control``, default
``/run/haos/control.sock``); operator commands are carried out by the CRIM on the master and
print its decision. Exit status: 0 done, 1 the CRIM refused (the reason is printed), 2 bad
usage or the cluster could not be reached or gave an answer that is not what the protocol
says (checked here, at the boundary: code ``bad-answer``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from haos import fields
from haos.cli import args as argtypes
from haos.fields import BadField, Op
from haos.services.control import BadAnswer, ControlClient

DEFAULT_CONTROL = Path("/run/haos/control.sock")
MAX_TIMEOUT = 3600.0
MAX_HISTORY = 1_000_000  # the daemon's bound of history's limit
ACTIONS = {
    "lock": "lock a node, service group or component: its work moves away",
    "unlock": "unlock a node, service group or component",
    "offline": "take a component off-line (stopped; its roles move away)",
    "online": "bring an off-line component back",
    "switchover": "move primary work off a component, group or instance to its standby",
}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("status", help="cluster, nodes, service groups, instances, components")
    daemon_options(p)
    p.add_argument("--json", action="store_true", help="print the raw state as JSON")
    p.set_defaults(run=_status)
    for action, text in ACTIONS.items():
        p = sub.add_parser(action, help=text, description=text)
        daemon_options(p)
        p.add_argument("target", help="node, service group, instance or component name")
        p.add_argument("--json", action="store_true", help="print the decision as JSON")
        p.set_defaults(run=_operator, action=action)
    p = sub.add_parser("history", help="the CRIM's recent decisions and notifications")
    daemon_options(p)
    p.add_argument(
        "--limit",
        type=argtypes.whole_number("--limit", 1, MAX_HISTORY),
        default=30,
        help="entries to show (default 30)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_history)


def daemon_options(p: argparse.ArgumentParser) -> None:
    """``--control`` and ``--timeout``: every command that asks a node's cluster daemon."""
    p.add_argument("--control", type=Path, default=DEFAULT_CONTROL, help="node control socket")
    p.add_argument(
        "--timeout",
        type=argtypes.duration("--timeout", MAX_TIMEOUT),
        default=10.0,
        help=f"seconds (or 500ms, 1m) to wait for an answer, at most {MAX_TIMEOUT:g} s",
    )


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(args.control, timeout=args.timeout)


# What haosctl reads of each answer; anything else in them is passed over.
OPERATOR_ANSWER = Op(
    "operator answer", (fields.flag("refused"), fields.text("reason", empty=True)), extra=True
)
HISTORY_ENTRY = Op(
    "history entry",
    (fields.integer("seq", 0, 2**63 - 1), fields.number("at", 0.0, 1e11)),
    extra=True,
)
STATUS_ANSWER = Op(
    "status answer",
    (
        fields.flag("quorate"),
        fields.integer("master", 0, 2**32, default=None),
        fields.integer("vice_master", 0, 2**32, default=None),
        fields.mapping("node_names", default={}),
    ),
    extra=True,
)
CRIM_ANSWER = Op(
    "crim answer",
    (
        fields.mapping("crim"),
        fields.mapping("hosts"),
        fields.mapping("instances"),
        fields.mapping("groups"),
        fields.text("master"),
        fields.integer("seq", 0, 2**63 - 1),
        fields.mapping("running", default={}),
    ),
    extra=True,
)


def checked(op: Op, answer: object) -> dict[str, Any]:
    """``answer`` with the fields of ``op`` checked; BadAnswer naming what is wrong."""
    if not isinstance(answer, dict):
        raise BadAnswer(f"the node daemon's {op.name} is not an object")
    try:
        return op.check(answer)
    except BadField as e:
        raise BadAnswer(f"the node daemon's {e}") from None


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn a shape the view did not expect deeper in an answer into BadAnswer."""
    try:
        yield
    except KeyError as e:
        raise BadAnswer(f"the node daemon's {what} lacks the field {e}") from None
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError, OSError) as e:
        raise BadAnswer(f"the node daemon's {what} has a field of the wrong type: {e}") from None


def _operator(args: argparse.Namespace) -> int:
    answer = _client(args).request("operator", action=args.action, target=args.target)
    answer = checked(OPERATOR_ANSWER, answer)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        verdict = "refused" if answer["refused"] else "done"
        print(f"{args.action} {args.target}: {verdict}: {answer['reason']}")
    return 1 if answer["refused"] else 0


def _history(args: argparse.Namespace) -> int:
    answer = _client(args).request("history", limit=args.limit)
    entries = answer.get("history")
    if not isinstance(entries, list):
        raise BadAnswer("the node daemon's history answer has no list of entries")
    entries = [checked(HISTORY_ENTRY, e) for e in entries]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    with reading("history answer"):
        lasted = outage_lengths(entries)
        lines = [_history_line(e, lasted.get(i)) for i, e in enumerate(entries)]
    for line in lines:
        print(line)
    return 0


def outage_lengths(entries: list[dict[str, Any]]) -> dict[int, float]:
    """Index of each ServiceRestored entry -> seconds since the ServiceOutage of its instance
    that came before it in ``entries``. Both are dated by the CRIM in wall-clock time."""
    since: dict[object, float] = {}
    out: dict[int, float] = {}
    for i, e in enumerate(entries):
        note, instance = e.get("note"), e.get("instance")
        if note == "ServiceOutage":
            since[instance] = e["at"]
        elif note == "ServiceRestored" and instance in since:
            out[i] = e["at"] - since.pop(instance)
    return out


def _history_line(e: dict[str, Any], lasted: float | None = None) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(e["at"])) + f".{int(e['at'] * 1000) % 1000:03d}"
    if "note" in e:
        rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("seq", "at", "note"))
        if lasted is not None:
            rest += f", outage lasted {lasted:.3f} s"
        return f"{when}  #{e['seq']:<5} {e['note']}: {rest}"
    flag = " (refused)" if e.get("refused") else ""
    return f"{when}  #{e['seq']:<5} {e['reason']}{flag}"


def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    status = checked(STATUS_ANSWER, client.request("status"))
    crim = checked(CRIM_ANSWER, client.request("crim"))
    if args.json:
        print(json.dumps({"cluster": status, "availability": crim}, indent=2, default=str))
        return 0
    with reading("status or crim answer"):
        view = render_status(status, crim)
    print(view)
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
