"""Carrying out the CRIM's decisions across the cluster (see ``docs/node-agent.md``).

* :class:`Dispatcher` — the active availability service's :class:`~.crimd.ActionSink`: each
  decision's orders go into the hosting node's outbox; one sender per node delivers them in
  order over RRPC (``orders``). A node that could not be reached is marked *stale* and gets the
  full set of its desired roles before its next orders (:meth:`Dispatcher.resync` does that for
  every node after a take-over: a decision cut short by the old master is carried out again).
* the receiving side, on every node, is :class:`~haos.services.orderbook.NodeOrders`.

The transport is a small protocol (:class:`OrderChannel`) so the policy of who gets what, in
which order, is tested without corosync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from haos.cluster.crim.actions import AssignRole, Decision
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.errors import HaosError
from haos.model.states import AvailabilityState
from haos.services.orderbook import Batch
from haos.services.orders import desired_roles, notes_of, orders_for

log = logging.getLogger(__name__)


class OrderChannel(Protocol):
    async def send(self, node: str, payload: dict[str, Any]) -> None:
        """Deliver ``payload`` to ``node``'s :meth:`NodeOrders.receive`; raises HaosError
        when it may not have arrived."""
        ...


@dataclass
class _Hold:
    """In a node's outbox: what follows waits until ``gates`` (component, state) were all
    confirmed applied, or ``until`` (loop time) passed."""

    gates: frozenset[tuple[str, str]]
    until: float
    released: asyncio.Event = field(default_factory=asyncio.Event)


class Dispatcher:
    """See the module docstring. Run :meth:`run` in the daemon's task group."""

    def __init__(
        self,
        topo: Topology,
        channel: OrderChannel,
        clock: Callable[[], float] = time.time,
        quiesce_wait: float = 10.0,
    ) -> None:
        self._topo = topo
        self._channel = channel
        self._clock = clock
        self._quiesce_wait = quiesce_wait
        self._confirmed: set[tuple[str, str]] = set()
        self._holds: list[_Hold] = []
        self._outbox: dict[str, asyncio.Queue[Batch | _Hold]] = {
            n: asyncio.Queue() for n in topo.nodes
        }
        self._stale: set[str] = set()
        self._crim: CrimState | None = None
        self._seq = 0
        self._epoch = 0  # of the mastership whose decisions this dispatcher carries out
        self.sent = 0
        self.failed = 0

    async def carry_out(self, seq: int, decision: Decision) -> None:
        """Queue the decision's orders; returns at once. A planned switchover is carried out
        in two steps: the nodes of the primaries that quiesce get theirs first; every other
        node's outbox holds (this decision's orders and whatever follows them) until those
        primaries confirmed, or ``quiesce_wait`` passed, so the new primary never serves
        beside the old one -- and nothing else waits meanwhile."""
        self._crim, self._seq = decision.state, seq
        orders = orders_for(self._topo, seq, decision)
        notes = tuple(notes_of(seq, self._clock(), decision))
        gates = {
            (a.component, a.new.value)
            for a in decision.actions
            if isinstance(a, AssignRole)
            and a.graceful
            and a.old is AvailabilityState.PRIMARY
            and a.new is not AvailabilityState.PRIMARY
        }
        first = {self._topo.host_of.get(c) for c, _ in gates}
        hold = None
        if gates:
            until = asyncio.get_running_loop().time() + self._quiesce_wait
            hold = _Hold(frozenset(gates), until)
            self._holds.append(hold)
        for node, box in self._outbox.items():  # every node keeps the history
            if hold is not None and node not in first:
                box.put_nowait(hold)
            box.put_nowait(Batch(seq, tuple(orders.get(node, ())), None, notes, self._epoch))

    def applied(self, component: str, state: str) -> None:
        """A node confirmed that ``component`` reached ``state`` (a graceful change). Kept
        only while a hold waits for it: a confirmation that came after its hold gave up must
        not release a later switchover of the same component early."""
        gate = (component, state)
        if any(gate in hold.gates for hold in self._holds):
            self._confirmed.add(gate)
            self._release()

    def _release(self) -> None:
        for hold in [h for h in self._holds if h.gates <= self._confirmed]:
            self._holds.remove(hold)
            self._confirmed -= hold.gates
            hold.released.set()

    async def _wait(self, hold: _Hold) -> None:
        if hold.released.is_set():
            return
        left = hold.until - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, left)):
                await hold.released.wait()
        except TimeoutError:
            if hold in self._holds:
                self._holds.remove(hold)
                self._confirmed -= hold.gates
                log.warning("switchover: %s not confirmed in time; going on", set(hold.gates))
            hold.released.set()

    def resync(self, seq: int, crim: CrimState, epoch: int = 0) -> None:
        """Send every node its full desired state (after a take-over); every batch from now
        on names ``epoch``, the mastership that took over."""
        self._crim, self._seq, self._epoch = crim, seq, epoch
        for node in self._topo.nodes:
            self._outbox[node].put_nowait(self._full(node))

    def _full(self, node: str) -> Batch:
        assert self._crim is not None
        return Batch(self._seq, (), desired_roles(self._topo, self._crim, node), (), self._epoch)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for node in self._topo.nodes:
                tasks.create_task(self._sender(node))

    async def _sender(self, node: str) -> None:
        box = self._outbox[node]
        while True:
            batch = await box.get()
            if isinstance(batch, _Hold):
                await self._wait(batch)
                continue
            if node in self._stale and batch.roles is None and self._crim is not None:
                roles = self._full(node).roles
                batch = Batch(batch.seq, batch.orders, roles, batch.notes, batch.epoch)
            try:
                await self._channel.send(node, batch.to_json())
            except HaosError as e:
                self.failed += 1
                self._stale.add(node)
                log.warning("orders %d for %s not delivered: %s", batch.seq, node, e)
            else:
                self.sent += 1
                self._stale.discard(node)
