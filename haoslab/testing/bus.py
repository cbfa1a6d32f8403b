"""An in-memory group transport with CPG's contract (agreed order, ordered views).

One :class:`LocalBus` is one group; ``bus.join(node_id)`` gives a member endpoint. All sends
are ordered through the bus, so every connected member sees one total order of messages and
views. Partitions split the bus into components that each order their own traffic, as
corosync does; ``heal`` merges them with a view change on both sides.
"""

from __future__ import annotations

import asyncio

from haos.cluster.dss.transport import Message, TransportEvent, View
from haos.errors import UnavailableError


class LocalEndpoint:
    def __init__(self, bus: LocalBus, node_id: int) -> None:
        self._bus = bus
        self._node_id = node_id
        self.queue: asyncio.Queue[TransportEvent | None] = asyncio.Queue()
        self.closed = False

    @property
    def node_id(self) -> int:
        return self._node_id

    async def send(self, payload: bytes) -> None:
        self.post(payload)

    def post(self, payload: bytes) -> None:
        if self.closed:
            raise UnavailableError(f"node {self._node_id} is not in the group")
        self._bus.deliver(self._node_id, payload)

    async def next_event(self) -> TransportEvent:
        event = await self.queue.get()
        if event is None:
            self.queue.put_nowait(None)
            raise UnavailableError(f"node {self._node_id} left the group")
        return event

    async def close(self) -> None:
        self._bus.leave(self._node_id)


class LocalBus:
    def __init__(self) -> None:
        self.endpoints: dict[int, LocalEndpoint] = {}
        self._side: dict[int, int] = {}  # node -> partition number
        self.sent = 0

    def join(self, node_id: int) -> LocalEndpoint:
        if node_id in self.endpoints and not self.endpoints[node_id].closed:
            raise ValueError(f"node {node_id} already joined")
        ep = LocalEndpoint(self, node_id)
        self.endpoints[node_id] = ep
        self._side.setdefault(node_id, 0)
        self._announce(self._side[node_id], joined=(node_id,))
        return ep

    def leave(self, node_id: int) -> None:
        ep = self.endpoints.get(node_id)
        if ep is None or ep.closed:
            return
        ep.closed = True
        ep.queue.put_nowait(None)
        self._announce(self._side[node_id], left=(node_id,))

    crash = leave

    def members(self, side: int) -> tuple[int, ...]:
        return tuple(
            sorted(n for n, ep in self.endpoints.items() if not ep.closed and self._side[n] == side)
        )

    def deliver(self, sender: int, payload: bytes) -> None:
        self.sent += 1
        for n in self.members(self._side[sender]):
            self.endpoints[n].queue.put_nowait(Message(sender, payload))

    def partition(self, groups: list[list[int]]) -> None:
        """Split the live members into ``groups``; each side sees the others leave."""
        old = {n: self.members(self._side[n]) for n in self.endpoints}
        for i, group in enumerate(groups):
            for n in group:
                self._side[n] = i + 1
        self._views(old)

    def heal(self) -> None:
        old = {n: self.members(self._side[n]) for n in self.endpoints}
        for n in self._side:
            self._side[n] = 0
        self._views(old)

    def _views(self, old: dict[int, tuple[int, ...]]) -> None:
        for n, ep in self.endpoints.items():
            if ep.closed:
                continue
            now = self.members(self._side[n])
            if now != old[n]:
                joined = tuple(sorted(set(now) - set(old[n])))
                left = tuple(sorted(set(old[n]) - set(now)))
                ep.queue.put_nowait(View(now, joined, left))

    def _announce(
        self, side: int, joined: tuple[int, ...] = (), left: tuple[int, ...] = ()
    ) -> None:
        view = View(self.members(side), joined, left)
        for n in view.members:
            self.endpoints[n].queue.put_nowait(view)
