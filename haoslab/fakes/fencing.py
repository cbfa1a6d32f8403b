"""An in-memory :class:`~haos.cluster.fencing.types.Fencer` for tests: scripted outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from haos.cluster.fencing.types import FenceAction, FenceError, FenceResult, PowerStatus
from haos.cluster.fencing.types import check_action as _check_action
from haos.config.model import NodeSpec


class ScriptedFencer:
    """Answers each node's fence attempts from a script (True = ok), then ok for ever.

    ``calls`` records (node name, action) in order; a node fenced ok is ``off`` until a
    reboot. ``gate``, if set, must be set before any fencing finishes (to hold it in flight).
    """

    def __init__(self, script: dict[str, Iterable[bool]] | None = None) -> None:
        self._script = {node: list(outcomes) for node, outcomes in (script or {}).items()}
        self.calls: list[tuple[str, FenceAction]] = []
        self.power: dict[str, PowerStatus] = {}
        self.gate: asyncio.Event | None = None

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        action = _check_action(action)
        self.calls.append((node.name, action))
        if self.gate is not None:
            await self.gate.wait()
        outcomes = self._script.get(node.name, [])
        ok = outcomes.pop(0) if outcomes else True
        if not ok:
            return FenceResult(node.name, action, False, "scripted failure")
        self.power[node.name] = "off" if action == "off" else "on"
        return FenceResult(node.name, action, True, "scripted success")

    async def status(self, node: NodeSpec) -> PowerStatus:
        if node.name not in self.power:
            raise FenceError(f"no scripted power state for {node.name}")
        return self.power[node.name]
