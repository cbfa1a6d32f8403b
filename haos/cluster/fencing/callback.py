"""Fencing through an async callable: the multi-node test harness kills or freezes a node.

The harness (:mod:`haos.cluster.harness`) runs each node in its own network namespace; its
"power switch" is a coroutine that kills (``off``) or restarts (``reboot``) the node's
processes. :class:`CallbackFencer` turns such a coroutine into a
:class:`~haos.cluster.fencing.types.Fencer`, with the same contract as a real device.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from haos.cluster.fencing.types import FenceAction, FenceError, FenceResult, PowerStatus
from haos.cluster.fencing.types import check_action as _check_action
from haos.config.model import NodeSpec
from haos.errors import UsageError

log = logging.getLogger(__name__)

PowerSwitch = Callable[[NodeSpec, FenceAction], Awaitable[None]]
"""Switch the node off (or cycle it); return once done, raise if it could not."""
PowerProbe = Callable[[NodeSpec], Awaitable[PowerStatus]]


class CallbackFencer:
    """A Fencer whose device is ``switch`` (and, optionally, ``probe`` for the status)."""

    def __init__(
        self, switch: PowerSwitch, *, probe: PowerProbe | None = None, timeout: float = 30.0
    ) -> None:
        if not timeout > 0:
            raise UsageError(f"fence timeout must be positive, not {timeout!r}")
        self._switch = switch
        self._probe = probe
        self._timeout = timeout

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        """Await ``switch(node, action)`` within the timeout; its exception is the failure."""
        action = _check_action(action)
        try:
            async with asyncio.timeout(self._timeout):
                await self._switch(node, action)
        except TimeoutError:
            detail = f"power switch {action} timed out after {self._timeout:g} s"
        except Exception as e:  # the device failed; CancelledError still propagates
            detail = f"power switch {action} failed: {e!r}"
        else:
            log.info("fenced %s (%s) by callback", node.name, action)
            return FenceResult(node.name, action, True, f"power switch {action} done")
        log.warning("fencing %s failed: %s", node.name, detail)
        return FenceResult(node.name, action, False, detail)

    async def status(self, node: NodeSpec) -> PowerStatus:
        """``probe(node)``; FenceError without a probe or when it fails or times out."""
        if self._probe is None:
            raise FenceError(f"no power probe for {node.name}")
        try:
            async with asyncio.timeout(self._timeout):
                return await self._probe(node)
        except TimeoutError as e:
            raise FenceError(f"power probe of {node.name} timed out") from e
        except Exception as e:
            raise FenceError(f"power probe of {node.name} failed: {e!r}") from e
