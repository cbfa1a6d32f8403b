"""Actions the CRIM asks its executor to carry out, in order, and the decision holding them."""

from __future__ import annotations

from dataclasses import dataclass

from haos.cluster.crim.state import CrimState
from haos.model.reports import Notification, RecoveryLevel
from haos.model.states import AvailabilityState


@dataclass(frozen=True)
class AssignRole:
    """Tell ``component`` its new availability state and the instances it serves in it.

    ``old == new`` re-asserts a role (after a restart in place, or a changed instance set).
    ``graceful`` asks the component to quiesce first (planned switchover, lock).
    """

    component: str
    old: AvailabilityState
    new: AvailabilityState
    instances: tuple[str, ...]
    graceful: bool = False


@dataclass(frozen=True)
class RecoverComponent:
    """Soft-reset or kill-and-restart ``component`` in place."""

    component: str
    level: RecoveryLevel


@dataclass(frozen=True)
class TakeOffline:
    """Stop ``component`` (its roles have already been removed)."""

    component: str
    reason: str


@dataclass(frozen=True)
class Repair:
    """Start an off-line component again so that it can come back as a spare."""

    component: str


@dataclass(frozen=True)
class RebootNode:
    node: str
    reason: str


@dataclass(frozen=True)
class Publish:
    notification: Notification


Action = AssignRole | RecoverComponent | TakeOffline | Repair | RebootNode | Publish


@dataclass(frozen=True)
class Decision:
    """The outcome of one event: the next state, the actions in order, and why."""

    state: CrimState
    actions: tuple[Action, ...]
    reason: str
    refused: bool = False  # the event was invalid or not allowed; nothing changed
