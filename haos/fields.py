"""Typed fields of socket requests, declared once per operation and checked in one place.

An operation is an :class:`Op`: its name and its fields. :meth:`Op.check` turns a decoded
request into a dict holding exactly the declared fields, each of its declared type (a string,
an integer in a range, a finite number in a range, a boolean, an object), defaults filled in,
or raises :class:`BadField` naming the operation, the field and what it must be. Both sockets
(the control socket, the application socket) declare their operations with it, so a handler
only ever sees values it can use. Imports only :mod:`haos.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from haos.errors import UsageError


class BadField(UsageError):
    """A request field is missing or of the wrong type or range; the text names it."""


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Missing()

Check = Callable[[object], object]
"""Returns the value (possibly normalised) or raises ValueError with what it must be."""


@dataclass(frozen=True)
class Field:
    name: str
    check: Check
    default: Any = REQUIRED


@dataclass(frozen=True)
class Op:
    """One operation: its name and its fields. ``extra``: fields not declared travel on
    unchecked (the op forwards them to a service that checks them itself); else they are
    dropped."""

    name: str
    fields: tuple[Field, ...] = ()
    extra: bool = False
    doc: str = ""

    def check(self, request: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = dict(request) if self.extra else {}
        for f in self.fields:
            value = request.get(f.name, REQUIRED)
            if value is REQUIRED or (value is None and f.default is None):
                if f.default is REQUIRED:
                    raise BadField(f"{self.name}: {f.name} must be {_what(f)}; it is missing")
                out[f.name] = f.default
                continue
            try:
                out[f.name] = f.check(value)
            except ValueError as e:
                raise BadField(f"{self.name}: {f.name} must be {e}, not {_short(value)}") from None
        return out


@dataclass(frozen=True)
class Table:
    """The operations of one socket, by name."""

    ops: Mapping[str, Op] = field(default_factory=dict)

    @classmethod
    def of(cls, ops: Iterable[Op]) -> Table:
        return cls({op.name: op for op in ops})

    def check(self, request: Mapping[str, Any], key: str = "op") -> tuple[str, dict[str, Any]]:
        """``(op, checked fields)`` of ``request``; BadField if ``key`` names no op."""
        name = request.get(key)
        if not isinstance(name, str):
            raise BadField(f"{key} must be a string naming the operation, not {_short(name)}")
        op = self.ops.get(name)
        if op is None:
            known = ", ".join(sorted(self.ops))
            raise BadField(f"unknown {key} {_short(name)}; one of: {known}")
        return name, op.check(request)


# --- field types --------------------------------------------------------------------------


def text(
    name: str, *, empty: bool = False, choices: Iterable[str] = (), default: Any = REQUIRED
) -> Field:
    """A string; non-empty unless ``empty``; one of ``choices`` if given."""
    allowed = tuple(choices)

    def check(value: object) -> str:
        if not isinstance(value, str) or (not value and not empty):
            raise ValueError("a string" if empty else "a non-empty string")
        if allowed and value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value

    return Field(name, check, default)


def integer(name: str, lo: int, hi: int, *, default: Any = REQUIRED) -> Field:
    """A whole number (not a boolean) in ``lo..hi``."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"a whole number in {lo}..{hi}")
        return value

    return Field(name, check, default)


def number(
    name: str, lo: float = -math.inf, hi: float = math.inf, *, default: Any = REQUIRED
) -> Field:
    """A finite number (not a boolean) with ``lo < value <= hi``, as a float."""
    what = "a finite number"
    if lo == 0 and hi == math.inf:
        what = "a positive finite number"
    elif math.isfinite(lo) or math.isfinite(hi):
        what = f"a number of more than {lo:g} and at most {hi:g}"

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(what)
        if not (math.isfinite(value) and lo < value <= hi):
            raise ValueError(what)
        return float(value)

    return Field(name, check, default)


def flag(name: str, *, default: Any = REQUIRED) -> Field:
    """true or false (not 0, 1 or a string)."""

    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value

    return Field(name, check, default)


def mapping(name: str, *, default: Any = REQUIRED) -> Field:
    """A JSON object (its contents are checked by whoever takes it)."""

    def check(value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError("an object")
        return value

    return Field(name, check, default)


def _what(f: Field) -> str:
    """What ``f`` must be, in words (every check refuses the REQUIRED marker, saying so)."""
    try:
        f.check(REQUIRED)
    except ValueError as e:
        return str(e)
    return "given"


def _short(value: object, limit: int = 40) -> str:
    if isinstance(value, dict | list):  # its repr may be megabytes long
        return f"{'an object' if isinstance(value, dict) else 'an array'} of {len(value)} items"
    out = repr(value[: limit + 1] if isinstance(value, str) else value)
    return out if len(out) <= limit else out[: limit - 3] + "..."
