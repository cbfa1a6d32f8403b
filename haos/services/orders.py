"""Orders: what the CRIM's decisions ask of one node, and their wire form (JSON objects).

Pure: no I/O. The master's dispatcher turns each decision's actions into orders for the node
that hosts each component (:func:`orders_for`); a node's agent carries them out. A role order
is *level-triggered* — it names the state the component must be in, so sending it twice is
harmless and a full set of them (:func:`desired_roles`) brings a node that missed orders (a
restarted agent or cluster daemon, a new master after a take-over) back in line. The other
orders are one-shot.

Everything read from the wire goes through :func:`order_from_json` /
:func:`report_from_json`, which raise :class:`~haos.errors.UsageError` naming the bad field;
nothing of a bad message is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from haos.cluster.crim.actions import (
    AssignRole,
    Decision,
    Publish,
    RebootNode,
    RecoverComponent,
    Repair,
    TakeOffline,
)
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.errors import UsageError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState


@dataclass(frozen=True)
class RoleOrder:
    component: str
    state: AvailabilityState
    graceful: bool = False
    seq: int = 0


@dataclass(frozen=True)
class RecoverOrder:
    component: str
    level: RecoveryLevel
    seq: int = 0


@dataclass(frozen=True)
class StopOrder:
    """Take the component off-line (stop its process)."""

    component: str
    reason: str = ""
    seq: int = 0


@dataclass(frozen=True)
class StartOrder:
    """Start an off-line component again (the CRIM's Repair)."""

    component: str
    seq: int = 0


@dataclass(frozen=True)
class RebootOrder:
    node: str
    reason: str = ""
    seq: int = 0


Order = RoleOrder | RecoverOrder | StopOrder | StartOrder | RebootOrder


def orders_for(topo: Topology, seq: int, decision: Decision) -> dict[str, list[Order]]:
    """The decision's actions as orders, per hosting node, in the decision's order.

    Components that no node hosts (chassis, slots) get none; notifications are not orders.
    """
    out: dict[str, list[Order]] = {}

    def add(node: str | None, order: Order) -> None:
        if node is not None:
            out.setdefault(node, []).append(order)

    for a in decision.actions:
        if isinstance(a, AssignRole):
            add(topo.host_of.get(a.component), RoleOrder(a.component, a.new, a.graceful, seq))
        elif isinstance(a, RecoverComponent):
            if a.level <= RecoveryLevel.RESTART:
                add(topo.host_of.get(a.component), RecoverOrder(a.component, a.level, seq))
        elif isinstance(a, TakeOffline):
            add(topo.host_of.get(a.component), StopOrder(a.component, a.reason, seq))
        elif isinstance(a, Repair):
            add(topo.host_of.get(a.component), StartOrder(a.component, seq))
        elif isinstance(a, RebootNode):
            add(a.node, RebootOrder(a.node, a.reason, seq))
    return out


def notes_of(seq: int, at: float, decision: Decision) -> list[dict[str, Any]]:
    """The decision and its notifications as JSON objects, for every node's history."""
    out: list[dict[str, Any]] = [
        {"seq": seq, "at": at, "reason": decision.reason, "refused": decision.refused}
    ]
    for a in decision.actions:
        if isinstance(a, Publish):
            fields = {k: _plain(v) for k, v in vars(a.notification).items()}
            out.append({"seq": seq, "at": at, "note": type(a.notification).__name__, **fields})
    return out


def _plain(value: object) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def desired_roles(topo: Topology, crim: CrimState, node: str) -> dict[str, AvailabilityState]:
    """The state every component hosted on ``node`` must be in, per the CRIM."""
    return {c: crim.components[c].state for c in topo.hosted.get(node, ()) if c in crim.components}


# ------------------------------------------------------------------------------ wire form


def order_to_json(order: Order) -> dict[str, Any]:
    if isinstance(order, RoleOrder):
        return {
            "kind": "role",
            "component": order.component,
            "state": order.state.value,
            "graceful": order.graceful,
            "seq": order.seq,
        }
    if isinstance(order, RecoverOrder):
        return {
            "kind": "recover",
            "component": order.component,
            "level": str(order.level),
            "seq": order.seq,
        }
    if isinstance(order, StopOrder):
        return {
            "kind": "stop",
            "component": order.component,
            "reason": order.reason,
            "seq": order.seq,
        }
    if isinstance(order, StartOrder):
        return {"kind": "start", "component": order.component, "seq": order.seq}
    return {"kind": "reboot", "node": order.node, "reason": order.reason, "seq": order.seq}


def _field(obj: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    if name not in obj:
        raise UsageError(f"{what}: missing field {name!r}")
    value = obj[name]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise UsageError(f"{what}: field {name!r} must be {kind.__name__}, got {value!r}")
    return value


def _level(text: str, what: str) -> RecoveryLevel:
    for level in RecoveryLevel:
        if str(level) == text:
            return level
    raise UsageError(f"{what}: unknown recovery level {text!r}")


def _state(text: str, what: str) -> AvailabilityState:
    try:
        return AvailabilityState(text)
    except ValueError:
        raise UsageError(f"{what}: unknown availability state {text!r}") from None


def order_from_json(obj: object) -> Order:
    if not isinstance(obj, Mapping):
        raise UsageError(f"order: expected an object, got {obj!r}")
    kind = _field(obj, "kind", str, "order")
    what = f"{kind} order"
    seq = _field(obj, "seq", int, what) if "seq" in obj else 0
    if kind == "reboot":
        return RebootOrder(_field(obj, "node", str, what), str(obj.get("reason", "")), seq)
    component = _field(obj, "component", str, what)
    if kind == "role":
        graceful = bool(_field(obj, "graceful", bool, what)) if "graceful" in obj else False
        return RoleOrder(component, _state(_field(obj, "state", str, what), what), graceful, seq)
    if kind == "recover":
        level = _level(_field(obj, "level", str, what), what)
        if level > RecoveryLevel.RESTART:
            raise UsageError(f"{what}: {level} is not carried out by a node")
        return RecoverOrder(component, level, seq)
    if kind == "stop":
        return StopOrder(component, str(obj.get("reason", "")), seq)
    if kind == "start":
        return StartOrder(component, seq)
    raise UsageError(f"order: unknown kind {kind!r}")


def roles_from_json(obj: object) -> dict[str, AvailabilityState]:
    if not isinstance(obj, Mapping):
        raise UsageError(f"roles: expected an object, got {obj!r}")
    out = {}
    for comp, state in obj.items():
        if not isinstance(comp, str) or not isinstance(state, str):
            raise UsageError(f"roles: bad entry {comp!r}: {state!r}")
        out[comp] = _state(state, f"roles of {comp}")
    return out


def report_to_json(report: ErrorReport) -> dict[str, Any]:
    return {
        "component": report.component,
        "kind": report.kind.value,
        "observed_at": report.observed_at,
        "source": report.source,
        "detail": report.detail,
        "recommended": None if report.recommended is None else str(report.recommended),
    }


def report_from_json(obj: object) -> ErrorReport:
    what = "error report"
    if not isinstance(obj, Mapping):
        raise UsageError(f"{what}: expected an object, got {obj!r}")
    kind_text = _field(obj, "kind", str, what)
    try:
        kind = ErrorKind(kind_text)
    except ValueError:
        raise UsageError(f"{what}: unknown kind {kind_text!r}") from None
    observed = obj.get("observed_at")
    if isinstance(observed, bool) or not isinstance(observed, int | float):
        raise UsageError(f"{what}: field 'observed_at' must be a number, got {observed!r}")
    rec = obj.get("recommended")
    if rec is not None and not isinstance(rec, str):
        raise UsageError(f"{what}: field 'recommended' must be a level name, got {rec!r}")
    return ErrorReport(
        _field(obj, "component", str, what),
        kind,
        float(observed),
        str(obj.get("source", "")),
        str(obj.get("detail", "")),
        None if rec is None else _level(rec, what),
    )
