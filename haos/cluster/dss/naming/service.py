"""The CNS service: the binding table replicated on every member of one group.

Requests (bind, rebind, unbind) are multicast and applied by every member where they fall in
the agreed order; the requester's call returns the outcome once its own copy applied it.
Reads (:meth:`~NamingService.resolve`, :meth:`~NamingService.bindings_under`) are local and
see every change delivered so far. A joiner gets the table by state transfer (see
:mod:`haos.cluster.dss.messaging.statesync`): the lowest member in sync multicasts the table
after the membership change; the joiner is ready once it installed it.
"""

from __future__ import annotations

import asyncio
import logging

from haos.cluster.dss.messaging.feed import Feed
from haos.cluster.dss.messaging.group import GroupLink, LinkedService
from haos.cluster.dss.messaging.statesync import Outcome, Step, SyncTracker
from haos.cluster.dss.naming import wire
from haos.cluster.dss.naming.table import (
    Bind,
    Binding,
    Change,
    Event,
    Members,
    NameTable,
    Request,
    Unbind,
    under,
    validate_name,
)
from haos.cluster.dss.naming.table import Outcome as Result
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter, Service
from haos.errors import HaosError, UnavailableError

log = logging.getLogger(__name__)


class NamingService(LinkedService):
    """Names → handles, cluster-wide (see the module docstring and ``naming.table``)."""

    def __init__(
        self,
        transport: GroupTransport,
        *,
        drops: DropCounter | None = None,
        feed_limit: int = 1024,
    ) -> None:
        self._link = GroupLink(transport, Service.CNS, self, drops=drops)
        self._table = NameTable()
        self._sync: SyncTracker[Event] = SyncTracker(transport.node_id)
        self._in_sync = asyncio.Event()
        self._pending: dict[int, asyncio.Future[Result]] = {}
        self._next_req = 0
        self._watches: dict[Feed[Change], str] = {}
        self._feed_limit = feed_limit

    @property
    def in_sync(self) -> bool:
        return self._sync.in_sync

    async def wait_ready(self) -> None:
        """Return once this member holds the table (founded or transferred)."""
        await self._link.wait_ready()
        await self._in_sync.wait()
        self._link.check_running()

    async def bind(self, name: str, handle: bytes, owner: int | None = None) -> Binding:
        """Bind a free name; ConflictError if it is bound to something else."""
        return await self._bind(name, handle, owner, replace=False)

    async def rebind(self, name: str, handle: bytes, owner: int | None = None) -> Binding:
        """Bind ``name`` whatever it is bound to now (take-over after a fail-over)."""
        return await self._bind(name, handle, owner, replace=True)

    async def unbind(self, name: str, handle: bytes | None = None) -> bool:
        """Remove the binding (only if bound to ``handle``, if given); False if it was free.

        ConflictError if ``handle`` is given and the name is bound to another handle.
        """
        validate_name(name)
        result = await self._request(Unbind(name, handle))
        if result.error is not None:
            raise result.error
        return result.changed

    def resolve(self, name: str) -> Binding | None:
        """The binding of ``name`` as of the last delivered change."""
        self._check_in_sync()
        return self._table.resolve(name)

    def resolve_node(self, name: str) -> int | None:
        """The owner node of ``name``: makes this service an RRPC name resolver."""
        binding = self._table.resolve(name) if self.in_sync else None
        return None if binding is None else binding.owner

    def bindings_under(self, prefix: str = "/") -> list[Binding]:
        """Bindings at or below ``prefix``, sorted by name."""
        validate_name(prefix, prefix=True)
        self._check_in_sync()
        return self._table.bindings_under(prefix)

    def watch(self, prefix: str = "/", *, limit: int | None = None) -> Feed[Change]:
        """Changes at or below ``prefix`` from now on; close the feed to stop watching."""
        validate_name(prefix, prefix=True)
        self._link.check_running()
        feed: Feed[Change] = Feed(limit or self._feed_limit, on_close=self._unwatch)
        self._watches[feed] = prefix
        return feed

    # -- Receiver ----------------------------------------------------------------------------

    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        msg = wire.decode(kind, body)
        if isinstance(msg, wire.Sync):
            self._on_sync(sender, msg)
            return
        req_id, op = msg
        self._deliver(Request(sender, req_id, op))

    def on_view(self, view: View) -> None:
        self._deliver(Members(view.members))
        self._follow(self._sync.membership(view.members, view.joined, view.left))

    def on_stop(self, error: HaosError | None) -> None:
        self._in_sync.set()
        reason = error or UnavailableError("the CNS service was closed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        for feed in self._watches:
            feed.end(error)

    # -- internals ---------------------------------------------------------------------------

    async def _bind(self, name: str, handle: bytes, owner: int | None, replace: bool) -> Binding:
        validate_name(name)
        op = Bind(name, handle, self.node_id if owner is None else owner, replace)
        result = await self._request(op)
        if result.error is not None:
            raise result.error
        assert result.binding is not None
        return result.binding

    async def _request(self, op: Bind | Unbind) -> Result:
        await self.wait_ready()
        self._next_req += 1
        req = self._next_req
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            if isinstance(op, Bind):
                await self._link.send(wire.Kind.BIND, wire.encode_bind(req, op))
            else:
                await self._link.send(wire.Kind.UNBIND, wire.encode_unbind(req, op))
            return await future
        finally:
            del self._pending[req]

    def _check_in_sync(self) -> None:
        self._link.check_running()
        if not self.in_sync:
            raise UnavailableError("CNS has not received the table yet")

    def _deliver(self, event: Event) -> None:
        if self._sync.deliver(event):
            self._apply(event)

    def _apply(self, event: Event) -> None:
        result, changes = self._table.apply(event)
        self._publish(changes)
        if isinstance(event, Request) and result is not None and event.origin == self.node_id:
            future = self._pending.get(event.req_id)
            if future is not None and not future.done():
                future.set_result(result)

    def _on_sync(self, sender: int, msg: wire.Sync) -> None:
        step = self._sync.on_offer(sender, msg.offer)
        if step.outcome is Outcome.INSTALL:
            self._publish(self._table.install(msg.snapshot))
        elif step.outcome is Outcome.MERGE:
            self._publish(self._table.merge(msg.snapshot))
        elif step.outcome is Outcome.REJECT:
            self._link.drop("unexpected-sync", sender, step.reason)
        self._follow(step)

    def _follow(self, step: Step[Event]) -> None:
        if step.reason:
            log.info("CNS on node %d: %s", self.node_id, step.reason)
        for event in step.replay:
            self._apply(event)
        if step.offer is not None:
            snapshot = self._table.snapshot()
            self._link.post(wire.Kind.SYNC, wire.encode_sync(wire.Sync(step.offer, snapshot)))
        if self._sync.in_sync:
            self._in_sync.set()

    def _publish(self, changes: list[Change]) -> None:
        for change in changes:
            for feed, prefix in list(self._watches.items()):
                if under(change.name, prefix) and not feed.put(change):
                    log.warning("CNS: a watcher of %s fell behind; cutting it off", prefix)
                    self._unwatch(feed)
                    feed.end(UnavailableError("the watcher fell behind and missed changes"))

    def _unwatch(self, feed: Feed[Change]) -> None:
        self._watches.pop(feed, None)
