"""GroupLink's sending: straight to a transport that takes a message without waiting, through
the outbox task otherwise; in order either way; a failed send reaches who waits for it."""

from __future__ import annotations

import asyncio

import pytest

from haos.cluster.dss import wire
from haos.cluster.dss.messaging.group import GroupLink
from haos.cluster.dss.transport import TransportEvent, View
from haos.cluster.dss.wire import Service
from haos.errors import HaosError, UnavailableError

pytestmark = pytest.mark.timeout(30)


class Silent:
    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        pass

    def on_view(self, view: View) -> None:
        pass

    def on_stop(self, error: HaosError | None) -> None:
        pass


class Waiting:
    """A transport whose send waits (one loop iteration), and that has no ``post``."""

    node_id = 1

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.events: asyncio.Queue[TransportEvent] = asyncio.Queue()

    async def send(self, payload: bytes) -> None:
        await asyncio.sleep(0)
        self.sent.append(payload)

    async def next_event(self) -> TransportEvent:
        return await self.events.get()

    async def close(self) -> None:
        pass


class Posting(Waiting):
    """A transport that takes a message without waiting; ``broken`` makes it refuse."""

    broken: HaosError | None = None

    def post(self, payload: bytes) -> None:
        if self.broken is not None:
            raise self.broken
        self.sent.append(payload)


def bodies(sent: list[bytes]) -> list[bytes]:
    return [wire.decode(p).body for p in sent]


def test_a_posting_transport_gets_each_message_at_once_and_in_order() -> None:
    async def go() -> None:
        transport = Posting()
        link = GroupLink(transport, Service.CRC, Silent())
        link.post(1, b"a")
        assert bodies(transport.sent) == [b"a"]  # no loop iteration needed
        await link.send(1, b"b")
        link.post(1, b"c")
        assert bodies(transport.sent) == [b"a", b"b", b"c"]

    asyncio.run(go())


def test_a_waiting_transport_gets_them_through_the_outbox_in_order() -> None:
    async def go() -> None:
        transport = Waiting()
        link = GroupLink(transport, Service.CRC, Silent())
        running = asyncio.create_task(link.run())
        link.post(1, b"a")
        assert transport.sent == []  # the outbox task sends it later
        sending = asyncio.create_task(link.send(1, b"b"))
        await asyncio.sleep(0)  # b queued; its send waits for the outbox task
        link.post(1, b"c")
        await sending
        await asyncio.sleep(0.01)
        assert bodies(transport.sent) == [b"a", b"b", b"c"]
        await link.close()
        running.cancel()

    asyncio.run(go())


def test_a_refused_message_fails_the_send_that_waits_and_only_logs_a_post(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        transport = Posting()
        transport.broken = UnavailableError("corosync went away")
        link = GroupLink(transport, Service.CRC, Silent())
        with pytest.raises(UnavailableError, match="corosync went away"):
            await link.send(1, b"a")
        link.post(1, b"b")
        assert transport.sent == []

    asyncio.run(go())
    assert "send failed: corosync went away" in caplog.text
