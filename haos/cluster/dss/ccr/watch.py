"""Prefix watches over committed changes, and :func:`follow` for reconfiguring on change.

A :class:`Watch` yields :class:`WatchEvent` s for the keys under its prefix, in revision order
and without gaps: every committed change after its start revision, each exactly once. Events
of one transaction share a revision and arrive together (:meth:`Watch.next_batch`). When a
gap-free continuation is impossible the watch raises :class:`~.errors.WatchLostError` (after
the events queued before the loss): it fell more than its bound behind, or the node's copy was
replaced by a snapshot. When the service stops it raises UnavailableError.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Protocol

from haos.cluster.dss.ccr.errors import WatchLostError
from haos.cluster.dss.ccr.model import Entry, Item, in_prefix
from haos.cluster.dss.corosync.trace import EVENT
from haos.errors import UnavailableError


@dataclass(frozen=True)
class WatchEvent:
    """``key`` changed at ``revision``; ``value`` None: it was deleted."""

    revision: int
    key: str
    value: bytes | None


class Watch:
    """See the module docstring. Made by the service's ``watch``; close it when done."""

    def __init__(self, hub: WatchHub, prefix: str, after: int, generation: int) -> None:
        self.prefix = prefix
        self.start_revision = after
        self.generation = generation
        self._hub = hub
        self._offered = after  # the last revision offered to this watch
        self._batches: deque[tuple[WatchEvent, ...]] = deque()
        self._queued = 0
        self._current: deque[WatchEvent] = deque()
        self._error: BaseException | None = None
        self._closed = False
        self._wakeup = asyncio.Event()

    async def next_batch(self) -> tuple[WatchEvent, ...]:
        """The events of the next revision that changed something under the prefix."""
        if self._current:
            batch, self._current = tuple(self._current), deque()
            return batch
        while not self._batches:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise UnavailableError(f"watch on {self.prefix} was closed")
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = self._batches.popleft()
        self._queued -= len(batch)
        sys.audit(EVENT, "ccr.watch", batch)
        return batch

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        if not self._current:
            try:
                self._current.extend(await self.next_batch())
            except UnavailableError:
                if self._closed and self._error is None:
                    raise StopAsyncIteration from None
                raise
        return self._current.popleft()

    def close(self) -> None:
        """Stop watching; iteration ends after the queued events. Idempotent."""
        self._closed = True
        self._hub.discard(self)
        self._wakeup.set()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- fed by the hub ----------------------------------------------------------------------

    def offer(self, entry: Entry, limit: int) -> None:
        if entry.revision <= self._offered or self._error is not None:
            return
        self._offered = entry.revision
        events = tuple(
            WatchEvent(entry.revision, c.key, c.value)
            for c in entry.changes
            if in_prefix(self.prefix, c.key)
        )
        if not events:
            return
        if self._queued + len(events) > limit:
            self.fail(
                WatchLostError(
                    f"watch on {self.prefix} fell more than {limit} events behind at revision "
                    f"{entry.revision}"
                )
            )
            return
        self._batches.append(events)
        self._queued += len(events)
        self._wakeup.set()

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._hub.discard(self)
            self._wakeup.set()


class WatchHub:
    """Every open watch of one service; fan-out of committed entries."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._watches: set[Watch] = set()
        self._closed: BaseException | None = None

    def subscribe(
        self, prefix: str, after: int, generation: int, backlog: Iterable[Entry]
    ) -> Watch:
        watch = Watch(self, prefix, after, generation)
        if self._closed is not None:
            watch.fail(self._closed)
            return watch
        self._watches.add(watch)
        for entry in backlog:
            watch.offer(entry, self._limit)
        return watch

    def publish(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            for watch in list(self._watches):
                watch.offer(entry, self._limit)

    def reset(self, generation: int, reason: str) -> None:
        for watch in list(self._watches):
            if watch.generation < generation:
                watch.fail(WatchLostError(f"watch on {watch.prefix} lost: {reason}"))

    def close(self, error: BaseException) -> None:
        self._closed = error
        for watch in list(self._watches):
            watch.fail(error)

    def discard(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def __len__(self) -> int:
        return len(self._watches)


class WatchSource(Protocol):
    async def range(self, prefix: str) -> tuple[int, tuple[Item, ...]]: ...

    def watch(self, prefix: str, after: int | None = None) -> Watch: ...


async def follow(source: WatchSource, prefix: str) -> AsyncIterator[Mapping[str, bytes]]:
    """The sub-tree under ``prefix`` (key -> value) now, then again after every committed
    change to it: what a component needs to reconfigure itself without a restart.

    A lost watch is handled here (read again, watch again): the caller only ever sees whole,
    current sub-trees. Ends with UnavailableError when the service stops.
    """
    while True:
        revision, items = await source.range(prefix)
        tree = {i.key: i.value for i in items}
        yield MappingProxyType(dict(tree))
        try:
            with source.watch(prefix, after=revision) as watch:
                while True:
                    for event in await watch.next_batch():
                        if event.value is None:
                            tree.pop(event.key, None)
                        else:
                            tree[event.key] = event.value
                    yield MappingProxyType(dict(tree))
        except WatchLostError:
            continue
