"""The methods cluster daemons call on each other (RRPC), and the control ops built on them.

On every node (whether or not it is the master):

* ``orders`` — the master's dispatcher delivers a :class:`~.executor.Batch` for this node;
* ``report`` / ``event`` / ``desired`` / ``crim`` — served by the *active*
  availability service only; elsewhere they fail with UnavailableError, and callers go to the
  current CMM master (:meth:`ClusterApi.to_master`, retried while the master is changing).

Control ops (from the node's agent and from ``haosctl``), each a row of the daemon's table
(:data:`haos.services.clusterctl.OPERATIONS`) bound to a method here: ``report`` (an
ErrorReport), ``event`` (component ``available`` / ``offline-requested``), ``applied`` (a
graceful role order carried out), ``crim`` (the CRIM's state for ``haosctl status``),
``running`` (what a local component runs as), ``history`` (the node's record of the CRIM's
decisions and notifications, for ``haosctl history``), ``desired`` (this node's roles);
``orders`` is a stream (see the daemon). Operator commands go through the repository instead
(:mod:`haos.services.intents`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from haos import trace
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.snapshot import to_data
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.messaging.rrpc import Call, RemoteError, RpcService
from haos.config.model import NodeSpec
from haos.errors import HaosError, NotActiveError, UnavailableError, UsageError
from haos.services import controlops as ops
from haos.services.crimd import AvailabilityService, ServiceRole
from haos.services.orderbook import (
    Batch,
    NodeOrders,
    batch_from_json,
    decode,
    encode,
    running_from_json,
)
from haos.services.orders import RoleOrder, order_from_json, report_from_json

log = logging.getLogger(__name__)

STOPPED = frozenset({"failed", "offline"})  # what a component's agent says when it stopped
RUNNING_WAIT = 0.5  # s a node gets to say what its components run as, for a status

COMPONENT_EVENTS: dict[str, Callable[[str], ev.Event]] = {
    "available": ev.ComponentAvailable,
    "offline-requested": ev.OfflineRequested,
}


class RpcChannel:
    """:class:`~.executor.OrderChannel` over RRPC, by node name; this node's own orders go
    straight to its order book (no round trip through corosync)."""

    def __init__(
        self,
        rpc: RpcService,
        node_ids: dict[str, int],
        local: tuple[str, NodeOrders] | None = None,
        timeout: float = 1.0,
    ) -> None:
        self._rpc = rpc
        self._ids = node_ids
        self._local = local
        self._timeout = timeout

    async def send(self, node: str, payload: dict[str, Any]) -> None:
        if self._local is not None and node == self._local[0]:
            self._local[1].receive(batch_from_json(payload))
            return
        await self._rpc.call(
            self._ids[node], "orders", encode(payload), timeout=self._timeout, retries=1
        )


class ClusterApi:
    def __init__(
        self,
        me: NodeSpec,
        topo: Topology,
        rpc: RpcService,
        master: Callable[[], int | None],
        orders: NodeOrders,
        availability: Callable[[], AvailabilityService | None],
        applied: Callable[[RoleOrder, int | None], None] = lambda order, epoch: None,
        node_ids: Mapping[str, int] | None = None,
        desired: Callable[[str], Batch | None] = lambda node: None,
        on_stopped: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        """``node_ids``: every node's corosync id by name (to ask them what they run).
        ``desired``: the full desired state a node may take now, as the master's dispatcher
        has handed it out (a promotion still held behind a switchover is not in it).
        ``on_stopped``: told each local component its agent says failed or went offline."""
        self._me = me
        self._topo = topo
        self._rpc = rpc
        self._master = master
        self._orders = orders
        self._availability = availability
        self._on_applied_cb = applied
        self._on_stopped = on_stopped
        self._ids = dict(node_ids or {})
        self._desired = desired
        for method, handler in (
            ("orders", self._on_orders),
            ("report", self._on_report),
            ("event", self._on_event),
            ("running", self._on_running),
            ("desired", self._on_desired),
            ("crim", self._on_crim),
            ("applied", self._on_applied),
        ):
            rpc.register(method, handler)

    # -- RRPC handlers ----------------------------------------------------------------------

    async def _on_orders(self, call: Call) -> bytes:
        self._orders.receive(batch_from_json(decode(call.payload, "orders")))
        return b"{}"

    def _active(self) -> AvailabilityService:
        a = self._availability()
        if a is None or a.role is not ServiceRole.ACTIVE or a.brain is None:
            raise NotActiveError(f"node {self._me.name} is not the active availability service")
        return a

    async def _on_report(self, call: Call) -> bytes:
        report = report_from_json(decode(call.payload, "report"))
        trace.point("crim.report", report.component)
        correlation = await self._active().report(report)
        return encode({"forwarded": len(correlation.reports)})

    async def _on_event(self, call: Call) -> bytes:
        req = decode(call.payload, "event")
        make = COMPONENT_EVENTS.get(str(req.get("kind"))) if isinstance(req, dict) else None
        if make is None or not isinstance(req.get("component"), str):
            raise UsageError(f"event: bad request {req!r}")
        return encode(_decision(await self._active().submit(make(req["component"]))))

    async def _on_applied(self, call: Call) -> bytes:
        """A node carried out a graceful role order; the confirmation names that order."""
        req = decode(call.payload, "applied")
        raw = req.get("order") if isinstance(req, dict) else None
        order = order_from_json(raw) if isinstance(raw, dict) and "seq" in raw else None
        epoch = req.get("epoch") if isinstance(req, dict) else None
        bad_epoch = epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool))
        if not isinstance(order, RoleOrder) or bad_epoch:
            raise UsageError(f"applied: bad request {req!r}: a role order with its seq expected")
        self._active()
        self._on_applied_cb(order, epoch)
        return b"{}"

    async def _on_running(self, call: Call) -> bytes:
        del call
        return encode({c: r.to_json() for c, r in self._orders.running.items()})

    async def _gather_running(self, nodes: list[str]) -> dict[str, dict[str, Any] | None]:
        """Each node's ``running`` map (None for a node that did not answer in time)."""

        async def one(node: str) -> dict[str, Any] | None:
            if node == self._me.name:
                return {c: r.to_json() for c, r in self._orders.running.items()}
            if node not in self._ids:
                return None
            try:
                raw = await self._rpc.call(self._ids[node], "running", b"{}", timeout=RUNNING_WAIT)
                answer = decode(raw, "running")
            except HaosError as e:
                log.debug("running states of %s not known: %s", node, e)
                return None
            return answer if isinstance(answer, dict) else None

        answers = await asyncio.gather(*(one(n) for n in nodes))
        return dict(zip(nodes, answers, strict=True))

    async def _on_desired(self, call: Call) -> bytes:
        req = decode(call.payload, "desired")
        node = req.get("node") if isinstance(req, dict) else None
        if node not in self._topo.nodes:
            raise UsageError(f"desired: unknown node {node!r}")
        self._active()
        batch = self._desired(node)
        if batch is None:
            raise UnavailableError(f"no desired state handed to {node} yet; ask again")
        return encode(batch.to_json())

    async def _on_crim(self, call: Call) -> bytes:
        a = self._active()
        assert a.brain is not None
        crim, topo = a.brain.crim, self._topo
        members = sorted(n for n, rt in crim.nodes.items() if rt.member)
        running = await self._gather_running(members)
        instances = {
            si: {
                "group": topo.instances[si].group,
                "primary": crim.primaries(si, topo),
                "secondary": crim.secondaries(si, topo),
                "assigned": si in crim.served,
                "served": serving(crim.primaries(si, topo), topo.host_of, running),
                "outage_since": crim.outages.get(si),
            }
            for si in sorted(topo.instances)
        }
        groups = {
            g: {"redundancy": spec.model.value, "members": list(spec.members)}
            for g, spec in topo.groups.items()
        }
        return encode(
            {
                "seq": a.brain.seq,
                "epoch": a.brain.epoch,
                "master": self._me.name,
                "took_over_at": a.took_over_at,
                "crim": to_data(crim),
                "instances": instances,
                "groups": groups,
                "hosts": {c: n for c, n in topo.host_of.items() if n is not None},
                "running": running,
            }
        )

    # -- calling the master -----------------------------------------------------------------

    async def to_master(self, method: str, payload: dict[str, Any], within: float = 5.0) -> Any:
        """Call ``method`` on the active availability service, following master changes
        until ``within`` seconds have passed; UnavailableError after that."""
        deadline = asyncio.get_running_loop().time() + within
        last: HaosError | None = None
        while True:
            master = self._master()
            if master is not None:
                try:
                    raw = await self._rpc.call(master, method, encode(payload), timeout=1.0)
                    return decode(raw, method)
                except RemoteError as e:
                    if e.remote_code != NotActiveError.code:
                        raise
                    last = e
                except UnavailableError as e:
                    last = e
            if asyncio.get_running_loop().time() >= deadline:
                why = last or "no master"
                raise UnavailableError(f"{method}: no active availability service: {why}")
            await asyncio.sleep(0.05)

    async def pull_desired(self) -> None:
        """Whenever this node lacks its full desired state (at start, after it lost quorum):
        ask the master for it until it has it. Runs until cancelled."""
        while True:
            await self._orders.wait_unsynced()
            try:
                obj = await self.to_master("desired", {"node": self._me.name}, within=1.0)
                self._orders.receive(batch_from_json(obj))
            except HaosError as e:
                log.debug("desired state not yet known: %s", e)
                await asyncio.sleep(0.2)

    # -- control ops (the rows of haos.services.clusterctl.OPERATIONS that come here) -------

    async def report(self, req: ops.Report) -> dict[str, Any]:
        return dict(await self.to_master("report", dict(req.report)))

    async def event(self, req: ops.Event) -> dict[str, Any]:
        return dict(await self.to_master("event", {"kind": req.kind, "component": req.component}))

    async def applied(self, req: ops.Applied) -> dict[str, Any]:
        payload = {"order": dict(req.order), "epoch": req.epoch}
        return dict(await self.to_master("applied", payload))

    async def crim(self, req: ops.Crim) -> dict[str, Any]:
        del req
        return dict(await self.to_master("crim", {}))

    async def running(self, req: ops.Running) -> dict[str, Any]:
        """What a local component runs as, from its agent; its names go once it stopped."""
        component, state = running_from_json(dataclasses.asdict(req))  # the state's name
        self._orders.ran(component, state)
        if self._on_stopped is not None and state.state in STOPPED:
            await self._on_stopped(component)
        return {}

    async def history(self, req: ops.History) -> dict[str, Any]:
        return {"history": list(self._orders.history)[-req.limit :]}

    async def desired(self, req: ops.Desired) -> dict[str, Any]:
        del req
        return {
            "synced": self._orders.synced,
            "seq": self._orders.seq,
            "roles": {c: s.value for c, s in self._orders.roles.items()},
        }


def serving(
    primaries: list[str],
    host_of: Mapping[str, str | None],
    running: Mapping[str, Mapping[str, Any] | None],
) -> bool:
    """Whether an instance is served: it has a primary, and each of its primaries' node
    agents says that component runs as primary (not merely that the CRIM assigned it)."""
    if not primaries:
        return False
    for comp in primaries:
        node = host_of.get(comp)
        if node is None:
            continue  # not run by a node agent (hardware above the nodes)
        states = running.get(node)
        said = None if states is None else states.get(comp)
        if not isinstance(said, Mapping) or said.get("state") != "primary":
            return False
    return True


def _decision(d: Decision) -> dict[str, Any]:
    return {"reason": d.reason, "refused": d.refused}
