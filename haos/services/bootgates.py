"""The cluster's two boot gates, as one node's cluster daemon sees them.

A release on trial is committed only after the whole cluster has proven it (see
:mod:`haos.bootctl.policy`): the boot commit asks this node's cluster daemon for the gates
(the ``boot_gates`` control request) and gives the boot policy ``ClusterRejoined`` and
``ClusterProven`` when they hold.

* **Rejoined**: the node is back in the cluster with its daemons ready: its repository holds
  the cluster's state, its partition is quorate, it is an admitted member, it has the current
  master's full desired state for its components, and (when it hosts components) its node
  agent follows it.
* **Proven**: rejoined, and every component of the node runs as the availability service
  assigned it -- none out of service (desired offline), none failed -- and this held without a
  break for ``soak`` seconds. A node with a component held offline (locked, or out of service
  after failures) does not prove a release: bring it back, or mark the release good by hand.

Pure: the daemon reads a :class:`NodeView` and calls :meth:`ProvingGates.observe` with its
monotonic clock; the soak restarts whenever an observation breaks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from haos.clock import MonoTime
from haos.model.states import AvailabilityState

FAILED = "failed"


@dataclass(frozen=True)
class NodeView:
    """What the cluster daemon sees of its own node, read at one moment."""

    ready: bool  # the repository holds the cluster's state
    quorate: bool
    member: bool  # admitted in the membership service's view
    orders_synced: bool  # has the current master's full desired state
    agent: bool  # a node agent follows this node's orders
    roles: Mapping[str, AvailabilityState]  # desired, per local component
    running: Mapping[str, str]  # what the agent says each runs as


@dataclass(frozen=True)
class GateReport:
    rejoined: bool
    proven: bool
    healthy_for: float  # seconds the node has been rejoined and healthy without a break
    soak: float
    why: str  # what is missing, in words ("" when proven)

    def to_json(self) -> dict[str, Any]:
        return {
            "rejoined": self.rejoined,
            "proven": self.proven,
            "healthy_for": round(self.healthy_for, 3),
            "soak": self.soak,
            "why": self.why,
        }


def not_rejoined(view: NodeView) -> list[str]:
    """What keeps the node from counting as rejoined (empty: it has)."""
    missing = []
    if not view.ready:
        missing.append("the repository is not in sync")
    if not view.quorate:
        missing.append("no quorum")
    if not view.member:
        missing.append("not an admitted member")
    if not view.orders_synced:
        missing.append("no desired state from the master yet")
    if view.roles and not view.agent:
        missing.append("no node agent follows the orders")
    return missing


def not_healthy(view: NodeView) -> list[str]:
    """The local components that do not run as assigned (empty: all do)."""
    missing = []
    for comp, role in sorted(view.roles.items()):
        said = view.running.get(comp)
        if role is AvailabilityState.OFFLINE:
            missing.append(f"{comp} is out of service")
        elif said == FAILED:
            missing.append(f"{comp} failed")
        elif said != role.value:
            missing.append(f"{comp} runs as {said or 'nothing known'}, assigned {role.value}")
    return missing


class ProvingGates:
    """Tracks how long the node has been rejoined and healthy (see the module docstring)."""

    def __init__(self, soak: float) -> None:
        self.soak = soak
        self._since: MonoTime | None = None

    def observe(self, view: NodeView, now: MonoTime) -> GateReport:
        gaps = not_rejoined(view)
        rejoined = not gaps
        if rejoined:
            gaps = not_healthy(view)
        if gaps:
            self._since = None
            return GateReport(rejoined, False, 0.0, self.soak, "; ".join(gaps))
        if self._since is None:
            self._since = now
        healthy_for = now - self._since
        proven = healthy_for >= self.soak
        why = "" if proven else f"healthy for {healthy_for:.0f} of {self.soak:g} s"
        return GateReport(True, proven, healthy_for, self.soak, why)
