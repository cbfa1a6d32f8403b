"""Fencers made of fencers: one device per node, a delay before fencing, and no device.

:class:`PerNode` sends each node to its own fencer (nodes of one cluster may have different
devices); :class:`Delayed` waits before each fencing (the fencing delays, which the daemon
may change while it runs); :class:`NoDevice` is what a node without a configured device
gets: every fencing fails, so the node stays "to be fenced" and its work is not taken over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from haos.cluster.fencing.types import FenceAction, FenceError, Fencer, FenceResult, PowerStatus
from haos.cluster.fencing.types import check_action as _check_action
from haos.config.model import NodeSpec

log = logging.getLogger(__name__)


class NoDevice:
    """Fails every fencing, saying that no device is configured."""

    def __init__(self, where: str = "[fencing] in cluster.toml") -> None:
        self._where = where

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        action = _check_action(action)
        detail = f"no fence device configured for {node.name} ({self._where})"
        return FenceResult(node.name, action, False, detail)

    async def status(self, node: NodeSpec) -> PowerStatus:
        raise FenceError(f"no fence device configured for {node.name}")


class PerNode:
    """Fences each node through ``fencers[node.name]``; ``default`` for the others."""

    def __init__(self, fencers: Mapping[str, Fencer], default: Fencer) -> None:
        self._fencers = dict(fencers)
        self._default = default

    def of(self, node: NodeSpec) -> Fencer:
        return self._fencers.get(node.name, self._default)

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        return await self.of(node).fence(node, action)

    async def status(self, node: NodeSpec) -> PowerStatus:
        return await self.of(node).status(node)


Sleep = Callable[[float], Awaitable[None]]


class Delayed:
    """Waits ``delay_for(node)`` seconds, then fences through ``inner``.

    ``delay_for`` is asked at each fencing, so a delay changed while the daemon runs counts
    from the next attempt on (see :func:`haos.cluster.cmm.policy.fence_delay`)."""

    def __init__(
        self, inner: Fencer, delay_for: Callable[[NodeSpec], float], sleep: Sleep = asyncio.sleep
    ) -> None:
        self._inner = inner
        self._delay_for = delay_for
        self._sleep = sleep

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        delay = self._delay_for(node)
        if delay > 0:
            log.info("fencing %s in %.3g s (fencing delay)", node.name, delay)
            await self._sleep(delay)
        return await self._inner.fence(node, action)

    async def status(self, node: NodeSpec) -> PowerStatus:
        return await self._inner.status(node)
