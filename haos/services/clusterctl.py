"""The cluster daemon's control channel (:mod:`haos.services.control`): one JSON request per
connection, answered from the daemon's services; ``watch``, ``events`` and ``orders`` stream.

:data:`OPERATIONS` is the one table of its operations: each typed request
(:mod:`haos.services.controlops`) bound to the handler it calls. A request that is not one
(an unknown op, a field unknown, missing, of the wrong type or out of range) is answered with
a ``usage`` error naming it before any handler runs, and the connection closes; the daemon
serves on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from haos import jsonlines, trace
from haos.cluster.copco.leases import MAINTENANCE
from haos.cluster.dss.checkpoint.replica import Role
from haos.cluster.dss.checkpoint.service import Checkpoint
from haos.cluster.dss.corosync._lib import TRY_AGAIN_RETRIES
from haos.errors import HaosError, NotOpenError, UnavailableError, UsageError
from haos.services import controlops as ops
from haos.services.clusterapi import ClusterApi
from haos.services.intents import submit_intent
from haos.services.leaving import LEAVE
from haos.services.oplocks import OpLocks

if TYPE_CHECKING:
    from haos.cluster.dss.ccr.service import CcrService
    from haos.services.clusterd import NodeDaemon
    from haos.services.names import NameDirectory

R = TypeVar("R")

log = logging.getLogger("haos.services.clusterd")


class ControlServer:
    """Serves one node daemon's control socket: each request is parsed into its typed request
    (:mod:`haos.services.controlops`) and handed to its row of :data:`OPERATIONS`."""

    def __init__(self, daemon: NodeDaemon) -> None:
        self.d = daemon
        self.checkpoints: dict[str, Checkpoint] = {}

    async def serve(self, path: str) -> asyncio.Server:
        return await jsonlines.start_unix_server(self._client, path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                message = await jsonlines.read_message(reader)
                if message is None:
                    return
                row, request = OPERATIONS.parse(message)
            except UsageError as e:  # not JSON, a bad field, a line over the limit: say so
                log.warning("control request refused: %s", e)
                await self._send(writer, {"ok": False, "error": e.code, "message": str(e)})
                return  # and close: the rest of an overlong line is not read
            if isinstance(row, ops.Stream):
                await row.handler(self, request, reader, writer)
            else:
                await self._send(writer, await self._answer(row, request))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        try:
            line = jsonlines.encode(obj, what="answer")
        except jsonlines.LineTooLong as e:  # e.g. a range over a huge subtree
            line = jsonlines.encode({"ok": False, "error": e.code, "message": str(e)})
        writer.write(line)
        await writer.drain()

    async def _answer(self, row: ops.Answer[ControlServer, Any], request: Any) -> dict[str, Any]:
        try:
            return {"ok": True, **await row.handler(self, request)}
        except HaosError as e:
            return {"ok": False, "error": e.code, "message": str(e)}
        except (KeyError, TypeError, ValueError) as e:
            log.warning("control op %s failed", row.name, exc_info=True)
            return {"ok": False, "error": "usage", "message": f"bad {row.name} request: {e!r}"}

    def _ccr(self) -> CcrService:
        assert self.d.ccr is not None, "the control socket serves once the repository runs"
        return self.d.ccr

    @property
    def api(self) -> ClusterApi:
        assert self.d.api is not None, "the control socket serves once the cluster API runs"
        return self.d.api

    # -- this node --------------------------------------------------------------------------

    async def status(self, req: ops.Status) -> dict[str, Any]:
        del req
        ccr, cmm = self._ccr(), self.d.cmm
        assert cmm is not None
        st = ccr.status()
        return {
            "node_id": self.d.me.node_id,
            "node": self.d.me.name,
            "node_names": {n.node_id: n.name for n in self.d.config.nodes},
            "members": sorted(cmm.state.members),
            "fence_pending": sorted(p.node_id for p in cmm.state.peers if p.must_fence),
            "quorate": cmm.state.quorate,
            # False until this daemon was in a quorate view with a peer: till then a view
            # smaller than the cluster gives it no quorum (it waits for its peers)
            "synced_with_peer": cmm.state.synced_with_peer,
            "master": cmm.master,
            "vice_master": cmm.vice_master,
            "demoted": self.d.demoted,
            "ccr": {
                "phase": str(st.phase),
                "synced": st.synced,
                "writable": st.writable,
                "revision": st.revision,
                "members": list(st.members),
            },
            "hash": ccr.content_hash().hex(),
            "try_again": dict(TRY_AGAIN_RETRIES),
            "settings": dataclasses.asdict(self.d.live),
            "availability": self._availability_status(),
        }

    async def boot_gates(self, req: ops.BootGates) -> dict[str, Any]:
        del req
        return self.d.boot_gates()

    async def notices(self, req: ops.Notices) -> dict[str, Any]:
        del req
        return {"notices": list(self.d.notices)}

    async def availability(self, req: ops.Availability) -> dict[str, Any]:
        """The ASR's report, from the active availability service."""
        return dict(await self.api.to_master("availability", {"since": req.since}))

    async def operator(self, req: ops.Operator) -> dict[str, Any]:
        """An intent through the repository (haos.services.intents); a leave of this very
        node, while it stops, is prepared here instead."""
        if req.action == LEAVE and req.target == self.d.me.name and self.d.departure is not None:
            return await self.d.departure.prepare(req.timeout)  # this node is stopping
        return await submit_intent(self._ccr(), req.action, req.target, self.d.me.name, req.timeout)

    # -- the repository ---------------------------------------------------------------------

    async def put(self, req: ops.Put) -> dict[str, Any]:
        return {"revision": await self._ccr().put(req.key, req.value, expect_revision=req.expect)}

    async def get(self, req: ops.Get) -> dict[str, Any]:
        item = await self._ccr().get(req.key)
        if item is None:
            return {"value": None, "revision": None}
        return {"value": item.value.decode("utf-8", "replace"), "revision": item.mod_revision}

    async def range(self, req: ops.Range) -> dict[str, Any]:
        rev, items = await self._ccr().range(req.prefix)
        return {
            "revision": rev,
            "items": {i.key: i.value.decode("utf-8", "replace") for i in items},
        }

    def _availability_status(self) -> dict[str, Any] | None:
        a = self.d.availability
        if a is None:
            return None
        return {
            "role": str(a.role),
            "seq": a.brain.seq if a.brain is not None else None,
            "epoch": a.brain.epoch if a.brain is not None else None,
            "follows_epoch": self.d.orders.epoch,
            "restored_at": a.restored_at,
            "refusal": a.refusal,
        }

    # -- checkpoints ------------------------------------------------------------------------

    async def ckpt_open(self, req: ops.CkptOpen) -> dict[str, Any]:
        assert self.d.crc is not None
        trace.point("cd.ckpt_open", req.name)
        role = Role.ACTIVE if req.role == "active" else Role.STANDBY
        view = self.d.cmm.view if self.d.cmm is not None else ()
        opened = await self.d.crc.open(req.name, role, covering=view, persistent=req.persistent)
        self.checkpoints[req.name] = opened
        return {"replicas": list(opened.replicas), "synced": opened.synced}

    async def ckpt_write(self, req: ops.CkptWrite) -> dict[str, Any]:
        ckpt = self._opened(req.name, "cd.ckpt_write")
        started = time.perf_counter()
        await ckpt.write(req.section, req.data.encode(), sync=req.sync)
        trace.point("cd.ckpt_written", req.name)
        return {"elapsed_ms": (time.perf_counter() - started) * 1000.0}

    async def ckpt_read(self, req: ops.CkptRead) -> dict[str, Any]:
        data = self._opened(req.name, "cd.ckpt_read").read(req.section)
        return {"data": None if data is None else data.decode("utf-8", "replace")}

    def _opened(self, name: str, point: str) -> Checkpoint:
        trace.point(point, name)
        ckpt = self.checkpoints.get(name)
        if ckpt is None:
            raise NotOpenError(f"checkpoint {name!r} is not open on this node")
        return ckpt

    # -- names (haos.services.names) --------------------------------------------------------

    async def name_bind(self, req: ops.NameBind) -> dict[str, Any]:
        return await self._names().bind(req.component, req.name, req.handle)

    async def name_lookup(self, req: ops.NameLookup) -> dict[str, Any]:
        return self._names().lookup(req.name)

    def _names(self) -> NameDirectory:
        if self.d.names is None:
            raise UnavailableError("the naming service is not running yet")
        return self.d.names

    # -- operation locks (haos.services.oplocks) --------------------------------------------

    async def locks(self, req: ops.Locks) -> dict[str, Any]:
        del req
        return {"locks": [lease.to_json() for lease in await self._oplocks().leases()]}

    async def lock_take(self, req: ops.LockTake) -> dict[str, Any]:
        oplocks = self._oplocks()
        taken = await oplocks.acquire([req.subtree], MAINTENANCE, req.reason, ttl=req.duration)
        return {"lock": taken[0].to_json()}

    async def lock_release(self, req: ops.LockRelease) -> dict[str, Any]:
        return {"lock": (await self._oplocks().release_maintenance(req.subtree)).to_json()}

    async def lock_break(self, req: ops.LockBreak) -> dict[str, Any]:
        broken = await self._oplocks().break_lock(req.subtree, f"an operator on {self.d.me.name}")
        return {"lock": broken.to_json()}

    def _oplocks(self) -> OpLocks:
        if self.d.oplocks is None:
            raise UnavailableError("the operation locks are not running yet")
        return self.d.oplocks

    # -- streams ----------------------------------------------------------------------------

    async def watch(
        self, req: ops.Watch, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Committed repository changes under ``prefix`` (after ``after``), in order."""
        del reader
        try:
            watch = self._ccr().watch(req.prefix, after=req.after)
        except HaosError as e:
            await self._send(writer, {"ok": False, "error": e.code, "message": str(e)})
            return
        await self._send(writer, {"ok": True, "start": watch.start_revision})
        try:
            while True:
                for ev in await watch.next_batch():
                    value = None if ev.value is None else ev.value.decode("utf-8", "replace")
                    await self._send(
                        writer, {"revision": ev.revision, "key": ev.key, "value": value}
                    )
        except HaosError as e:
            await self._send(writer, {"ok": False, "error": e.code, "message": str(e)})
        finally:
            watch.close()

    async def orders(
        self, req: ops.Orders, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The agent's feed: the full desired state of this node's components, then orders.

        Ends as soon as the agent hangs up (it sends nothing after its request), not only at
        the next order: a stopping node must know its agent is gone (haos.services.leaving)."""
        del req
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        unsubscribe = self.d.orders.subscribe(queue.put_nowait)
        self.d.agents += 1
        hangup = asyncio.ensure_future(reader.read())
        try:
            await self._send(writer, {"ok": True})
            while True:
                item = asyncio.ensure_future(queue.get())
                await asyncio.wait((item, hangup), return_when=asyncio.FIRST_COMPLETED)
                if not item.done():
                    item.cancel()
                    return
                await self._send(writer, item.result())
        finally:
            hangup.cancel()
            if hangup.done() and not hangup.cancelled():
                hangup.exception()  # a reset connection is a hang-up like any other
            self.d.agents -= 1
            unsubscribe()
            if self.d.departure is not None:
                self.d.departure.agent_left()
            self.d.orders.agent_gone()

    async def events(
        self, req: ops.Events, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The membership notices as they come; with ``cluster``, the availability service's
        events instead."""
        del reader
        if req.cluster:
            await self._cluster_events(writer, req)
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.d.subscribers.append(queue)
        try:
            await self._send(writer, {"ok": True})
            while True:
                await self._send(writer, await queue.get())
        finally:
            self.d.subscribers.remove(queue)

    async def _cluster_events(self, writer: asyncio.StreamWriter, req: ops.Events) -> None:
        """The records this node keeps (at or after ``since``; all of them without ``follow``),
        then, with ``follow``, each new one as it comes."""
        news = self.d.news
        if news is None:
            error = UnavailableError("the cluster events are not running yet")
            await self._send(writer, {"ok": False, "error": error.code, "message": str(error)})
            return
        # Subscribed before the backlog is read (no await between): nothing falls in between.
        with news.follow() as feed:
            backlog = news.ring.since(req.since) if req.since is not None or not req.follow else []
            await self._send(writer, {"ok": True})
            for record in backlog:
                await self._send(writer, record.to_json())
            if not req.follow:
                return
            try:
                async for record in feed:
                    await self._send(writer, record.to_json())
            except HaosError as e:
                await self._send(writer, {"ok": False, "error": e.code, "message": str(e)})


def _api(
    method: Callable[[ClusterApi, R], Awaitable[dict[str, Any]]],
) -> Callable[[ControlServer, R], Awaitable[dict[str, Any]]]:
    """A handler of :class:`ClusterApi` (haos.services.clusterapi), called on the daemon's."""

    def call(server: ControlServer, req: R) -> Awaitable[dict[str, Any]]:
        return method(server.api, req)

    return call


# Every operation of the control socket: its typed request, its handler, one answer or a
# stream. Each request's fields and checks are in haos.services.controlops.
OPERATIONS: ops.Operations[ControlServer] = ops.Operations.of(
    [
        ops.Answer(ops.Status, ControlServer.status),
        ops.Answer(ops.BootGates, ControlServer.boot_gates),
        ops.Answer(ops.Notices, ControlServer.notices),
        ops.Answer(ops.Availability, ControlServer.availability),
        ops.Answer(ops.Operator, ControlServer.operator),
        ops.Answer(ops.Put, ControlServer.put),
        ops.Answer(ops.Get, ControlServer.get),
        ops.Answer(ops.Range, ControlServer.range),
        ops.Answer(ops.CkptOpen, ControlServer.ckpt_open),
        ops.Answer(ops.CkptWrite, ControlServer.ckpt_write),
        ops.Answer(ops.CkptRead, ControlServer.ckpt_read),
        ops.Answer(ops.NameBind, ControlServer.name_bind),
        ops.Answer(ops.NameLookup, ControlServer.name_lookup),
        ops.Answer(ops.Report, _api(ClusterApi.report)),
        ops.Answer(ops.Event, _api(ClusterApi.event)),
        ops.Answer(ops.Applied, _api(ClusterApi.applied)),
        ops.Answer(ops.Crim, _api(ClusterApi.crim)),
        ops.Answer(ops.Running, _api(ClusterApi.running)),
        ops.Answer(ops.History, _api(ClusterApi.history)),
        ops.Answer(ops.Desired, _api(ClusterApi.desired)),
        ops.Answer(ops.Locks, ControlServer.locks),
        ops.Answer(ops.LockTake, ControlServer.lock_take),
        ops.Answer(ops.LockRelease, ControlServer.lock_release),
        ops.Answer(ops.LockBreak, ControlServer.lock_break),
        ops.Stream(ops.Watch, ControlServer.watch),
        ops.Stream(ops.Events, ControlServer.events),
        ops.Stream(ops.Orders, ControlServer.orders),
    ]
)
