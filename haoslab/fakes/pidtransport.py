"""Test support: a GroupTransport over CPG that names members by *process*, not node.

:class:`~haos.cluster.dss.transport.CpgTransport` names members by node id (one haos process
per node joins a group). On one test corosync node every process has node id 1, so two
processes would look like one member. :class:`ProcessTransport` names each member by its pid
instead, which lets tests run several members of a service as processes on one real corosync
(CorosyncTestNode) and exercise what keys on members — acks, state transfer, routing to one
member, a member's death — over real CPG. Two handles in *one* process still share a pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from haos.cluster.dss.corosync.cpg import CpgGroup, Delivered, MembershipChanged
from haos.cluster.dss.transport import Message, TransportEvent, View


class ProcessTransport:
    """See the module docstring. ``node_id`` is this process's pid."""

    def __init__(self, group: CpgGroup) -> None:
        self._group = group
        self._pid = os.getpid()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, name: str) -> AsyncIterator[ProcessTransport]:
        async with CpgGroup.open(name) as group:
            yield cls(group)

    @property
    def node_id(self) -> int:
        return self._pid

    async def send(self, payload: bytes) -> None:
        await self._group.mcast(payload)

    async def next_event(self) -> TransportEvent:
        while True:
            event = await self._group.events.get()
            if isinstance(event, Delivered):
                return Message(event.pid, event.payload)
            if isinstance(event, MembershipChanged):
                return View(
                    tuple(sorted({m.pid for m in event.members})),
                    tuple(sorted({m.pid for m in event.joined})),
                    tuple(sorted({m.pid for m in event.left})),
                )

    async def close(self) -> None:
        self._group.close()
        await asyncio.sleep(0)
