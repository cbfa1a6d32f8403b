"""Carrying out the CRIM's decisions across the cluster (see ``docs/node-agent.md``).

* :class:`Dispatcher` — the active availability service's :class:`~.crimd.ActionSink`: each
  decision's orders go into the hosting node's outbox; one sender per node delivers them in
  order over RRPC (``orders``). A node that could not be reached is marked *stale* and gets the
  full set of its desired roles, as of the decision being sent, along with its next orders
  (:meth:`Dispatcher.resync` sends every node its full state after a take-over: a decision cut
  short by the old master is carried out again).
* the receiving side, on every node, is :class:`~haos.services.orderbook.NodeOrders`.

A planned switchover (a primary demoted gracefully) is carried out in two steps. First the
node of each primary that quiesces gets that component's orders; then every node's outbox
*holds* (the rest of the decision and whatever follows it) until each of those orders is
confirmed carried out (:meth:`Dispatcher.applied`: the agent echoes the order back), or until
``quiesce_wait`` has passed since the last of them was handed to its node. The senders wait on
the hold's events with that deadline on the dispatcher's clock (injected; never a poll): a
confirmation wakes them at once. A confirmation names its order -- component, state and the
decision's sequence number -- so it releases the hold of that decision only: a late or
repeated confirmation of an earlier switchover of the same component releases nothing. A full
desired state is the state as of the decision whose turn it is in the node's outbox (for a
stale node, and :meth:`Dispatcher.desired`), so it never carries a promotion past a hold
either.

A take-over is carried out the same way (:meth:`Dispatcher.resync`), since the new master does
not know what each node runs: the old master may have died between a switchover's two steps,
its old primary still serving. Every primary of a group whose model allows one primary per
instance (:func:`resync_plan`) is a promotion that waits: first the node of every other member
of its group gets that member's role as a graceful order (an old primary that never quiesced
does so now), which its agent confirms; a node with nothing that waits gets its full state at
once; the full state of a node where a promotion waits follows once all those orders are
confirmed (or ``quiesce_wait`` after the last was handed over). A node that holds its primary
already keeps it meanwhile: it is sent nothing that would demote it. Whatever follows the
resync waits behind it on every node, as it does behind a switchover.

A hold gives up waiting for a node the CRIM no longer counts as a member: a node is fenced
before its NodeLeft (:mod:`haos.cluster.cmm.policy`), so nothing on it serves. The bound
``quiesce_wait`` covers a member that does not answer; it is well above the time a node cut
off from quorum takes to give up its primaries (the CMM's ``demote_within``, 1 s).

The transport is a small protocol (:class:`OrderChannel`) so the policy of who gets what, in
which order, is tested without corosync.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from haos.clock import Clock, MonotonicClock, wall_now
from haos.cluster.crim.actions import AssignRole, Decision
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.errors import HaosError
from haos.model.states import AvailabilityState
from haos.services.orderbook import Batch
from haos.services.orders import (
    Order,
    RebootOrder,
    RoleOrder,
    desired_roles,
    notes_of,
    orders_for,
)

log = logging.getLogger(__name__)
_P, _S = AvailabilityState.PRIMARY, AvailabilityState.SECONDARY


class OrderChannel(Protocol):
    async def send(self, node: str, payload: dict[str, Any]) -> None:
        """Deliver ``payload`` to ``node``'s :meth:`NodeOrders.receive`; raises HaosError
        when it may not have arrived."""
        ...


@dataclass(eq=False)
class _Hold:
    """In every node's outbox, after the orders of the primaries that quiesce: what follows
    waits until each order in ``gates`` is confirmed, or until ``deadline``, which is set
    once every node in ``unsent`` has been handed its gated orders."""

    seq: int
    epoch: int
    gates: set[RoleOrder]
    unsent: set[str]
    what: str = "switchover"
    promotes: set[str] | None = None  # a resync's: the nodes whose promotions wait
    deadline: float | None = None  # on the dispatcher's clock
    armed: asyncio.Event = field(default_factory=asyncio.Event)  # deadline set, or released
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def handed(self, node: str, deadline: float) -> None:
        self.unsent.discard(node)
        if not self.unsent and self.deadline is None:
            self.deadline = deadline
            self.armed.set()

    def release(self) -> None:
        self.armed.set()
        self.released.set()


@dataclass(frozen=True)
class _Out:
    """A batch in a node's outbox. ``crim``: the CRIM's state as of its decision, which a stale
    node's full desired state is taken from; None for the first step of a switchover (it must
    not carry the promotions that wait). ``gating``: the hold whose orders it carries."""

    batch: Batch
    crim: CrimState | None = None
    gating: _Hold | None = None


@dataclass(frozen=True)
class _Shown:
    """What a node was handed: the last batch, the CRIM's state as of the last decision it got
    whole, and the roles ordered since (the first step of a switchover)."""

    batch: Batch
    crim: CrimState
    since: dict[str, AvailabilityState] = field(default_factory=dict)


def quiescing(decision: Decision) -> frozenset[str]:
    """The components the decision demotes gracefully from primary (a planned switchover)."""
    return frozenset(
        a.component
        for a in decision.actions
        if isinstance(a, AssignRole)
        and a.graceful
        and a.old is AvailabilityState.PRIMARY
        and a.new is not AvailabilityState.PRIMARY
    )


@dataclass(frozen=True)
class ResyncPlan:
    """What a resync holds back: ``withheld``, the primaries whose promotion waits, until
    every order in ``gates`` (the other members' roles, graceful) is confirmed."""

    withheld: frozenset[str]
    gates: frozenset[RoleOrder]


def resync_plan(topo: Topology, crim: CrimState, seq: int) -> ResyncPlan:
    """Per group with one primary per instance: its primaries wait for its other members.

    Only members on nodes the CRIM counts as members count: any other node was fenced before
    it left. A member that is not to be primary gets its role as the agent takes it from a
    full state (secondary, else spare), so its confirmation says it no longer serves."""

    def placed(comp: str) -> bool:
        node = topo.host_of.get(comp)
        runtime = None if node is None else crim.nodes.get(node)
        return runtime is not None and runtime.member and comp in crim.components

    withheld: set[str] = set()
    gates: set[RoleOrder] = set()
    for spec in topo.groups.values():
        if not spec.model.exclusive_primary:
            continue
        members = [m for m in spec.members if placed(m)]
        primaries = {m for m in members if crim.components[m].state is _P}
        others = [m for m in members if m not in primaries]
        if primaries and others:
            withheld |= primaries
            for m in others:
                state = crim.components[m].state
                gates.add(RoleOrder(m, _S if state is _S else AvailabilityState.SPARE, True, seq))
    return ResyncPlan(frozenset(withheld), frozenset(gates))


def _first_step(orders: Sequence[Order], quiet: frozenset[str]) -> tuple[Order, ...]:
    """The orders of the components in ``quiet``, in their order."""
    return tuple(o for o in orders if not isinstance(o, RebootOrder) and o.component in quiet)


class Dispatcher:
    """See the module docstring. Run :meth:`run` in the daemon's task group."""

    def __init__(
        self,
        topo: Topology,
        channel: OrderChannel,
        clock: Clock | None = None,
        quiesce_wait: float = 10.0,
        *,
        wall: Callable[[], float] = wall_now,
    ) -> None:
        """``clock``: this node's monotonic clock, which a hold's ``quiesce_wait`` runs on
        (:class:`~haos.clock.MonotonicClock` by default); ``wall``: what the decisions' notes
        are dated with (wall-clock time: they are shown to users)."""
        self._topo = topo
        self._channel = channel
        self._clock: Clock = clock or MonotonicClock()
        self._wall = wall
        self._quiesce_wait = quiesce_wait
        self._waiting: dict[RoleOrder, _Hold] = {}  # an order to confirm -> its hold
        self._outbox: dict[str, asyncio.Queue[_Out | _Hold]] = {
            n: asyncio.Queue() for n in topo.nodes
        }
        self._stale: set[str] = set()
        self._shown: dict[str, _Shown] = {}  # per node: what it was handed so far
        self._epoch = 0  # of the mastership whose decisions this dispatcher carries out
        self.sent = 0
        self.failed = 0
        self.unmatched = 0  # confirmations that answered no pending switchover

    @property
    def holding(self) -> int:
        """Switchovers still waiting for their old primaries (neither confirmed nor given up)."""
        return len({id(hold) for hold in self._waiting.values()})

    async def carry_out(self, seq: int, decision: Decision) -> None:
        """Queue the decision's orders and return at once: a switchover waits in the
        outboxes (see the module docstring), nothing else waits meanwhile."""
        orders = orders_for(self._topo, seq, decision)
        notes = tuple(notes_of(seq, self._wall(), decision))
        quiet = quiescing(decision)
        first = {n: step for n, o in orders.items() if (step := _first_step(o, quiet))}
        gates = {
            o
            for step in first.values()
            for o in step
            if isinstance(o, RoleOrder) and o.graceful and o.component in quiet
        }
        hold = _Hold(seq, self._epoch, gates, set(first)) if quiet else None
        if hold is not None:
            self._waiting.update(dict.fromkeys(gates, hold))
            if not gates:  # nothing to confirm (no node hosts the old primary)
                hold.release()
        self._forget_departed(decision.state)
        for node, box in self._outbox.items():  # every node keeps the history
            rest = tuple(orders.get(node, ()))
            later = notes
            if node in first:
                box.put_nowait(_Out(Batch(seq, first[node], None, notes, self._epoch), None, hold))
                rest, later = tuple(o for o in rest if o not in first[node]), ()
            if hold is not None:
                box.put_nowait(hold)
            box.put_nowait(_Out(Batch(seq, rest, None, later, self._epoch), decision.state))

    def applied(self, order: RoleOrder, epoch: int | None = None) -> None:
        """A node confirmed it carried ``order`` out (a graceful role change). Releases the
        hold of that order's own decision once all its orders are confirmed; a confirmation
        that answers no pending order (late, repeated, of a hold that gave up, of an order
        not sent yet, of another mastership) changes nothing. ``epoch``: the mastership of
        the batch the order came in, when the node tells it."""
        hold = self._waiting.get(order)
        if (
            hold is None
            or (epoch is not None and epoch != hold.epoch)
            or self._topo.host_of.get(order.component) in hold.unsent  # not even sent yet
        ):
            self.unmatched += 1
            log.info("confirmation of %s (epoch %s) answers no pending switchover", order, epoch)
            return
        del self._waiting[order]
        hold.gates.discard(order)
        if not hold.gates:
            hold.release()

    def _forget_departed(self, crim: CrimState) -> None:
        """Stop waiting for nodes ``crim`` no longer counts as members: each was fenced before
        its NodeLeft, so nothing on it serves (nor will a promotion waiting there happen)."""
        gone = {n for n, runtime in crim.nodes.items() if not runtime.member}
        for order, hold in list(self._waiting.items()):
            if self._topo.host_of.get(order.component) in gone:
                del self._waiting[order]
                hold.gates.discard(order)
                log.info(
                    "%s %d: %s %s no longer waited for: its node left",
                    hold.what,
                    hold.seq,
                    order.component,
                    order.state,
                )
                if not hold.gates:
                    hold.release()
        for hold in {id(h): h for h in self._waiting.values()}.values():
            if hold.promotes is not None and not hold.promotes - gone:
                self._drop(hold)
                hold.release()

    def _drop(self, hold: _Hold) -> None:
        for order in hold.gates:
            self._waiting.pop(order, None)

    def _give_up(self, hold: _Hold) -> None:
        if hold.released.is_set():
            return
        self._drop(hold)
        log.warning(
            "%s %d: %s not confirmed within %g s of being sent; going on",
            hold.what,
            hold.seq,
            ", ".join(f"{o.component} {o.state}" for o in sorted(hold.gates, key=str)),
            self._quiesce_wait,
        )
        hold.release()

    async def _wait(self, hold: _Hold) -> None:
        """Until ``hold`` is released: confirmed, or given up at its deadline (set once every
        gated order was handed over)."""
        await self._clock.wait(hold.armed, None)
        await self._clock.wait(hold.released, hold.deadline)
        if not hold.released.is_set():
            self._give_up(hold)

    def resync(self, seq: int, crim: CrimState, epoch: int = 0) -> None:
        """Send every node its full desired state (after a take-over), its promotions held
        back as the module docstring says; every batch from now on names ``epoch``, the
        mastership that took over."""
        self._epoch = epoch
        self._shown.clear()  # handed out under another mastership: no longer what holds
        plan = resync_plan(self._topo, crim, seq)
        first: dict[str, tuple[Order, ...]] = {}
        for node, hosted in self._topo.hosted.items():
            step = tuple(sorted((o for o in plan.gates if o.component in hosted), key=str))
            if step:
                first[node] = step
        promotes = {n for c in plan.withheld if (n := self._topo.host_of.get(c)) is not None}
        hold = _Hold(seq, epoch, set(plan.gates), set(first), "resync", promotes)
        if plan.withheld:  # and so gates: each withheld primary has another member
            self._waiting.update(dict.fromkeys(plan.gates, hold))
            log.info(
                "resync %d: %s promoted once %d other member(s) confirmed",
                seq,
                ", ".join(sorted(plan.withheld)),
                len(plan.gates),
            )
        for node, box in self._outbox.items():
            full = _Out(Batch(seq, (), desired_roles(self._topo, crim, node), (), epoch), crim)
            if node in first:  # the gates: graceful, so the agent confirms them
                box.put_nowait(_Out(Batch(seq, first[node], None, (), epoch), None, hold))
            if not plan.withheld:
                box.put_nowait(full)
            elif node in promotes:
                box.put_nowait(hold)
                box.put_nowait(full)
            else:  # nothing waits on this node; what follows the resync waits everywhere
                box.put_nowait(full)
                box.put_nowait(hold)

    def desired(self, node: str) -> Batch | None:
        """The full desired state ``node`` may take now: what the orders handed to it so far
        add up to (not a decision still held behind a switchover). None until it was handed
        a decision's orders."""
        shown = self._shown.get(node)
        if shown is None:
            return None
        roles = {**desired_roles(self._topo, shown.crim, node), **shown.since}
        return dataclasses.replace(shown.batch, orders=(), roles=roles, notes=())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for node in self._topo.nodes:
                tasks.create_task(self._sender(node))

    async def _sender(self, node: str) -> None:
        box = self._outbox[node]
        while True:
            item = await box.get()
            if isinstance(item, _Hold):
                await self._wait(item)
                continue
            try:
                await self._hand_over(node, item)
            finally:
                if item.gating is not None:
                    deadline = self._clock.now() + self._quiesce_wait
                    item.gating.handed(node, deadline)

    async def _hand_over(self, node: str, item: _Out) -> None:
        batch = item.batch
        self._show(node, item)
        if item.crim is not None and node in self._stale and batch.roles is None:
            roles = desired_roles(self._topo, item.crim, node)
            batch = dataclasses.replace(batch, roles=roles)
        if not (batch.orders or batch.notes or batch.roles is not None):
            return  # the second step of a switchover on the old primary's node, often empty
        try:
            await self._channel.send(node, batch.to_json())
        except HaosError as e:
            self.failed += 1
            self._stale.add(node)
            log.warning("orders %d for %s not delivered: %s", batch.seq, node, e)
        else:
            self.sent += 1
            if batch.roles is not None:  # a node is caught up only by a full state
                self._stale.discard(node)

    def _show(self, node: str, item: _Out) -> None:
        if item.crim is not None:
            self._shown[node] = _Shown(item.batch, item.crim)
        elif (shown := self._shown.get(node)) is not None:
            roles = {o.component: o.state for o in item.batch.orders if isinstance(o, RoleOrder)}
            self._shown[node] = _Shown(item.batch, shown.crim, {**shown.since, **roles})
