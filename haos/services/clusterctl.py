"""The cluster daemon's control channel (:mod:`haos.services.control`): one JSON request per
connection, answered from the daemon's services; ``watch``, ``events`` and ``orders`` stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from haos import jsonlines, trace
from haos.cluster.dss.checkpoint.replica import Role
from haos.cluster.dss.checkpoint.service import Checkpoint
from haos.cluster.dss.corosync._lib import TRY_AGAIN_RETRIES
from haos.errors import HaosError, NotOpenError, UnavailableError, UsageError
from haos.services.control import OPS as CONTROL_OPS
from haos.services.intents import submit_intent
from haos.services.leaving import LEAVE

if TYPE_CHECKING:
    from haos.services.clusterd import NodeDaemon

log = logging.getLogger("haos.services.clusterd")


class ControlServer:
    """Serves one node daemon's control socket."""

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
                op, request = CONTROL_OPS.check(message)
            except UsageError as e:  # not JSON, a bad field, a line over the limit: say so
                log.warning("control request refused: %s", e)
                await self._send(writer, {"ok": False, "error": e.code, "message": str(e)})
                return  # and close: the rest of an overlong line is not read
            if op == "watch":
                await self._watch(writer, request)
            elif op == "events" and request["cluster"]:
                await self._cluster_events(writer, request)
            elif op == "events":
                await self._events(writer)
            elif op == "orders":
                await self._stream_orders(reader, writer)
            else:
                await self._send(writer, await self._answer(op, request))
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

    async def _answer(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"ok": True, **await self._do(op, req)}
        except HaosError as e:
            return {"ok": False, "error": e.code, "message": str(e)}
        except (KeyError, TypeError, ValueError) as e:
            return {"ok": False, "error": "usage", "message": f"bad {op} request: {e!r}"}

    async def _do(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        ccr, cmm = self.d.ccr, self.d.cmm
        assert ccr is not None and cmm is not None
        if op == "status":
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
        if op == "put":
            rev = await ccr.put(req["key"], req["value"], expect_revision=req.get("expect"))
            return {"revision": rev}
        if op == "delete":
            return {"revision": await ccr.delete(req["key"], expect_revision=req.get("expect"))}
        if op == "get":
            item = await ccr.get(req["key"])
            if item is None:
                return {"value": None, "revision": None}
            return {"value": item.value.decode("utf-8", "replace"), "revision": item.mod_revision}
        if op == "range":
            rev, items = await ccr.range(req.get("prefix", "/"))
            return {
                "revision": rev,
                "items": {i.key: i.value.decode("utf-8", "replace") for i in items},
            }
        if op.startswith("ckpt_"):
            return await self._checkpoint(op, req)
        if op == "boot_gates":
            return self.d.boot_gates()
        if op.startswith("name_"):
            return await self._names(op, req)
        if op == "notices":
            return {"notices": list(self.d.notices)}
        if op == "availability":  # the ASR's report, from the active availability service
            assert self.d.api is not None
            return dict(await self.d.api.to_master("availability", {"since": req["since"]}))
        if op == "operator":  # an intent through the repository (haos.services.intents)
            timeout = float(req.get("timeout", 10.0))
            action, target = str(req["action"]), str(req["target"])
            if action == LEAVE and target == self.d.me.name and self.d.departure is not None:
                return await self.d.departure.prepare(timeout)  # this node is stopping
            return await submit_intent(ccr, action, target, self.d.me.name, timeout)
        assert self.d.api is not None
        answer = await self.d.api.control(op, req)
        if answer is not None:
            return answer
        raise UsageError(f"unknown op {op!r}")

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

    async def _checkpoint(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        """ckpt_open (name, role), ckpt_write (name, section, data, sync), ckpt_read."""
        assert self.d.crc is not None
        name = str(req["name"])
        trace.point(f"cd.{op}", name)
        if op == "ckpt_open":
            role = Role.ACTIVE if req.get("role") == "active" else Role.STANDBY
            persistent = req.get("persistent", False)
            if not isinstance(persistent, bool):
                raise UsageError(f"ckpt_open: 'persistent' must be true or false: {persistent!r}")
            view = self.d.cmm.view if self.d.cmm is not None else ()
            opened = await self.d.crc.open(name, role, covering=view, persistent=persistent)
            self.checkpoints[name] = opened
            return {"replicas": list(opened.replicas), "synced": opened.synced}
        ckpt = self.checkpoints.get(name)
        if ckpt is None:
            raise NotOpenError(f"checkpoint {name!r} is not open on this node")
        if op == "ckpt_write":
            started = time.perf_counter()
            await ckpt.write(
                str(req["section"]), str(req["data"]).encode(), sync=bool(req.get("sync", True))
            )
            trace.point("cd.ckpt_written", name)
            return {"elapsed_ms": (time.perf_counter() - started) * 1000.0}
        if op == "ckpt_read":
            data = ckpt.read(str(req["section"]))
            return {"data": None if data is None else data.decode("utf-8", "replace")}
        raise UsageError(f"unknown op {op!r}")

    async def _watch(self, writer: asyncio.StreamWriter, req: dict[str, Any]) -> None:
        assert self.d.ccr is not None
        try:
            watch = self.d.ccr.watch(req.get("prefix", "/"), after=req.get("after"))
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

    async def _stream_orders(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The agent's feed: the full desired state of this node's components, then orders.

        Ends as soon as the agent hangs up (it sends nothing after its request), not only at
        the next order: a stopping node must know its agent is gone (haos.services.leaving)."""
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

    async def _events(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.d.subscribers.append(queue)
        try:
            await self._send(writer, {"ok": True})
            while True:
                await self._send(writer, await queue.get())
        finally:
            self.d.subscribers.remove(queue)

    async def _cluster_events(self, writer: asyncio.StreamWriter, req: dict[str, Any]) -> None:
        """The records this node keeps (at or after ``since``; all of them without ``follow``),
        then, with ``follow``, each new one as it comes."""
        news = self.d.news
        if news is None:
            error = UnavailableError("the cluster events are not running yet")
            await self._send(writer, {"ok": False, "error": error.code, "message": str(error)})
            return
        since, follow = req["since"], req["follow"]
        # Subscribed before the backlog is read (no await between): nothing falls in between.
        with news.follow() as feed:
            backlog = news.ring.since(since) if since is not None or not follow else []
            await self._send(writer, {"ok": True})
            for record in backlog:
                await self._send(writer, record.to_json())
            if not follow:
                return
            try:
                async for record in feed:
                    await self._send(writer, record.to_json())
            except HaosError as e:
                await self._send(writer, {"ok": False, "error": e.code, "message": str(e)})

    async def _names(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        """The names applications bind (haos.services.names): name_bind, _lookup, _drop."""
        names = self.d.names
        if names is None:
            raise UnavailableError("the naming service is not running yet")
        if op == "name_bind":
            return await names.bind(req["component"], req["name"], req["handle"])
        if op == "name_lookup":
            return names.lookup(req["name"])
        return await names.drop(req["component"])
