"""Events the CRIM decides on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic

from haos.clock import Dated, MonoTime, WallTime, wall_of
from haos.model.reports import ErrorReport


@dataclass(frozen=True)
class ComponentAvailable:
    """A component is instantiated and ready for work (first start, restart, or repair)."""

    component: str


@dataclass(frozen=True)
class ErrorReported:
    report: ErrorReport


@dataclass(frozen=True)
class OfflineRequested:
    """The component itself asks to be taken off-line (e.g. to run diagnostics)."""

    component: str
    reason: str = ""


@dataclass(frozen=True)
class NodeJoined:
    node: str


@dataclass(frozen=True)
class NodeLeft(Generic[Dated]):
    """A node left the membership (and, on a real cluster, has been fenced).

    ``at`` is when it was last known alive, if known; outages are dated from it. The CMM
    publishes it on its node's monotonic clock (``NodeLeft[MonoTime]``); the CRIM decides it
    in wall-clock time (``NodeLeft``, i.e. ``NodeLeft[WallTime]``), converted by
    :meth:`on_wall_clock` where the one meets the other. ``how`` says what took it out, for
    the people reading the cluster's events: ``"fenced (off)"`` (with the fence action),
    ``"left cleanly"`` (it announced its leave and runs nothing), or ``""`` when not known.
    """

    node: str
    at: Dated | None = None
    how: str = field(default="", compare=False)  # descriptive: not part of the event's identity

    def on_wall_clock(
        self: NodeLeft[MonoTime], wall: WallTime, mono: MonoTime
    ) -> NodeLeft[WallTime]:
        """This event dated in wall-clock time, given a reading of each clock taken together."""
        at = None if self.at is None else wall_of(self.at, wall, mono)
        return NodeLeft(self.node, at, self.how)


@dataclass(frozen=True)
class OperatorLock:
    """Lock a component, node or service group: its work moves away, it stays instantiated."""

    target: str


@dataclass(frozen=True)
class OperatorUnlock:
    target: str


@dataclass(frozen=True)
class OperatorOffline:
    """Take a component off-line (stopped) until brought on-line again."""

    component: str


@dataclass(frozen=True)
class OperatorOnline:
    component: str


@dataclass(frozen=True)
class OperatorSwitchover:
    """Move the primary role of a service instance (or of a component) to its standby."""

    target: str


@dataclass(frozen=True)
class Tick:
    """Time passed: recovery deadlines may have expired."""


Event = (
    ComponentAvailable
    | ErrorReported
    | OfflineRequested
    | NodeJoined
    | NodeLeft
    | OperatorLock
    | OperatorUnlock
    | OperatorOffline
    | OperatorOnline
    | OperatorSwitchover
    | Tick
)
