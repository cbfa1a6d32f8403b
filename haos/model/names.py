"""Unique, persistent component names derived from the containment tree.

A name is the path from the root of the containment tree, segments joined by ``/``:
``shelf1/slot3/node/app``. The parent of a component is therefore named by its name.
"""

from __future__ import annotations

import re

from haos.errors import ModelError

_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
SEPARATOR = "/"


def check_name(name: str) -> str:
    """Return ``name`` when it is a well-formed component name, else raise ModelError."""
    if not isinstance(name, str) or not name:
        raise ModelError("component name must be a non-empty string")
    for segment in name.split(SEPARATOR):
        # fullmatch: `$` would also match before a trailing newline, accepting "a\n".
        if not _SEGMENT.fullmatch(segment):
            raise ModelError(
                f"bad component name {name!r}: segment {segment!r} must match "
                "[a-z0-9][a-z0-9_.-]* (at most 63 characters)"
            )
    return name


def parent_of(name: str) -> str | None:
    """The containing component's name, or None for a top-level component."""
    head, sep, _ = name.rpartition(SEPARATOR)
    return head if sep else None


def ancestors_of(name: str) -> list[str]:
    """Containing components from the nearest to the top-level one."""
    out: list[str] = []
    parent = parent_of(name)
    while parent is not None:
        out.append(parent)
        parent = parent_of(parent)
    return out


def is_within(name: str, container: str) -> bool:
    """True when ``name`` is ``container`` or lies in its subtree."""
    return name == container or name.startswith(container + SEPARATOR)
