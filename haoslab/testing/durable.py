"""An in-memory :class:`~haos.cluster.dss.checkpoint.durable.DurableStore` for tests: it keeps
every save, can hold saves in flight, can fail them, and refuses saves larger than a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from haos.errors import HaosError, UsageError


class MemoryStore:
    """``saved`` maps a name to its last saved sections; ``history`` lists every save in the
    order it completed. :meth:`hold` makes saves wait (in flight) until :meth:`release`;
    ``fail`` makes the next saves raise it; a save whose sections take more than ``limit``
    bytes raises UsageError (as the repository refuses a value larger than it keeps)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.saved: dict[str, dict[str, bytes]] = {}
        self.history: list[tuple[str, dict[str, bytes]]] = []
        self.in_flight = 0
        self.attempts = 0  # saves asked for, completed or not
        self.fail: HaosError | None = None
        self._gate: asyncio.Event | None = None

    def hold(self) -> None:
        if self._gate is None:
            self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def load(self, name: str) -> dict[str, bytes] | None:
        found = self.saved.get(name)
        return None if found is None else dict(found)

    async def save(self, name: str, sections: Mapping[str, bytes]) -> None:
        copy = dict(sections)  # what was asked, not what the caller changes later
        self.attempts += 1
        self.in_flight += 1
        try:
            while self._gate is not None:
                await self._gate.wait()
            if self.fail is not None:
                raise self.fail
            size = sum(len(s) + len(d) for s, d in copy.items())
            if self.limit is not None and size > self.limit:
                raise UsageError(f"checkpoint {name}: {size} bytes, more than {self.limit}")
        finally:
            self.in_flight -= 1
        self.saved[name] = copy
        self.history.append((name, copy))

    async def delete(self, name: str) -> None:
        self.saved.pop(name, None)
