"""The boot loader adapter contract, its in-memory fake, and the executor of decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from haos.bootctl import firmware
from haos.bootctl.model import BootSnapshot, SlotState
from haos.bootctl.policy import (
    Bless,
    Decision,
    MarkBad,
    Reboot,
    SetDefault,
    SetOneshot,
    SetTrial,
    WriteEntry,
)
from haos.errors import ConflictError

LoaderAction = Bless | SetDefault | SetTrial | SetOneshot | WriteEntry | MarkBad


class BootLoader(Protocol):
    """The boot loader as the policy sees it.

    ``read()`` returns one consistent snapshot; it raises ``ConfigError`` naming the file for a
    malformed entry and ``UnavailableError`` when the ESP or the variables cannot be read.

    ``apply(action)`` carries out one action. Each is atomic (after a crash the old or the new
    state, never a mix) and idempotent (applying it twice is applying it once). It raises
    ``ConflictError`` when the loader's current state does not allow it (see
    :func:`check_action`): the policy decided on a snapshot that has since changed.
    """

    def read(self) -> BootSnapshot: ...

    def apply(self, action: LoaderAction) -> None: ...


def check_action(snap: BootSnapshot, action: LoaderAction) -> None:
    """Refuse, as a second line of defence, an action that would break the slot rules."""
    slot = action.slot
    info = snap.slot(slot)
    match action:
        case WriteEntry():
            if slot is snap.committed:
                raise ConflictError(f"slot {slot} holds the committed release; never overwritten")
            if slot is snap.booted:
                raise ConflictError(f"slot {slot} is running; it cannot be rewritten")
        case MarkBad():
            if slot is snap.committed:
                raise ConflictError(f"slot {slot} is the committed default; set another first")
        case SetDefault():
            if info.state is not SlotState.COMMITTED:
                raise ConflictError(f"slot {slot} is {info.state}; only a committed one is default")
        case SetTrial():
            if info.state is not SlotState.TRYING or not info.tries_left:
                raise ConflictError(f"slot {slot} has no tries left to try")
        case Bless() | SetOneshot():
            pass
    if not isinstance(action, WriteEntry) and info.state is SlotState.EMPTY:
        raise ConflictError(f"slot {slot} has no entry")


class ModelBootLoader:
    """A boot loader over the pure firmware model: the fake for unit tests and simulations."""

    def __init__(self, esp: firmware.Esp) -> None:
        self.esp = esp
        self.applied: list[LoaderAction] = []

    def read(self) -> BootSnapshot:
        return firmware.snapshot_of(self.esp)

    def apply(self, action: LoaderAction) -> None:
        check_action(self.read(), action)
        self.esp = firmware.apply(self.esp, action)
        self.applied.append(action)

    def power_on(self) -> str | None:
        """Boot once (what the firmware does); the entry booted, None if nothing could boot."""
        self.esp, chosen = firmware.power_on(self.esp)
        return chosen


def execute(loader: BootLoader, decision: Decision, reboot: Callable[[str], None]) -> None:
    """Carry out ``decision``'s actions in order; ``reboot(reason)`` for a Reboot."""
    for action in decision.actions:
        if isinstance(action, Reboot):
            reboot(action.reason)
        else:
            loader.apply(action)
