"""What the boot policy sees: two root slots, the release in each and its boot-counting state.

A slot's state comes from its loader entry's file name (see :mod:`haos.bootctl.names`):

* ``committed``: no counter. The release booted and was blessed (proven) at least once.
* ``trying``: a counter with tries left, or the booted entry on its last try (systemd-boot has
  already renamed it to ``+0-N`` before starting it, so ``+0`` alone cannot tell "on its last
  try" from "given up"; being booted from it can).
* ``bad``: no tries left and not booted: systemd-boot will not pick it while anything else can
  boot.
* ``empty``: no entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Slot(StrEnum):
    A = "A"
    B = "B"

    @property
    def other(self) -> Slot:
        return Slot.B if self is Slot.A else Slot.A


class SlotState(StrEnum):
    COMMITTED = "committed"
    TRYING = "trying"
    BAD = "bad"
    EMPTY = "empty"


def slot_state(counter: tuple[int, int] | None, *, present: bool, booted: bool) -> SlotState:
    """The state of a slot from its entry's (tries left, tries done), or None without counter."""
    if not present:
        return SlotState.EMPTY
    if counter is None:
        return SlotState.COMMITTED
    left, _done = counter
    if left > 0 or booted:
        return SlotState.TRYING
    return SlotState.BAD


@dataclass(frozen=True)
class SlotInfo:
    """One slot. ``entry`` is the loader entry's current file name; counters only when counted."""

    slot: Slot
    state: SlotState
    release: str | None = None
    entry: str | None = None
    tries_left: int | None = None
    tries_done: int | None = None

    @property
    def bootable(self) -> bool:
        """Would systemd-boot choose it on its own (without it being the last resort)?"""
        if self.state is SlotState.COMMITTED:
            return True
        return self.state is SlotState.TRYING and (self.tries_left or 0) > 0

    def describe(self) -> str:
        rel = self.release or "-"
        if self.state is SlotState.TRYING:
            return f"{self.slot} {rel} trying (try {self.tries_done} of {self.total_tries})"
        return f"{self.slot} {rel} {self.state}"

    @property
    def total_tries(self) -> int:
        return (self.tries_left or 0) + (self.tries_done or 0)


@dataclass(frozen=True)
class BootSnapshot:
    """The boot loader's state as read once.

    * ``booted``: the slot this boot came from (``LoaderEntrySelected``), None if unknown.
    * ``default``: the slot systemd-boot will pick on the next boot without a one-shot.
    * ``fallback``: the slot ``loader.conf``'s ``default`` names (the committed default).
    * ``trial``: the slot ``LoaderEntryDefault`` runs a trial of (tries-left pattern), if any.
    * ``oneshot``: the slot ``LoaderEntryOneShot`` names for the next boot only, if any.
    """

    a: SlotInfo
    b: SlotInfo
    booted: Slot | None = None
    default: Slot | None = None
    fallback: Slot | None = None
    trial: Slot | None = None
    oneshot: Slot | None = None

    def __post_init__(self) -> None:
        if self.a.slot is not Slot.A or self.b.slot is not Slot.B:
            raise ValueError("BootSnapshot needs slot A's info in a and slot B's in b")

    @property
    def slots(self) -> tuple[SlotInfo, SlotInfo]:
        return (self.a, self.b)

    def slot(self, slot: Slot) -> SlotInfo:
        return self.a if slot is Slot.A else self.b

    @property
    def committed(self) -> Slot | None:
        """The committed release the node falls back to: never overwritten, never tried.

        When both slots hold committed releases, the one ``loader.conf`` names wins (the newer
        commit), else the one systemd-boot would boot.
        """
        candidates = [i.slot for i in self.slots if i.state is SlotState.COMMITTED]
        for preferred in (self.fallback, self.default):
            if preferred in candidates:
                return preferred
        return candidates[0] if candidates else None

    @property
    def problems(self) -> tuple[str, ...]:
        """What an operator must know: no committed release, nothing bootable, a stray default."""
        found = []
        if self.committed is None:
            found.append("no committed release: nothing to fall back to")
        if not any(i.bootable for i in self.slots):
            found.append("no slot is bootable")
        if self.committed is not None and self.fallback != self.committed:
            found.append(f"loader.conf's default does not name the committed slot {self.committed}")
        return tuple(found)
