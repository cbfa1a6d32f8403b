"""Bookkeeping the configuration loader shares between sections: names declared once, and
the registry of what a section declares (for references from other sections)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from haos.config.schema import Entry, Problems, short_repr, suggest
from haos.config.schema import join as _key


def unique(
    value: object, key: str, owner: str, seen: dict[object, str], what: str, problems: Problems
) -> bool:
    """Record ``value`` as declared at ``owner``; report at ``key`` and return False on a repeat."""
    if value is None:
        return False
    if value in seen:
        problems.add(key, f"duplicate {what} {short_repr(value)} (first at {seen[value]})")
        return False
    seen[value] = owner
    return True


def unique_field(
    entry: Entry, attr: str, seen: dict[object, str], what: str, problems: Problems
) -> bool:
    """:func:`unique` for the entry's value of ``attr`` (absent or invalid: False)."""
    return unique(entry.values.get(attr), _key(entry.path, attr), entry.path, seen, what, problems)


Built = TypeVar("Built")


@dataclass
class Declared(Generic[Built]):
    """The names one section declares: where each is declared, and the fully valid entries.

    ``complete`` is False when the section is malformed or some entry's name is unreadable:
    a reference to an undeclared name may then mean that entry, so it is not reported (the
    unreadable entry is).
    """

    what: str
    paths: dict[object, str] = field(default_factory=dict)  # name -> key path declaring it
    built: dict[str, Built] = field(default_factory=dict)
    complete: bool = True

    def note(self, raw: object, entry: Entry | None = None) -> None:
        """Mark the section incomplete if ``raw`` is malformed or ``entry`` has no name."""
        if (raw is not None and not isinstance(raw, list)) or (
            entry is not None and "name" not in entry.values
        ):
            self.complete = False

    def check_ref(self, name: str, key: str, problems: Problems) -> bool:
        """Whether ``name`` is valid; report it at ``key`` when nothing declares it."""
        if name not in self.paths and self.complete:
            known = [n for n in self.paths if isinstance(n, str)]
            problems.add(key, f"unknown {self.what} {short_repr(name)}{suggest(name, known)}")
        return name in self.built
