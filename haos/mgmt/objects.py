"""The managed objects: one typed, frozen model of the live cluster.

A :class:`Snapshot` holds the cluster, its nodes, components, service groups and service
instances as the node's cluster daemon and the active availability service describe them at
one moment (:mod:`haos.mgmt.build` makes it from their answers). Every adapter of the
management daemon renders a snapshot: the REST API (:mod:`haos.mgmt.api`) and ``/metrics``
(:mod:`haos.mgmt.metrics`). Alarms and operation locks, when they come, are objects of the
same kind: a frozen record with a ``name`` and a ``revision``.

Each object carries a ``revision``: a digest of its state (statistics that change by the
second, like the outage time of an instance not served, are left out), the ETag of the REST
API. A write that names a revision the object no longer has is refused (optimistic
concurrency).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Fields that are statistics, not state: a revision does not change when only they do.
STATISTICS = frozenset({"revision", "outage_ms", "availability"})


def revision_of(obj: Any) -> str:
    """The digest of ``obj``'s state (a dataclass): what its ``revision`` is."""
    fields = dataclasses.fields(obj)
    state = {f.name: getattr(obj, f.name) for f in fields if f.name not in STATISTICS}
    text = json.dumps(state, sort_keys=True, default=list, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def revised(obj: Any) -> Any:
    """``obj`` with its ``revision`` set to the digest of its state."""
    return dataclasses.replace(obj, revision=revision_of(obj))


@dataclass(frozen=True)
class Cluster:
    """The cluster as this node sees it, with the availability service's decision number."""

    name: str
    node: str  # the node whose daemons answered
    quorate: bool
    master: str | None
    vice_master: str | None
    availability_master: str  # where the active availability service runs
    decision: int  # the availability service's decision number
    epoch: int | None  # its mastership epoch
    revision: str = ""


@dataclass(frozen=True)
class Node:
    name: str
    node_id: int | None
    member: bool
    master: bool
    vice_master: bool
    admin: str  # locked | unlocked
    revision: str = ""


@dataclass(frozen=True)
class Component:
    """A component run by a node agent (hardware above the nodes is not listed)."""

    name: str
    node: str
    state: str  # offline | spare | secondary | primary
    runs_as: str  # what its node agent says it runs as: a state, failed, unknown or -
    health: str
    admin: str
    why: str | None  # why it is out of service
    restarts: int  # restarts within its probation window
    instances: tuple[str, ...] = ()
    revision: str = ""


@dataclass(frozen=True)
class ServiceGroup:
    name: str
    redundancy: str
    members: tuple[str, ...]
    admin: str
    recent_failovers: int  # fail-overs within the group's probation window
    revision: str = ""


@dataclass(frozen=True)
class ServiceInstance:
    """An instance; ``served`` only when each primary runs as primary."""

    name: str
    group: str
    served: bool
    assigned: bool  # the availability service assigned it a primary
    primaries: tuple[str, ...]
    secondaries: tuple[str, ...]
    outage_since: float | None
    # from the availability report (None when the report could not be had)
    failovers: int | None  # incidents: outages the availability service recovered
    outage_ms: float | None  # total outage time measured
    availability: float | None  # ratio, 0..1
    revision: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Every managed object at one moment (``taken_at``: wall-clock seconds)."""

    cluster: Cluster
    nodes: tuple[Node, ...]
    components: tuple[Component, ...]
    groups: tuple[ServiceGroup, ...]
    instances: tuple[ServiceInstance, ...]
    taken_at: float = 0.0


@dataclass(frozen=True)
class HistoryEntry:
    """One of the availability service's decisions or notifications (``haosctl history``)."""

    seq: int
    at: float
    text: str  # the decision's reason or the notification's name
    refused: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    """One of the cluster's events (``haosctl events``)."""

    seq: int
    at: float
    kind: str
    subject: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)
