"""What the dispatcher's hold tests share: the ``small-2n`` layout, a formed cluster, nodes
that record every batch they are sent, and the dispatcher running in a task group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import _layouts as layouts

from haos.cluster.crim import events as ev
from haos.cluster.crim.policy import decide
from haos.cluster.crim.state import CrimState, initial_state
from haos.cluster.crim.topology import Topology
from haos.errors import HaosError
from haos.model.states import AvailabilityState
from haos.services.executor import Dispatcher
from haos.services.orderbook import batch_from_json
from haos.services.orders import RoleOrder

TOPO = Topology(layouts.small_2n())
SI = "demo-si"
A, B, C = (f"shelf1/slot{n}/node/demo" for n in (1, 2, 3))  # on n1, n2, n3
P, S, SP = AvailabilityState.PRIMARY, AvailabilityState.SECONDARY, AvailabilityState.SPARE


def formed(topo: Topology = TOPO) -> CrimState:
    """Every node joined and every member available."""
    state = initial_state(topo)
    for n in topo.nodes:
        state = decide(topo, state, ev.NodeJoined(n), 0.0).state
    for c in sorted(topo.host_of):
        if topo.host_of[c] is not None and c in topo.group_of:
            state = decide(topo, state, ev.ComponentAvailable(c), 1.0).state
    return state


class Nodes:
    """Records what each node was sent, in order, and when (loop time)."""

    def __init__(self, down: set[str] | None = None) -> None:
        self.down = down or set()
        self.got: list[tuple[str, dict[str, Any], float]] = []

    async def send(self, node: str, payload: dict[str, Any]) -> None:
        if node in self.down:
            raise HaosError(f"{node} unreachable")
        self.got.append((node, payload, asyncio.get_running_loop().time()))

    def roles_sent(self, node: str) -> list[tuple[int, str, str, float]]:
        """(seq, component, state, when) of every role ``node`` was told, full states too."""
        out = []
        for n, payload, at in self.got:
            if n != node:
                continue
            batch = batch_from_json(payload)
            out += [(batch.seq, c, s.value, at) for c, s in (batch.roles or {}).items()]
            out += [
                (o.seq, o.component, o.state.value, at)
                for o in batch.orders
                if isinstance(o, RoleOrder)
            ]
        return out

    def promoted(self, node: str, component: str) -> list[int]:
        """The seqs of the batches that told ``node`` to make ``component`` primary."""
        return [seq for seq, c, s, _ in self.roles_sent(node) if c == component and s == "primary"]

    def promoted_at(self, node: str, component: str) -> list[float]:
        """When ``node`` was told to make ``component`` primary."""
        return [at for _, c, s, at in self.roles_sent(node) if c == component and s == "primary"]


async def settle() -> None:
    """Let every sender run until it waits (the channel never blocks)."""
    for _ in range(50):
        await asyncio.sleep(0)


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(dispatcher.run())
        try:
            yield dispatcher
        finally:
            task.cancel()
