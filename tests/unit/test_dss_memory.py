"""The trimmer gives memory back once a burst of large buffers is over: one trim after the
last of them, after a collection that frees what only reference cycles held (decoded messages
whose containers point at their parents)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from haos.cluster.dss.memory import Trimmer


class Node:
    def __init__(self) -> None:
        self.buffer = bytes(1 << 20)
        self.parent: Node | None = None


def test_one_trim_after_a_burst_and_none_for_small_buffers() -> None:
    async def go() -> None:
        calls: list[int] = []
        trimmer = Trimmer(threshold=1000, quiet=0.05, trim=lambda: calls.append(1))
        trimmer.note(999)
        await asyncio.sleep(0.1)  # (the time the trimmer waits, passing; not a synchronisation)
        assert calls == []
        for _ in range(5):
            trimmer.note(600)
        await asyncio.sleep(0.15)
        assert calls == [1] and trimmer.trims == 1

    asyncio.run(go())


def test_buffers_held_only_by_a_reference_cycle_are_freed_before_the_trim() -> None:
    async def go() -> None:
        node = Node()
        node.parent = node  # a cycle: only the cyclic collector frees it
        gone = weakref.ref(node)
        del node
        seen: list[bool] = []
        trimmer = Trimmer(threshold=1, quiet=0.01, trim=lambda: seen.append(gone() is None))
        gc.disable()
        try:
            assert gone() is not None
            trimmer.note(1 << 20)
            await asyncio.sleep(0.05)
        finally:
            gc.enable()
        assert seen == [True]

    asyncio.run(go())


def test_the_default_trim_is_the_c_librarys() -> None:
    async def go() -> None:
        trimmer = Trimmer(threshold=1, quiet=0.0)
        trimmer.note(1)
        await asyncio.sleep(0.01)
        assert trimmer.trims == 1  # glibc here: malloc_trim(0) ran

    asyncio.run(go())
