"""The CES service: one group, every member both publishes and delivers to local subscribers.

Every member delivers every publication in the group's agreed order, so subscribers on all
nodes see the same sequence of events. A subscriber that falls more than its feed's limit
behind is cut off with UnavailableError (it knows it missed events); the others go on.
"""

from __future__ import annotations

import logging

from haos.cluster.dss.events import wire
from haos.cluster.dss.events.topics import Event, Topics
from haos.cluster.dss.messaging.feed import Feed
from haos.cluster.dss.messaging.group import GroupLink, LinkedService
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter, Service
from haos.errors import HaosError, UnavailableError

log = logging.getLogger(__name__)


class EventService(LinkedService):
    """Publish/subscribe by event type over one group (see the module docstring)."""

    def __init__(
        self,
        transport: GroupTransport,
        *,
        drops: DropCounter | None = None,
        feed_limit: int = 1024,
    ) -> None:
        self._link = GroupLink(transport, Service.CES, self, drops=drops)
        self._topics: Topics[Feed[Event]] = Topics()
        self._feed_limit = feed_limit
        self._seq = 0
        self.delivered = 0

    async def publish(self, event_type: str, payload: bytes = b"") -> None:
        """Multicast an event; returns once sent (subscribers get it in agreed order)."""
        wire.validate_type(event_type)
        self._seq += 1
        body = wire.encode_publish(wire.Publish(self._seq, event_type, payload))
        await self._link.send(wire.Kind.PUBLISH, body)

    def subscribe(
        self, pattern: str, *, prefix: bool = False, limit: int | None = None
    ) -> Feed[Event]:
        """Events whose type is ``pattern`` (or starts with it, with ``prefix``), from now on.

        Iterate the feed; close it (or use ``with``) to unsubscribe.
        """
        wire.validate_type(pattern, prefix=prefix)
        self._link.check_running()
        feed: Feed[Event] = Feed(limit or self._feed_limit, on_close=self._topics.remove)
        self._topics.add(pattern, feed, prefix=prefix)
        return feed

    # -- Receiver ----------------------------------------------------------------------------

    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        msg = wire.decode(kind, body)
        event = Event(msg.event_type, msg.payload, sender, msg.seq)
        self.delivered += 1
        for feed in self._topics.match(event.event_type):
            if not feed.put(event):
                log.warning("CES: a subscriber to %r fell behind; cutting it off", msg.event_type)
                self._topics.remove(feed)
                feed.end(UnavailableError("the subscriber fell behind and missed events"))

    def on_view(self, view: View) -> None:
        pass  # events are not retained: a joiner sees publications from its join on

    def on_stop(self, error: HaosError | None) -> None:
        for feed in self._topics.all():
            feed.end(error)
