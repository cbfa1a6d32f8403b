"""Which subscriptions an event type reaches: a pure table, exact types and prefixes."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True)
class Event:
    """One published event as every subscriber receives it."""

    event_type: str
    payload: bytes
    publisher: int  # node id
    seq: int  # the publisher's own count


@dataclass
class Topics(Generic[S]):
    """Subscriptions by exact event type or by type prefix; a subscription is any hashable."""

    _exact: dict[str, set[S]] = field(default_factory=dict)
    _prefix: dict[str, set[S]] = field(default_factory=dict)

    def add(self, pattern: str, subscriber: S, *, prefix: bool = False) -> None:
        table = self._prefix if prefix else self._exact
        table.setdefault(pattern, set()).add(subscriber)

    def remove(self, subscriber: S) -> None:
        for table in (self._exact, self._prefix):
            for pattern in [p for p, subs in table.items() if subscriber in subs]:
                table[pattern].discard(subscriber)
                if not table[pattern]:
                    del table[pattern]

    def match(self, event_type: str) -> list[S]:
        """The subscribers ``event_type`` reaches, each once, in no particular order."""
        found = set(self._exact.get(event_type, ()))
        for pattern, subs in self._prefix.items():
            if event_type.startswith(pattern):
                found |= subs
        return list(found)

    def all(self) -> set[S]:
        return {s for t in (self._exact, self._prefix) for subs in t.values() for s in subs}

    def __len__(self) -> int:
        return len(self.all())
