"""The CRIM's state as JSON-safe data, so a hot standby can take over from a checkpoint.

``to_data`` / ``from_data`` round-trip a :class:`CrimState` exactly. Fields added since
format 1 (a component's ``failures`` and ``why``, a group's fail-over nodes, the ``reboot``
under way) are read with their defaults when absent, so a standby still reads an older
master's checkpoint. ``from_data`` checks the
data against the topology (unknown components, nodes or groups, bad enums or numbers) and
raises :class:`~haos.errors.ModelError` naming what is wrong; nothing half-read is returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from haos.cluster.crim.state import (
    ComponentRuntime,
    CrimState,
    Failover,
    GroupRuntime,
    Health,
    NodeRuntime,
    OfflineBy,
    Reboot,
    Recovery,
)
from haos.cluster.crim.topology import Topology
from haos.errors import ModelError
from haos.model.reports import RecoveryLevel
from haos.model.states import AdminState, AvailabilityState

FORMAT = 1


def to_data(state: CrimState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "components": {c: _component(rt) for c, rt in sorted(state.components.items())},
        "nodes": {
            n: {"member": rt.member, "admin": rt.admin.value} for n, rt in state.nodes.items()
        },
        "groups": {
            g: {"admin": rt.admin.value, "failovers": [[f.at, f.node] for f in rt.failovers]}
            for g, rt in state.groups.items()
        },
        "outages": dict(state.outages),
        "served": sorted(state.served),
        "reboot": _reboot(state.reboot),
    }


def _reboot(reboot: Reboot | None) -> dict[str, Any] | None:
    if reboot is None:
        return None
    return {"node": reboot.node, "at": reboot.at, "reason": reboot.reason}


def _component(rt: ComponentRuntime) -> dict[str, Any]:
    rec = rt.recovery
    return {
        "state": rt.state.value,
        "health": rt.health.value,
        "admin": rt.admin.value,
        "offline_by": rt.offline_by.value if rt.offline_by else None,
        "instances": sorted(rt.instances),
        "recovery": [int(rec.level), rec.started, rec.deadline] if rec else None,
        "soft_resets": list(rt.soft_resets),
        "restarts": list(rt.restarts),
        "failures": list(rt.failures),
        "why": rt.why,
    }


def from_data(topo: Topology, data: Mapping[str, Any]) -> CrimState:
    try:
        return _read(topo, data)
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"malformed CRIM snapshot: {type(e).__name__}: {e}") from e


def _read(topo: Topology, data: Mapping[str, Any]) -> CrimState:
    if data.get("format") != FORMAT:
        raise ModelError(f"CRIM snapshot format {data.get('format')!r} is not {FORMAT}")
    comps = data["components"]
    _same_keys("components", comps, {c.name for c in topo.tree})
    _same_keys("nodes", data["nodes"], set(topo.nodes))
    _same_keys("groups", data["groups"], set(topo.groups))
    components = {name: _read_component(topo, name, raw) for name, raw in comps.items()}
    nodes = {
        n: NodeRuntime(bool(raw["member"]), AdminState(raw["admin"]))
        for n, raw in data["nodes"].items()
    }
    groups = {
        g: GroupRuntime(AdminState(raw["admin"]), tuple(_failover(f) for f in raw["failovers"]))
        for g, raw in data["groups"].items()
    }
    reboot = _read_reboot(topo, data.get("reboot"))
    outages = {str(i): float(t) for i, t in data["outages"].items()}
    served = frozenset(str(i) for i in data["served"])
    unknown = (set(outages) | served) - set(topo.instances)
    if unknown:
        raise ModelError(f"CRIM snapshot names unknown instances: {', '.join(sorted(unknown))}")
    return CrimState(
        components=MappingProxyType(components),
        nodes=MappingProxyType(nodes),
        groups=MappingProxyType(groups),
        outages=MappingProxyType(outages),
        served=served,
        reboot=reboot,
    )


def _failover(raw: Any) -> Failover:
    if isinstance(raw, list | tuple):
        at, node = raw
        return Failover(float(at), str(node))
    return Failover(float(raw))  # format 1 before fail-overs named their node


def _read_reboot(topo: Topology, raw: Any) -> Reboot | None:
    if raw is None:
        return None
    node = str(raw["node"])
    if node not in topo.nodes:
        raise ModelError(f"CRIM snapshot: the reboot under way is of unknown node {node!r}")
    return Reboot(node, float(raw["at"]), str(raw.get("reason", "")))


def _same_keys(what: str, raw: Mapping[str, Any], expected: set[str]) -> None:
    got = set(raw)
    if got != expected:
        extra, missing = sorted(got - expected), sorted(expected - got)
        raise ModelError(
            f"CRIM snapshot {what} do not match the configuration"
            f" (unknown: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})"
        )


def _read_component(topo: Topology, name: str, raw: Mapping[str, Any]) -> ComponentRuntime:
    instances = frozenset(str(i) for i in raw["instances"])
    bad = instances - set(topo.instances)
    if bad:
        raise ModelError(f"CRIM snapshot: {name} serves unknown instances {sorted(bad)}")
    rec = raw["recovery"]
    recovery = Recovery(RecoveryLevel(rec[0]), float(rec[1]), float(rec[2])) if rec else None
    return ComponentRuntime(
        state=AvailabilityState(raw["state"]),
        health=Health(raw["health"]),
        admin=AdminState(raw["admin"]),
        offline_by=OfflineBy(raw["offline_by"]) if raw["offline_by"] else None,
        instances=instances,
        recovery=recovery,
        soft_resets=tuple(float(t) for t in raw["soft_resets"]),
        restarts=tuple(float(t) for t in raw["restarts"]),
        failures=tuple(float(t) for t in raw.get("failures", ())),
        why=str(raw.get("why", "")),
    )
