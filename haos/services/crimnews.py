"""What one CRIM decision tells the cluster: its event records (see the record module
:mod:`haos.cluster.dss.events.record`).

Pure: the decision, the event it decided and the decision's number, epoch and time in;
records out, in this order: the node event or the operator command's outcome the decision
answered, then per action the role changes (a role re-asserted unchanged is no news),
recoveries (restart, fail-over, reboot of a node, taken out of service, repair) and the
instances no longer or again served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import (
    Action,
    AssignRole,
    Decision,
    Publish,
    RebootNode,
    Repair,
)
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.events.record import Record
from haos.model.reports import (
    ComponentMisconfigured,
    ComponentOutOfService,
    RecoveryInitiated,
    ServiceOutage,
    ServiceRestored,
)

OPERATOR: dict[type, str] = {
    ev.OperatorLock: "lock",
    ev.OperatorUnlock: "unlock",
    ev.OperatorOffline: "offline",
    ev.OperatorOnline: "online",
    ev.OperatorSwitchover: "switchover",
}

Item = tuple[str, str, str, dict[str, Any]]  # kind, subject, text, details


def news_of(
    topo: Topology, event: ev.Event, decision: Decision, *, seq: int, epoch: int, at: float
) -> list[Record]:
    """The records of ``decision`` (number ``seq`` of mastership ``epoch``, made at ``at``)."""
    items = [*_answered(event, decision)]
    for action in decision.actions:
        items += _of_action(topo, action)
    return [
        Record(epoch, seq, i, at, kind, subject, text, details)
        for i, (kind, subject, text, details) in enumerate(items)
    ]


def _answered(event: ev.Event, decision: Decision) -> Iterator[Item]:
    if isinstance(event, ev.NodeJoined):
        yield "node", event.node, f"node {event.node} joined", {"change": "joined"}
    elif isinstance(event, ev.NodeLeft):
        # The membership service counts a node out only once it is fenced (or left cleanly).
        details: dict[str, Any] = {"change": "left", "how": event.how or "unknown"}
        if event.at is not None:
            details["last_seen"] = float(event.at)
        yield (
            "node",
            event.node,
            f"node {event.node} left ({event.how or 'fenced or stopped'})",
            details,
        )
    elif (action := OPERATOR.get(type(event))) is not None:
        target = getattr(event, "target", None) or getattr(event, "component", "")
        outcome = "refused" if decision.refused else "done"
        why = decision.reason.removeprefix("refused: ")
        text = f"operator {action} {target}: {outcome}: {why}"
        yield (
            "operator",
            str(target),
            text,
            {
                "action": action,
                "outcome": outcome,
                "reason": decision.reason,
            },
        )


def _of_action(topo: Topology, action: Action) -> list[Item]:
    if isinstance(action, AssignRole):
        if action.old is action.new:
            return []
        node = topo.host_of.get(action.component) or "-"
        instances = list(action.instances)
        serves = f" for {', '.join(instances)}" if instances else ""
        how = ", gracefully" if action.graceful else ""
        text = f"{action.component} now {action.new}{serves} (was {action.old}{how}) on {node}"
        details = {
            "old": str(action.old),
            "new": str(action.new),
            "instances": instances,
            "graceful": action.graceful,
            "node": node,
        }
        return [("role", action.component, text, details)]
    if isinstance(action, RebootNode):
        text = f"node {action.node} to be rebooted: {action.reason}"
        return [("recovery", action.node, text, {"level": "reboot-node", "reason": action.reason})]
    if isinstance(action, Repair):
        text = f"{action.component} started again (repair)"
        return [("recovery", action.component, text, {"level": "repair"})]
    if isinstance(action, Publish):
        return _of_notification(action)
    return []


def _of_notification(action: Publish) -> list[Item]:
    note = action.notification
    if isinstance(note, RecoveryInitiated):
        why = f": {note.reason}" if note.reason else ""
        text = f"{note.component}: recovery {note.level}{why}"
        details = {"level": str(note.level), "reason": note.reason}
        return [("recovery", note.component, text, details)]
    if isinstance(note, ComponentOutOfService):
        text = f"{note.component} out of service: {note.reason}"
        return [
            ("recovery", note.component, text, {"level": "out-of-service", "reason": note.reason})
        ]
    if isinstance(note, ComponentMisconfigured):
        stopped = list(note.stopped)
        text = f"{note.component} misconfigured: {note.detail}; stopped {', '.join(stopped) or '-'}"
        alarm = {"level": "misconfigured", "reason": note.detail, "stopped": stopped}
        return [("recovery", note.component, text, alarm)]
    if isinstance(note, ServiceOutage):
        text = f"{note.instance} not served since {note.at:.3f}: {note.cause or 'no primary'}"
        return [("outage", note.instance, text, {"since": note.at, "cause": note.cause})]
    if isinstance(note, ServiceRestored):
        by = list(note.by)
        text = f"{note.instance} served again by {', '.join(by) or '-'}"
        return [("restored", note.instance, text, {"by": by})]
    return []  # StateChanged: said by the role record of the same change
