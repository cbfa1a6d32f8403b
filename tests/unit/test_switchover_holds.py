"""The dispatcher's holds: a planned switchover promotes only once the old primary confirmed
the very order that demoted it -- also when switchovers follow each other back to back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _layouts as layouts
from _holds import SI, SP, TOPO, A, B, C, Nodes, P, S, formed, running, settle

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import AssignRole, Decision
from haos.cluster.crim.policy import decide
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.model.states import AvailabilityState
from haos.services.executor import Dispatcher
from haos.services.orderbook import batch_from_json
from haos.services.orders import RoleOrder


def switchovers(state: CrimState, count: int) -> list[Decision]:
    """``count`` switchovers of the instance, each decided on the state the last one left."""
    out = []
    for k in range(count):
        d = decide(TOPO, state, ev.OperatorSwitchover(SI), 2.0 + k)
        assert not d.refused, d.reason
        out.append(d)
        state = d.state
    return out


def demoted(seq: int, component: str) -> RoleOrder:
    """The order of switchover ``seq`` that makes the old primary quiesce."""
    return RoleOrder(component, SP, True, seq)


def test_a_late_confirmation_of_an_earlier_switchover_releases_no_later_hold() -> None:
    """Switchovers 10 (A->B), 11 (B->A), 12 (A->B) back to back. A confirms 10 twice (a late
    repeat), B confirms 11: B must not be promoted by 12 until A confirmed 12 itself."""
    d10, d11, d12 = switchovers(formed(), 3)
    assert d10.state.components[B].state is P and d11.state.components[A].state is P

    async def go() -> Nodes:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            for seq, d in ((10, d10), (11, d11), (12, d12)):
                await dispatcher.carry_out(seq, d)
            await settle()
            assert nodes.promoted("n2", B) == []  # held until A quiesced
            dispatcher.applied(demoted(10, A))
            await settle()
            assert nodes.promoted("n2", B) == [10]
            dispatcher.applied(demoted(11, B))
            await settle()
            assert nodes.promoted("n1", A) == [11]
            dispatcher.applied(demoted(10, A))  # late, and of the same (component, state)
            dispatcher.applied(RoleOrder(A, SP, True, 12), epoch=7)  # of another mastership
            await settle()
            assert nodes.promoted("n2", B) == [10], "a stale confirmation released 12"
            assert dispatcher.holding == 1 and dispatcher.unmatched == 2
            dispatcher.applied(demoted(12, A))
            await settle()
            assert nodes.promoted("n2", B) == [10, 12]
            assert dispatcher.holding == 0
        return nodes

    asyncio.run(go())


def test_a_confirmation_for_one_switchover_does_not_release_another_waiting_on_the_same_gate() -> (
    None
):
    """Two pending holds on the same (component, state), 10 and 12: a confirmation naming 12
    before its order was even sent releases nothing; 10's releases 10 only."""
    d10, d11, d12 = switchovers(formed(), 3)

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            for seq, d in ((10, d10), (11, d11), (12, d12)):
                await dispatcher.carry_out(seq, d)
            await settle()
            dispatcher.applied(demoted(12, A))  # A has not been sent order 12 yet: bogus
            await settle()
            assert nodes.promoted("n2", B) == []
            assert [p["seq"] for n, p, _ in nodes.got if n == "n3"] == []
            assert dispatcher.holding == 3 and dispatcher.unmatched == 1
            dispatcher.applied(demoted(10, A))
            await settle()
            assert nodes.promoted("n2", B) == [10] and dispatcher.holding == 2

    asyncio.run(go())


def test_a_stale_node_gets_the_full_state_of_the_decision_it_is_at_not_a_later_one() -> None:
    """n1 missed orders, then switchovers 10 (A->B) and 11 (B->A) follow: the full state n1
    gets with 10 must not make A primary (that is 11's, which waits for B to quiesce)."""
    state = formed()
    lock = decide(TOPO, state, ev.OperatorLock("n3"), 1.5)
    d10, d11 = switchovers(lock.state, 2)

    async def go() -> Nodes:
        nodes = Nodes(down={"n1"})
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            await dispatcher.carry_out(9, lock)
            await settle()
            nodes.down.clear()
            await dispatcher.carry_out(10, d10)
            await dispatcher.carry_out(11, d11)
            await settle()
            dispatcher.applied(demoted(10, A))
            await settle()
            assert nodes.promoted("n1", A) == [], nodes.roles_sent("n1")
            assert any("roles" in p for n, p, _ in nodes.got if n == "n1")  # caught up, as of 10
            dispatcher.applied(demoted(11, B))
            await settle()
            assert nodes.promoted("n1", A) == [11]
        return nodes

    asyncio.run(go())


def test_the_desired_state_a_node_asks_for_leaves_out_what_is_held() -> None:
    state = formed()
    (d10,) = switchovers(state, 1)

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            assert dispatcher.desired("n2") is None  # nothing handed over yet
            dispatcher.resync(9, state)
            await settle()
            assert dispatcher.desired("n1") is None  # A's node waits for B's and C's
            dispatcher.applied(RoleOrder(B, S, True, 9))
            dispatcher.applied(RoleOrder(C, SP, True, 9))
            await dispatcher.carry_out(10, d10)
            await settle()
            n1, n2 = dispatcher.desired("n1"), dispatcher.desired("n2")
            assert n2 is not None and n2.seq == 9 and n2.roles is not None
            assert n2.roles[B] is S  # 10 promotes B, but waits for A
            assert n1 is not None and n1.seq == 10 and n1.roles is not None
            assert n1.roles[A] is S  # its first step: quiesce, then the standby
            dispatcher.applied(demoted(10, A))
            await settle()
            n1, n2 = dispatcher.desired("n1"), dispatcher.desired("n2")
            assert n2 is not None and n2.seq == 10 and n2.roles is not None
            assert n2.roles[B] is P
            assert n1 is not None and n1.roles is not None and n1.roles[A] is S

    asyncio.run(go())


def test_crossed_switchovers_promote_on_no_node_before_both_old_primaries_confirmed() -> None:
    """One decision moves demo from n1 to n2 and db from n2 to n1: both nodes quiesce a
    primary *and* promote one. Each node gets its quiescing orders first; the promotions
    wait for both confirmations."""
    topo = Topology(layouts.crossed())
    db1, db2 = "shelf1/slot1/node/db", "shelf1/slot2/node/db"
    actions = (
        AssignRole(A, P, SP, (), graceful=True),
        AssignRole(db2, P, SP, (), graceful=True),
        AssignRole(B, S, P, ("demo-si",)),
        AssignRole(db1, S, P, ("db-si",)),
    )
    crossed = Decision(formed(topo), actions, "crossed switchovers")

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(topo, nodes, quiesce_wait=30.0)) as dispatcher:
            await dispatcher.carry_out(10, crossed)
            await settle()
            firsts = {n: [o["component"] for o in p["orders"]] for n, p, _ in nodes.got}
            assert firsts == {"n1": [A], "n2": [db2]}
            dispatcher.applied(RoleOrder(A, SP, True, 10))
            await settle()
            assert not nodes.promoted("n1", db1) and not nodes.promoted("n2", B)
            dispatcher.applied(RoleOrder(db2, SP, True, 10))
            await settle()
            assert nodes.promoted("n1", db1) == [10] and nodes.promoted("n2", B) == [10]

    asyncio.run(go())


# ------------------------------------------------------------------ bursts, end to end


@dataclass
class Member:
    """A member's application as its node agent drives it: one order at a time."""

    name: str
    role: AvailabilityState = SP
    queue: asyncio.Queue[tuple[RoleOrder, int]] = field(default_factory=asyncio.Queue)


class Lab:
    """Nodes whose agents carry role orders out after a random delay (a quiesce takes a
    while), confirm the graceful ones after another, sometimes twice (a retried request);
    records every moment two members of the instance served at once."""

    def __init__(self, rng: random.Random, state: CrimState) -> None:
        self.rng = rng
        self.members = {c: Member(c, state.components[c].state) for c in (A, B, C)}
        self.overlaps: list[str] = []
        self.confirm: Callable[[RoleOrder, int | None], None] = lambda order, epoch: None

    async def send(self, node: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        batch = batch_from_json(payload)
        for order in batch.orders:
            if isinstance(order, RoleOrder) and order.component in self.members:
                self.members[order.component].queue.put_nowait((order, batch.epoch))
        for comp, state in (batch.roles or {}).items():
            self.members[comp].queue.put_nowait((RoleOrder(comp, state), batch.epoch))

    async def agent(self, member: Member) -> None:
        while True:
            order, epoch = await member.queue.get()
            await asyncio.sleep(self.rng.uniform(0, 0.004))
            member.role = order.state
            if order.state is P:
                others = [m.name for m in self.members.values() if m is not member]
                if any(self.members[o].role is P for o in others):
                    self.overlaps.append(f"{member.name} promoted by {order.seq} beside another")
            if order.graceful:
                asyncio.get_running_loop().create_task(self._confirm(order, epoch))

    async def _confirm(self, order: RoleOrder, epoch: int) -> None:
        await asyncio.sleep(self.rng.uniform(0, 0.006))
        self.confirm(order, epoch)
        if self.rng.random() < 0.3:  # the same confirmation again, late
            await asyncio.sleep(self.rng.uniform(0, 0.03))
            self.confirm(order, epoch)


def burst(seed: int, count: int) -> tuple[list[str], dict[str, AvailabilityState], CrimState]:
    rng = random.Random(seed)
    state = formed()

    async def go() -> tuple[list[str], dict[str, AvailabilityState], CrimState]:
        lab = Lab(rng, state)
        dispatcher = Dispatcher(TOPO, lab, quiesce_wait=30.0)
        lab.confirm = dispatcher.applied
        last = state
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(dispatcher.run())]
            tasks += [tg.create_task(lab.agent(m)) for m in lab.members.values()]
            for seq, d in enumerate(switchovers(state, count), start=10):
                await dispatcher.carry_out(seq, d)
                last = d.state
                await asyncio.sleep(rng.uniform(0, 0.003))  # the next command comes at once
            async with asyncio.timeout(10):
                while dispatcher.holding or any(not m.queue.empty() for m in lab.members.values()):
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the last orders carried out
            for task in tasks:
                task.cancel()
        return lab.overlaps, {m.name: m.role for m in lab.members.values()}, last

    return asyncio.run(go())


def test_bursts_of_switchovers_never_promote_beside_a_primary_that_has_not_quiesced() -> None:
    for seed in range(5):
        overlaps, roles, last = burst(seed, 20)
        assert overlaps == [], (seed, overlaps)
        assert roles == {c: last.components[c].state for c in (A, B, C)}, seed
