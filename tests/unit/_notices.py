"""The CMM's notices as the availability service reads them, for tests that feed it by hand."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from haos.cluster.cmm.service import Notice


@dataclass
class Notices:
    """One node's CMM notices; knows when the service has handled every one it was handed."""

    queue: asyncio.Queue[Notice] = field(default_factory=asyncio.Queue)
    handed: int = 0
    handled: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def get(self) -> Notice:
        async with self.cond:
            self.handled = self.handed  # asking for the next one: the last one is done
            self.cond.notify_all()
        notice = await self.queue.get()
        self.handed += 1
        return notice

    async def drained(self) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.queue.empty() and self.handled == self.handed)
