"""Boot loader entry file names with systemd-boot's boot counter, parsed the way it parses them.

An entry ``haos-b+3.conf`` has 3 tries left and 0 done. Before booting it systemd-boot renames
it to ``haos-b+2-1.conf``, then ``+1-2``, ``+0-3``; an entry with 0 tries left sorts last and is
no longer chosen by our trial pattern. Blessing removes the counter (``haos-b.conf``);
``systemd-bless-boot bad`` sets the left counter to 0 and keeps the done one (``+0-3``, or
``+0`` when none were done).

The grammar follows ``config_entry_parse_tries()`` in systemd-boot exactly: the counter starts
after the *last* ``+``; ``LEFT`` is one or more decimal digits (leading zeros allowed), an
optional ``-DONE`` likewise; each at most INT_MAX; and what follows must be exactly the
suffix (``.conf``, compared case-sensitively). Anything else means "no counter" and the whole
name is the entry's identity.

The boot loader identifies an entry by its file name in lower case (the "entry id"); the
default and one-shot settings are globs matched against entry ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from haos.bootctl.model import Slot

SUFFIX = ".conf"
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Counter:
    """A parsed boot counter: ``base`` is the name before the ``+``, without the suffix."""

    base: str
    left: int
    done: int


def _digits(text: str, start: int) -> tuple[int, int] | None:
    """The decimal number at ``text[start:]`` and the index after it; None without a digit."""
    end = start
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    if end == start:
        return None
    return int(text[start:end]), end


def parse_counter(name: str, suffix: str = SUFFIX) -> Counter | None:
    """The boot counter in file name ``name``, or None if systemd-boot would see none."""
    plus = name.rfind("+")
    if plus < 0:
        return None
    left = _digits(name, plus + 1)
    if left is None or left[0] > INT_MAX:
        return None
    tries_left, pos = left
    tries_done = 0
    if name.startswith("-", pos):
        done = _digits(name, pos + 1)
        if done is None or done[0] > INT_MAX:
            return None
        tries_done, pos = done
    if name[pos:] != suffix:
        return None  # a counter in the middle of the name is not a counter
    return Counter(name[:plus], tries_left, tries_done)


def base_name(name: str, suffix: str = SUFFIX) -> str | None:
    """``haos-b+2-1.conf`` -> ``haos-b``: no counter, no suffix; None if not a .conf name."""
    counter = parse_counter(name, suffix)
    if counter is not None:
        return counter.base
    if name.lower().endswith(suffix):
        return name[: -len(suffix)]
    return None


def counted_name(base: str, tries: int, suffix: str = SUFFIX) -> str:
    """A fresh entry name with ``tries`` left and none done: ``haos-b+3.conf``."""
    if not 1 <= tries <= INT_MAX:
        raise ValueError(f"tries must be 1..{INT_MAX}, got {tries}")
    return f"{base}+{tries}{suffix}"


def bumped_name(name: str, suffix: str = SUFFIX) -> str:
    """The name systemd-boot renames ``name`` to before booting it (unchanged without a counter)."""
    counter = parse_counter(name, suffix)
    if counter is None:
        return name
    left = max(counter.left - 1, 0)
    done = min(counter.done + 1, INT_MAX)
    return f"{counter.base}+{left}-{done}{suffix}"


def good_name(name: str, suffix: str = SUFFIX) -> str:
    """The blessed name: the counter removed (what ``systemd-bless-boot good`` does)."""
    counter = parse_counter(name, suffix)
    return name if counter is None else f"{counter.base}{suffix}"


def bad_name(name: str, suffix: str = SUFFIX) -> str:
    """The name with no tries left (what ``systemd-bless-boot bad`` does; keeps tries done)."""
    counter = parse_counter(name, suffix)
    base, done = (name[: -len(suffix)], 0) if counter is None else (counter.base, counter.done)
    return f"{base}+0{suffix}" if done == 0 else f"{base}+0-{done}{suffix}"


def entry_id(name: str) -> str:
    """The identifier systemd-boot gives an entry file: its name, case-folded."""
    return name.lower()


# --- the names of haos' two slots ---------------------------------------------------------


def slot_base(prefix: str, slot: Slot) -> str:
    """``haos-a`` / ``haos-b``: the slot's entry name without counter and suffix."""
    return f"{prefix}-{slot.value.lower()}"


def slot_of(name: str, prefix: str) -> Slot | None:
    """Which slot an entry file name belongs to, or None for a foreign entry."""
    base = base_name(name)
    if base is None:
        return None
    for slot in Slot:
        if base.lower() == slot_base(prefix, slot):
            return slot
    return None


def committed_name(prefix: str, slot: Slot) -> str:
    """The name of the slot's blessed entry, also the exact ``default`` pattern for it."""
    return slot_base(prefix, slot) + SUFFIX


def trial_pattern(prefix: str, slot: Slot) -> str:
    """A glob matching the slot's entry only while it has tries left.

    ``haos-b+[1-9]*`` matches ``haos-b+3.conf`` and ``haos-b+1-2.conf`` but neither
    ``haos-b+0-3.conf`` (exhausted or marked bad) nor ``haos-b.conf``. We never write a counter
    with a leading zero, so the first digit decides. Once it stops matching, systemd-boot falls
    through to ``loader.conf``'s ``default``: the committed entry.
    """
    return slot_base(prefix, slot) + "+[1-9]*"


def pattern_slot(pattern: str | None, prefix: str) -> tuple[Slot, bool] | None:
    """(slot, is_trial) if ``pattern`` is one of the patterns haos writes, else None."""
    if pattern is None:
        return None
    folded = pattern.lower()
    for slot in Slot:
        if folded == committed_name(prefix, slot):
            return slot, False
        if folded == trial_pattern(prefix, slot):
            return slot, True
    return None
