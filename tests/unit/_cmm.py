"""What the CMM tests share: a four-node layout, playing events through the pure policy, and
reading what a running CMM service published."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from haos.cluster.cmm.model import (
    CmmConfig,
    CmmInput,
    CmmState,
    Decision,
    Fence,
    Publish,
    ViewChanged,
)
from haos.cluster.cmm.policy import decide
from haos.cluster.cmm.service import Notice
from haos.cluster.crim.events import NodeLeft
from haos.cluster.fencing.types import FenceResult
from haos.config.model import NodeSpec

# node2 and node3 tie on priority: the lower id, node2, ranks first.
NODES = (
    NodeSpec("node1", 1, "n1", priority=10),
    NodeSpec("node2", 2, "n2", priority=20),
    NodeSpec("node3", 3, "n3", priority=20),
    NodeSpec("node4", 4, "n4", priority=0),
)
ALL = ViewChanged.of(1, 2, 3, 4)
DEADLINE = 5.0  # for a running service to get where a test waits for it


def play(
    cfg: CmmConfig, steps: Sequence[tuple[float, CmmInput]], state: CmmState | None = None
) -> tuple[CmmState, list[Decision]]:
    """Each (now, event) decided on the state the one before left."""
    state = state or CmmState.initial(cfg)
    decisions = []
    for now, event in steps:
        decision = decide(cfg, state, event, now)
        state = decision.state
        decisions.append(decision)
    return state, decisions


def published(decision: Decision) -> list[object]:
    return list(decision.events())


def fences(decision: Decision) -> list[tuple[str, int]]:
    return [(a.node.name, a.attempt) for a in decision.actions if isinstance(a, Fence)]


def ok(node: str) -> FenceResult:
    return FenceResult(node, "reboot", True, "done")


async def until(condition: Callable[[], bool], what: str) -> None:
    """Waits for ``condition``; past the deadline, fails naming ``what`` was awaited."""
    try:
        async with asyncio.timeout(DEADLINE):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not within {DEADLINE}s: {what}") from None


def notices(queue: asyncio.Queue[Notice]) -> list[Notice]:
    """Every notice queued so far, taken off the queue."""
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def node_lefts(seen: list[Notice]) -> list[NodeLeft]:
    return [n.event for n in seen if isinstance(n, Publish) and isinstance(n.event, NodeLeft)]
