"""A small pure model of what systemd-boot does with our ESP, for tests and for the snapshot.

:class:`Esp` is the part of the ESP and the EFI variables that decides what boots: the entry
file names (with the release each holds), ``loader.conf``'s ``default`` pattern, and the
``LoaderEntryDefault`` / ``LoaderEntryOneShot`` / ``LoaderEntrySelected`` variables.

* :func:`select` is systemd-boot's choice: the one-shot pattern, else ``LoaderEntryDefault``,
  else ``loader.conf``'s ``default``, else the first entry in its sort order (entries with no
  tries left last, then by id, newest version first). Patterns are globs over entry ids (file
  names in lower case); the first match in sort order wins.
* :func:`power_on` is one boot: select, consume the one-shot, count a try down (rename) and
  record ``LoaderEntrySelected`` (the id *before* the rename, as systemd-boot does).
* :func:`snapshot_of` turns an :class:`Esp` into the policy's :class:`BootSnapshot`; the real
  backend builds an :class:`Esp` from the directory and uses the same function.
* :func:`apply` carries out a policy action on the model, as the real backend does on disk.

Simplifications, on purpose: no ``sort-key``/``version`` ordering (haos writes neither, so
systemd-boot orders by id), no type #2 (UKI in ``/EFI/Linux``) or automatic entries, and an
entry whose kernel is missing is not modelled (systemd-boot would hide it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cmp_to_key

from haos.bootctl import names
from haos.bootctl.model import BootSnapshot, Slot, SlotInfo, slot_state
from haos.bootctl.policy import (
    Action,
    Bless,
    MarkBad,
    Reboot,
    SetDefault,
    SetOneshot,
    SetTrial,
    WriteEntry,
)

DEFAULT_PREFIX = "haos"


@dataclass(frozen=True)
class EspEntry:
    name: str
    release: str | None = None


@dataclass(frozen=True)
class Esp:
    entries: tuple[EspEntry, ...] = ()
    loader_default: str | None = None  # loader.conf "default"
    efi_default: str | None = None  # LoaderEntryDefault
    oneshot: str | None = None  # LoaderEntryOneShot
    selected: str | None = None  # LoaderEntrySelected: the id booted this time
    prefix: str = DEFAULT_PREFIX

    def entry(self, slot: Slot) -> EspEntry | None:
        found = [e for e in self.entries if names.slot_of(e.name, self.prefix) is slot]
        return found[0] if found else None


# --- systemd-boot's choice ---------------------------------------------------------------

_CHUNK = re.compile(r"(\d+)")


def _vercmp(a: str, b: str) -> int:
    """A version-aware comparison close enough to systemd's strverscmp_improved() for ids."""
    pa, pb = _CHUNK.split(a), _CHUNK.split(b)
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


def _compare(a: str, b: str) -> int:
    ca, cb = names.parse_counter(a), names.parse_counter(b)
    exhausted_a, exhausted_b = ca is not None and ca.left == 0, cb is not None and cb.left == 0
    if exhausted_a != exhausted_b:
        return 1 if exhausted_a else -1
    by_id = -_vercmp(names.entry_id(a), names.entry_id(b))
    if by_id or ca is None or cb is None:
        return by_id
    if ca.left != cb.left:
        return -1 if ca.left > cb.left else 1
    return (ca.done > cb.done) - (ca.done < cb.done)


def boot_order(entry_names: list[str] | tuple[str, ...]) -> list[str]:
    """Entry file names in systemd-boot's menu order."""
    return sorted(entry_names, key=cmp_to_key(_compare))


def _find(order: list[str], pattern: str | None) -> str | None:
    if not pattern:
        return None
    folded = pattern.lower()
    return next((n for n in order if fnmatchcase(names.entry_id(n), folded)), None)


def select(esp: Esp, *, oneshot: bool = True) -> str | None:
    """The entry file name systemd-boot boots next (None if there is none)."""
    order = boot_order([e.name for e in esp.entries])
    patterns = (esp.oneshot if oneshot else None, esp.efi_default, esp.loader_default)
    for pattern in patterns:
        found = _find(order, pattern)
        if found is not None:
            return found
    return order[0] if order else None


def power_on(esp: Esp) -> tuple[Esp, str | None]:
    """One boot: the new ESP state and the file name booted (as it was before counting)."""
    chosen = select(esp)
    entries = tuple(
        dataclasses.replace(e, name=names.bumped_name(e.name)) if e.name == chosen else e
        for e in esp.entries
    )
    selected = names.entry_id(chosen) if chosen else None
    return dataclasses.replace(esp, entries=entries, oneshot=None, selected=selected), chosen


# --- the policy's view -------------------------------------------------------------------


def _slot_info(esp: Esp, slot: Slot, booted: Slot | None) -> SlotInfo:
    entry = esp.entry(slot)
    if entry is None:
        return SlotInfo(slot, slot_state(None, present=False, booted=False))
    counter = names.parse_counter(entry.name)
    pair = None if counter is None else (counter.left, counter.done)
    state = slot_state(pair, present=True, booted=booted is slot)
    return SlotInfo(
        slot,
        state,
        release=entry.release,
        entry=entry.name,
        tries_left=None if counter is None else counter.left,
        tries_done=None if counter is None else counter.done,
    )


def _slot_named(esp: Esp, name: str | None) -> Slot | None:
    return None if name is None else names.slot_of(name, esp.prefix)


def snapshot_of(esp: Esp) -> BootSnapshot:
    """The policy's snapshot of ``esp``: slot states, booted, default, fallback, trial, one-shot."""
    booted = _slot_named(esp, esp.selected)
    fallback = names.pattern_slot(esp.loader_default, esp.prefix)
    trial = names.pattern_slot(esp.efi_default, esp.prefix)
    order = boot_order([e.name for e in esp.entries])
    return BootSnapshot(
        a=_slot_info(esp, Slot.A, booted),
        b=_slot_info(esp, Slot.B, booted),
        booted=booted,
        default=_slot_named(esp, select(esp, oneshot=False)),
        fallback=fallback[0] if fallback and not fallback[1] else None,
        trial=trial[0] if trial and trial[1] else None,
        oneshot=_slot_named(esp, _find(order, esp.oneshot)),
    )


# --- carrying out actions on the model ---------------------------------------------------


def _rename(esp: Esp, slot: Slot, new_name: str) -> Esp:
    entry = esp.entry(slot)
    if entry is None:
        raise ValueError(f"slot {slot} has no entry")
    entries = tuple(dataclasses.replace(e, name=new_name) if e is entry else e for e in esp.entries)
    return dataclasses.replace(esp, entries=entries)


def apply(esp: Esp, action: Action) -> Esp:
    """``esp`` after ``action`` (Reboot changes nothing here: the caller powers on again)."""
    match action:
        case Bless(slot):
            entry = esp.entry(slot)
            return esp if entry is None else _rename(esp, slot, names.good_name(entry.name))
        case MarkBad(slot):
            entry = esp.entry(slot)
            return esp if entry is None else _rename(esp, slot, names.bad_name(entry.name))
        case WriteEntry(slot, release, tries):
            kept = tuple(e for e in esp.entries if names.slot_of(e.name, esp.prefix) is not slot)
            name = names.counted_name(names.slot_base(esp.prefix, slot), tries)
            return dataclasses.replace(esp, entries=(*kept, EspEntry(name, release)))
        case SetDefault(slot):
            loader_default = names.committed_name(esp.prefix, slot)
            return dataclasses.replace(esp, loader_default=loader_default, efi_default=None)
        case SetTrial(slot):
            return dataclasses.replace(esp, efi_default=names.trial_pattern(esp.prefix, slot))
        case SetOneshot(slot):
            entry = esp.entry(slot)
            return (
                esp
                if entry is None
                else dataclasses.replace(esp, oneshot=names.entry_id(entry.name))
            )
        case Reboot():
            return esp
