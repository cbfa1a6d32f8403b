"""Availability states of a component and the transitions allowed between them.

The four states and their transitions are those of FIG 5 of the design: a component that
is primary can never become secondary directly (a switchover passes through spare).
"""

from __future__ import annotations

import enum

from haos.errors import IllegalTransition


class AvailabilityState(enum.Enum):
    OFFLINE = "offline"
    SPARE = "spare"
    SECONDARY = "secondary"
    PRIMARY = "primary"

    def __str__(self) -> str:
        return self.value


_O, _S, _SEC, _P = (
    AvailabilityState.OFFLINE,
    AvailabilityState.SPARE,
    AvailabilityState.SECONDARY,
    AvailabilityState.PRIMARY,
)

TRANSITIONS: dict[AvailabilityState, frozenset[AvailabilityState]] = {
    _O: frozenset({_S, _SEC, _P}),
    _S: frozenset({_O, _SEC, _P}),
    _SEC: frozenset({_P, _S, _O}),
    _P: frozenset({_S, _O}),
}


def is_legal(old: AvailabilityState, new: AvailabilityState) -> bool:
    """True when ``old -> new`` is a transition of FIG 5 (staying put is not a transition)."""
    return new in TRANSITIONS[old]


def check_transition(component: str, old: AvailabilityState, new: AvailabilityState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is allowed."""
    if not is_legal(old, new):
        raise IllegalTransition(f"{component}: {old} -> {new} is not an allowed transition")


class AdminState(enum.Enum):
    """Operator's administrative intent for a component, node or service group."""

    UNLOCKED = "unlocked"
    LOCKED = "locked"

    def __str__(self) -> str:
        return self.value
