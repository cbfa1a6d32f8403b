"""The group transport every distributed service runs on: agreed-order multicast + views.

The contract is CPG's (virtual synchrony), reduced to what the services need:

* ``send(payload)`` multicasts to every current member *including the sender*; every member
  receives the messages of the group in one total order (agreed order).
* Membership changes arrive as :class:`View` events, ordered with the messages: two members
  that both see views V1 then V2 saw the same messages between them.
* One haos process per node joins a group, so members are named by node id.

:class:`CpgTransport` adapts :class:`~haos.cluster.dss.corosync.cpg.CpgGroup`;
:class:`haoslab.testing.bus.LocalBus` is the in-memory fake with the same contract, for fast
tests of the protocols above it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from haos.cluster.dss.corosync.cpg import (
    CpgGroup,
    Delivered,
    MembershipChanged,
    TotemRing,
)


@dataclass(frozen=True)
class Message:
    sender: int  # node id
    payload: bytes


@dataclass(frozen=True)
class View:
    """The group's members after a change, with who joined and who left."""

    members: tuple[int, ...]  # node ids, sorted
    joined: tuple[int, ...] = ()
    left: tuple[int, ...] = ()


TransportEvent = Message | View


class GroupTransport(Protocol):
    """Agreed-order multicast in one group (see the module docstring for the contract)."""

    @property
    def node_id(self) -> int:
        """This member's node id."""
        ...

    async def send(self, payload: bytes) -> None:
        """Multicast ``payload``; raises UnavailableError if the group cannot be reached."""
        ...

    async def next_event(self) -> TransportEvent:
        """The next message or view, in agreed order; UnavailableError when the group broke."""
        ...

    async def close(self) -> None:
        """Leave the group. Idempotent."""
        ...


class CpgTransport:
    """A :class:`GroupTransport` over a corosync CPG group."""

    def __init__(self, group: CpgGroup, node_id: int) -> None:
        self._group = group
        self._node_id = node_id

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, name: str) -> AsyncIterator[CpgTransport]:
        async with CpgGroup.open(name) as group:
            node_id = await group.local_get()
            yield cls(group, node_id)

    @property
    def node_id(self) -> int:
        return self._node_id

    async def send(self, payload: bytes) -> None:
        """Hands ``payload`` to the group's worker thread and returns at once (in order with
        the earlier sends); a send that fails later breaks the group, which ends the event
        stream with the error (see :meth:`CpgGroup.post`)."""
        self.post(payload)

    def post(self, payload: bytes) -> None:
        """:meth:`send` without a coroutine (``haos.cluster.dss.messaging.group.Poster``)."""
        self._group.post(payload)

    @property
    def try_again(self) -> dict[str, int]:
        """Retries after CS_ERR_TRY_AGAIN of this group's calls, by library function."""
        return dict(self._group.try_again)

    async def next_event(self) -> TransportEvent:
        while True:
            event = await self._group.events.get()
            if isinstance(event, Delivered):
                return Message(event.node_id, event.payload)
            if isinstance(event, MembershipChanged):
                return View(
                    tuple(sorted({m.node_id for m in event.members})),
                    tuple(sorted({m.node_id for m in event.joined})),
                    tuple(sorted({m.node_id for m in event.left})),
                )
            if isinstance(event, TotemRing):
                continue  # ring changes without a group change do not matter here

    async def close(self) -> None:
        await self._group.aclose()
