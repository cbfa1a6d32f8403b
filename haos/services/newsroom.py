"""The availability service's news on every node, and its availability report on the master.

:class:`ClusterNews` runs in every cluster daemon, over its own CPG group (``haos-ces``, the
CES service :class:`~haos.cluster.dss.events.EventService`):

* on the master, the availability service posts the event records of each committed decision
  (:meth:`ClusterNews.post`, the service's :class:`~haos.services.crimd.NewsSink`); they are
  published in order, without holding up the decisions;
* on every node, what is published under ``crim/`` is kept in a bounded ring (duplicates and a
  superseded master's records dropped, :class:`~haos.cluster.dss.events.record.EventRing`) and
  handed to the followers (the control socket's ``events`` stream of ``haosctl events``);
* the RRPC method ``availability`` answers, on the active availability service only, the
  ASR's report (:func:`haos.cluster.asr.report.report_json`) for ``haosctl report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from haos.cluster.asr.report import report_json
from haos.cluster.dss.events import Event, EventService
from haos.cluster.dss.events.record import PREFIX, EventRing, Record, decode, encode
from haos.cluster.dss.messaging.feed import Feed
from haos.cluster.dss.messaging.rrpc import Call, RpcService
from haos.cluster.dss.transport import GroupTransport
from haos.errors import HaosError, UnavailableError, UsageError
from haos.services import orderbook
from haos.services.crimd import AvailabilityService, ServiceRole

log = logging.getLogger(__name__)

RING_SIZE = 1000  # records each node keeps
FOLLOWER_LIMIT = 1000  # records a follower may lag behind before it is cut off


class ClusterNews:
    """See the module docstring. Run :meth:`run` in the daemon's task group."""

    def __init__(
        self,
        transport: GroupTransport,
        rpc: RpcService,
        availability: Callable[[], AvailabilityService | None],
        clock: Callable[[], float],
        ring_size: int = RING_SIZE,
    ) -> None:
        """``availability``: this node's availability service (None until it is built);
        ``clock``: wall-clock time, the ASR's (``haos.clock.wall_now``)."""
        self.ces = EventService(transport)
        self.ring = EventRing(ring_size)
        self._availability = availability
        self._clock = clock
        self._outbox: asyncio.Queue[Record] = asyncio.Queue()
        self._followers: set[Feed[Record]] = set()
        self.published = 0
        self.malformed = 0
        rpc.register("availability", self._on_availability)

    def post(self, records: Sequence[Record]) -> None:
        """Queue ``records`` for publication (the availability service's news sink)."""
        for record in records:
            self._outbox.put_nowait(record)

    @contextlib.contextmanager
    def follow(self, limit: int = FOLLOWER_LIMIT) -> Iterator[Feed[Record]]:
        """The records this node keeps from now on; the feed ends with UnavailableError if
        its reader falls ``limit`` records behind."""
        feed: Feed[Record] = Feed(limit, on_close=self._followers.discard)
        self._followers.add(feed)
        with feed:
            yield feed

    async def run(self) -> None:
        """Until closed; UnavailableError when the group broke."""
        async with asyncio.TaskGroup() as tasks:
            helpers = [tasks.create_task(self._deliver()), tasks.create_task(self._publish())]
            try:
                await self.ces.run()
            finally:
                for helper in helpers:
                    helper.cancel()

    async def wait_ready(self) -> None:
        await self.ces.wait_ready()

    async def close(self) -> None:
        await self.ces.close()

    async def _publish(self) -> None:
        await self.ces.wait_ready()
        while True:
            record = await self._outbox.get()
            try:
                await self.ces.publish(record.event_type, encode(record))
                self.published += 1
            except HaosError as e:  # the group broke: run() ends with it
                log.warning("event %s not published: %s", record.key, e)

    async def _deliver(self) -> None:
        await self.ces.wait_ready()
        while True:  # a subscription cut off for lagging is taken again (and said so)
            with self.ces.subscribe(PREFIX, prefix=True) as feed:
                try:
                    async for event in feed:
                        self._keep(event)
                    return  # the service closed
                except UnavailableError as e:
                    log.warning("cluster events: %s; subscribing again", e)

    def _keep(self, event: Event) -> None:
        try:
            record = decode(event.payload)
        except UsageError as e:
            self.malformed += 1
            log.warning("dropped a %s event from node %d: %s", event.event_type, event.publisher, e)
            return
        if not self.ring.add(record):
            log.debug("dropped event %s: not news (last kept %s)", record.key, self.ring.last)
            return
        for feed in list(self._followers):
            if not feed.put(record):
                self._followers.discard(feed)
                feed.end(UnavailableError("the follower fell behind and missed events"))

    async def _on_availability(self, call: Call) -> bytes:
        req = orderbook.decode(call.payload, "availability")
        since = req.get("since") if isinstance(req, dict) else None
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
            raise UsageError(f"availability: since must be a number, not {since!r}")
        a = self._availability()
        if a is None or a.role is not ServiceRole.ACTIVE or a.brain is None:
            raise UnavailableError("this node is not the active availability service")
        answer: dict[str, Any] = report_json(a.brain.asr, self._clock(), since)
        answer["master_seq"] = a.brain.seq
        return orderbook.encode(answer)
