"""A one-node repository (CCR) in memory, running, for tests of what is built on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from haos.cluster.dss.ccr import CcrConfig, CcrService, ManualQuorum, MemoryStore
from haoslab.testing.bus import LocalBus


def with_ccr(body: Callable[[CcrService], Awaitable[None]]) -> None:
    """Run ``body`` against a ready one-node repository on the in-memory bus."""

    async def go() -> None:
        service = CcrService(LocalBus().join(1), MemoryStore(), ManualQuorum(True), CcrConfig(1))
        await service.load()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(service.run())
            await service.wait_ready(timeout=5.0)
            try:
                await body(service)
            finally:
                task.cancel()

    asyncio.run(go())
