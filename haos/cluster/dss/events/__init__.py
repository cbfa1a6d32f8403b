"""CES, the cluster event service: publish/subscribe by event type, cluster-wide, agreed order.

Use::

    ces = EventService(transport)            # its own group, e.g. CpgTransport "haos-ces"
    async with running(ces):
        with ces.subscribe("hw/", prefix=True) as events:
            await ces.publish("hw/fan/failed", b"slot 3")
            async for event in events: ...

:mod:`haos.cluster.dss.events.record` holds what the availability service publishes on it
(event records of its decisions) and each node's ring of them.
"""

from haos.cluster.dss.events.service import EventService
from haos.cluster.dss.events.topics import Event, Topics
from haos.cluster.dss.events.wire import validate_type

__all__ = ["Event", "EventService", "Topics", "validate_type"]
