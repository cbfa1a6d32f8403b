"""The pure builder of the managed objects: the cluster daemon's answers in, a Snapshot out.

It reads the same answers ``haosctl status`` reads (the node daemon's ``status`` and the
active availability service's ``crim``) and the availability report ``haosctl report`` reads,
checked with the same field checks (:mod:`haos.cli.ops`); an answer that is not what the
protocol says is a :class:`~haos.services.control.BadAnswer` naming what is wrong. No I/O, no
clock: ``taken_at`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from haos.cli.events import RECORD
from haos.cli.ops import CRIM_ANSWER, HISTORY_ENTRY, STATUS_ANSWER, checked, reading, runs_as
from haos.mgmt.objects import (
    Cluster,
    Component,
    EventRecord,
    HistoryEntry,
    Node,
    ServiceGroup,
    ServiceInstance,
    Snapshot,
    revised,
)


def build(
    name: str,
    status: Mapping[str, Any],
    crim: Mapping[str, Any],
    report: Mapping[str, Any] | None,
    taken_at: float,
) -> Snapshot:
    """The snapshot of cluster ``name`` from a ``status`` answer, a ``crim`` answer and an
    ``availability`` answer (None: not to be had; the instances' statistics are then None)."""
    st = checked(STATUS_ANSWER, dict(status))
    cr = checked(CRIM_ANSWER, dict(crim))
    with reading("status, crim or availability answer"):
        ids = {int(k): str(v) for k, v in st["node_names"].items()}
        rows = {r["instance"]: r for r in report["instances"]} if report is not None else {}
        return Snapshot(
            cluster=revised(_cluster(name, st, cr, ids)),
            nodes=tuple(revised(n) for n in _nodes(st, cr, ids)),
            components=tuple(revised(c) for c in _components(cr)),
            groups=tuple(revised(g) for g in _groups(cr)),
            instances=tuple(revised(i) for i in _instances(cr, rows)),
            taken_at=taken_at,
        )


def _node_name(node_id: int | None, ids: Mapping[int, str]) -> str | None:
    return None if node_id is None else ids.get(node_id, str(node_id))


def _cluster(name: str, st: dict[str, Any], cr: dict[str, Any], ids: dict[int, str]) -> Cluster:
    epoch = cr.get("epoch")
    return Cluster(
        name=name,
        node=str(st.get("node", "")),
        quorate=st["quorate"],
        master=_node_name(st["master"], ids),
        vice_master=_node_name(st["vice_master"], ids),
        availability_master=cr["master"],
        decision=cr["seq"],
        epoch=int(epoch) if epoch is not None else None,
    )


def _nodes(st: dict[str, Any], cr: dict[str, Any], ids: dict[int, str]) -> list[Node]:
    by_name = {n: i for i, n in ids.items()}
    master, vice = _node_name(st["master"], ids), _node_name(st["vice_master"], ids)
    return [
        Node(
            name=node,
            node_id=by_name.get(node),
            member=bool(rt["member"]),
            master=node == master,
            vice_master=node == vice,
            admin=str(rt["admin"]),
        )
        for node, rt in sorted(cr["crim"]["nodes"].items())
    ]


def _components(cr: dict[str, Any]) -> list[Component]:
    hosts: dict[str, str] = cr["hosts"]
    running = cr.get("running") or {}
    out = []
    for comp, rt in sorted(cr["crim"]["components"].items()):
        node = hosts.get(comp)
        if node is None:
            continue  # hardware above the nodes (shelves, slots): no agent runs it
        why = rt.get("why")
        out.append(
            Component(
                name=comp,
                node=node,
                state=str(rt["state"]),
                runs_as=runs_as(running, node, comp),
                health=str(rt["health"]),
                admin=str(rt["admin"]),
                why=None if why is None else str(why),
                restarts=len(rt.get("restarts") or ()),
                instances=tuple(str(i) for i in rt.get("instances") or ()),
            )
        )
    return out


def _groups(cr: dict[str, Any]) -> list[ServiceGroup]:
    runtime = cr["crim"].get("groups") or {}
    out = []
    for group, spec in sorted(cr["groups"].items()):
        rt = runtime.get(group) or {}
        out.append(
            ServiceGroup(
                name=group,
                redundancy=str(spec["redundancy"]),
                members=tuple(str(m) for m in spec["members"]),
                admin=str(rt.get("admin", "unlocked")),
                recent_failovers=len(rt.get("failovers") or ()),
            )
        )
    return out


def _instances(cr: dict[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> list[ServiceInstance]:
    out = []
    for si, info in sorted(cr["instances"].items()):
        row = rows.get(si)
        since = info.get("outage_since")
        out.append(
            ServiceInstance(
                name=si,
                group=str(info["group"]),
                served=bool(info["served"]),
                assigned=bool(info.get("assigned", info["served"])),
                primaries=tuple(str(c) for c in info["primary"]),
                secondaries=tuple(str(c) for c in info["secondary"]),
                outage_since=None if since is None else float(since),
                failovers=None if row is None else int(row["incidents"]),
                outage_ms=None if row is None else float(row["outage_ms"]),
                availability=None if row is None else float(row["availability"]),
            )
        )
    return out


def history_entry(raw: object) -> HistoryEntry:
    """One entry of the ``history`` answer: a decision (``reason``) or a notification
    (``note``); BadAnswer naming what is wrong."""
    e = checked(HISTORY_ENTRY, raw)
    details = {k: v for k, v in e.items() if k not in ("seq", "at", "reason", "note", "refused")}
    text = e.get("note", e.get("reason", ""))
    return HistoryEntry(
        seq=e["seq"], at=e["at"], text=str(text), refused=e.get("refused") is True, details=details
    )


def event_record(raw: object) -> EventRecord:
    """One record of the ``events`` stream (``cluster: true``); BadAnswer naming what is
    wrong."""
    r = checked(RECORD, raw)
    details = r.get("details")
    return EventRecord(
        seq=r["seq"],
        at=r["at"],
        kind=r["kind"],
        subject=r["subject"],
        text=r["text"],
        details=dict(details) if isinstance(details, dict) else {},
    )
