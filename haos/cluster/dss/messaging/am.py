"""AM, asynchronous messages: one-way datagrams to one member or to all, over one group.

Bodies (inside the shared envelope, service AM):

    DATA (kind 1): flags u8 (bit 0: to all) | destination node u32 | payload Blob

A unicast is multicast with its destination in the body: every other member drops it silently
(not counted as malformed). "To all" includes the sender. Delivery is in the group's agreed
order; there is no acknowledgement. A full inbox drops the message and counts it
(``inbox-full``): AM is a datagram service, a slow receiver must not stall the group.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from construct import Int8ub, Int32ub

from haos.cluster.dss.messaging.codec import MAX_BLOB, Blob, body, build, parse
from haos.cluster.dss.messaging.feed import Feed
from haos.cluster.dss.messaging.group import GroupLink, LinkedService
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter, Service, WireError
from haos.errors import HaosError, UnavailableError, UsageError

ALL = None  # the destination meaning "every member"
_TO_ALL = 0x01


class Kind(enum.IntEnum):
    DATA = 1


_DATA = body("flags" / Int8ub, "dest" / Int32ub, "payload" / Blob)


@dataclass(frozen=True)
class AmMessage:
    sender: int
    payload: bytes
    to_all: bool


@dataclass(frozen=True)
class Data:
    dest: int | None  # None: to all
    payload: bytes


def encode_data(msg: Data) -> bytes:
    flags = _TO_ALL if msg.dest is None else 0
    dest = 0 if msg.dest is None else msg.dest
    return build(_DATA, {"flags": flags, "dest": dest, "payload": msg.payload})


def decode(kind: int, data: bytes) -> Data:
    if kind != Kind.DATA:
        raise WireError(f"unknown AM kind {kind}")
    raw = parse(_DATA, data, "AM data")
    if raw.flags & ~_TO_ALL:
        raise WireError(f"AM data: unknown flags {raw.flags:#x}")
    to_all = bool(raw.flags & _TO_ALL)
    if to_all and raw.dest != 0:
        raise WireError("AM data: a message to all names no destination")
    if not to_all and raw.dest == 0:
        raise WireError("AM data: a unicast names no destination")
    return Data(None if to_all else int(raw.dest), bytes(raw.payload))


class MessageService(LinkedService):
    """One-way messages (see the module docstring). Read the inbox with :meth:`receive`."""

    def __init__(
        self, transport: GroupTransport, *, drops: DropCounter | None = None, inbox: int = 1024
    ) -> None:
        self._link = GroupLink(transport, Service.AM, self, drops=drops)
        self._inbox: Feed[AmMessage] = Feed(inbox)
        self.not_for_us = 0  # unicasts to other members, dropped silently

    @property
    def members(self) -> tuple[int, ...]:
        return self._link.members

    async def send(self, dest: int | None, payload: bytes) -> None:
        """Send ``payload`` to member ``dest`` (or to all with ``ALL``); returns once sent.

        Raises UnavailableError if ``dest`` is not a member of the current view.
        """
        if len(payload) > MAX_BLOB:
            raise UsageError("AM payload too large")
        if dest is not None:
            if not 0 < dest <= 0xFFFFFFFF:
                raise UsageError(f"node id {dest} is out of range")
            if dest not in self._link.members:
                raise UnavailableError(f"node {dest} is not a member of the AM group")
        await self._link.send(Kind.DATA, encode_data(Data(dest, payload)))

    def receive(self) -> Feed[AmMessage]:
        """The inbox: iterate it (``async for``); it ends when the service closes."""
        return self._inbox

    async def recv(self) -> AmMessage:
        """The next message in the inbox."""
        return await self._inbox.get()

    # -- Receiver ----------------------------------------------------------------------------

    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        msg = decode(kind, body)
        if msg.dest is not None and msg.dest != self._link.node_id:
            self.not_for_us += 1
            return
        if not self._inbox.put(AmMessage(sender, msg.payload, msg.dest is None)):
            self._link.drop("inbox-full", sender, "the AM inbox is full")

    def on_view(self, view: View) -> None:
        pass

    def on_stop(self, error: HaosError | None) -> None:
        self._inbox.end(error)
