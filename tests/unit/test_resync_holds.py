"""The resync after a take-over: the new master does not know what each node runs, so a
primary's node gets its full state only once the nodes of the other members of its group
confirmed they left primary (or left the cluster, or the bound passed)."""

from __future__ import annotations

import asyncio

import _layouts as layouts
from _holds import SI, TOPO, A, B, C, Nodes, P, formed, running, settle

from haos.cluster.crim import events as ev
from haos.cluster.crim.policy import decide
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.services.executor import Dispatcher, resync_plan
from haos.services.orderbook import batch_from_json
from haos.services.orders import RoleOrder
from haoslab.testing.clock import FakeClock

EPOCH = 7  # of the mastership that took over


def switched(topo: Topology = TOPO) -> CrimState:
    """The state the old master stored for switchover 10 (A -> B) before it died."""
    d = decide(topo, formed(topo), ev.OperatorSwitchover(SI), 2.0)
    assert not d.refused and d.state.components[B].state is P, d.reason
    return d.state


def gate(state: CrimState, component: str, seq: int = 10) -> RoleOrder:
    """The order of the resync at ``seq`` that ``component``'s node confirms."""
    (order,) = (o for o in resync_plan(TOPO, state, seq).gates if o.component == component)
    return order


def test_after_a_take_over_mid_switchover_the_new_primary_waits_for_the_old_one() -> None:
    """The old master stored switchover 10 (A -> B) and died before A confirmed it had
    quiesced. The new master's resync must not promote B until A's node confirmed that A
    left primary (and C's node that C is no primary either)."""
    state = switched()

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            dispatcher.resync(10, state, EPOCH)
            await settle()
            assert nodes.promoted_at("n2", B) == [], nodes.roles_sent("n2")
            first = batch_from_json(next(p for n, p, _ in nodes.got if n == "n1"))
            assert first.epoch == EPOCH and first.roles is None
            assert first.orders == (gate(state, A),)  # A quiesces first
            assert first.orders[0].graceful and first.orders[0].state is not P
            desired = dispatcher.desired("n2")  # the pull path does not run ahead either
            assert desired is None or desired.roles is None or desired.roles[B] is not P
            dispatcher.applied(gate(state, C), EPOCH)
            dispatcher.applied(gate(state, A), EPOCH - 1)  # of the old mastership: nothing
            await settle()
            assert nodes.promoted_at("n2", B) == [] and dispatcher.unmatched == 1
            dispatcher.applied(gate(state, A), EPOCH)
            await settle()
            assert len(nodes.promoted_at("n2", B)) == 1 and dispatcher.holding == 0
            desired = dispatcher.desired("n2")
            assert desired is not None and desired.roles is not None and desired.roles[B] is P
            assert desired.epoch == EPOCH

    asyncio.run(go())


def test_an_unreachable_old_primary_node_delays_the_promotion_by_at_most_the_bound() -> None:
    state = switched()
    bound = 0.3

    async def go() -> None:
        nodes, clock = Nodes(down={"n1"}), FakeClock(40.0)
        async with running(Dispatcher(TOPO, nodes, clock, quiesce_wait=bound)) as dispatcher:
            dispatcher.resync(10, state, EPOCH)
            await settle()
            dispatcher.applied(gate(state, C), EPOCH)
            clock.advance(bound / 2)
            await settle()
            assert nodes.promoted_at("n2", B) == [], (
                "promoted before A's node answered or the bound"
            )
            assert clock.waiting_until == 40.0 + bound  # from when A's order was tried
            clock.advance(bound / 2)
            await settle()
            assert len(nodes.promoted_at("n2", B)) == 1 and dispatcher.holding == 0

    asyncio.run(go())


def test_a_node_that_left_the_cluster_is_not_waited_for() -> None:
    """n1 does not answer; the CRIM's NodeLeft (n1 was fenced first) ends the wait at once."""
    state = switched()
    left = decide(TOPO, state, ev.NodeLeft("n1"), 3.0)

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            dispatcher.resync(10, state, EPOCH)
            await settle()
            dispatcher.applied(gate(state, C), EPOCH)
            await settle()
            assert nodes.promoted_at("n2", B) == []
            await dispatcher.carry_out(11, left)
            await settle()
            assert len(nodes.promoted_at("n2", B)) >= 1 and dispatcher.holding == 0

    asyncio.run(go())


def test_a_take_over_never_demotes_a_primary_that_serves() -> None:
    """No switchover was under way: A's node holds A as primary and is sent nothing else
    for A, only its full state (A primary) once B's and C's nodes confirmed."""
    state = formed()
    assert state.components[A].state is P

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            dispatcher.resync(9, state, EPOCH)
            await settle()
            assert nodes.roles_sent("n1") == []
            # n2 and n3 are caught up at once: nothing waits on them
            assert any(p.get("roles") for n, p, _ in nodes.got if n == "n2")
            dispatcher.applied(gate(state, B, 9), EPOCH)
            dispatcher.applied(gate(state, C, 9), EPOCH)
            await settle()
            assert {s for _, c, s, _ in nodes.roles_sent("n1") if c == A} == {"primary"}

    asyncio.run(go())


def test_later_decisions_wait_behind_the_resync_on_every_node() -> None:
    """A decision after the resync reaches no node before the resync's promotions did."""
    state = formed()
    lock = decide(TOPO, state, ev.OperatorLock("n3"), 1.5)

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(TOPO, nodes, quiesce_wait=30.0)) as dispatcher:
            dispatcher.resync(9, state, EPOCH)
            await dispatcher.carry_out(10, lock)
            await settle()
            assert all(batch_from_json(p).seq == 9 for _, p, _ in nodes.got)
            dispatcher.applied(gate(state, B, 9), EPOCH)
            dispatcher.applied(gate(state, C, 9), EPOCH)
            await settle()
            assert any(batch_from_json(p).seq == 10 for _, p, _ in nodes.got)

    asyncio.run(go())


def test_crossed_primaries_each_wait_for_the_other_node() -> None:
    """After switchover 10 B serves demo on n2 while db1 serves db on n1: each node first
    gets the other group's member's role, and neither promotion goes out before both
    nodes confirmed -- no deadlock, no node waits for itself."""
    topo = Topology(layouts.crossed())
    db1, db2 = "shelf1/slot1/node/db", "shelf1/slot2/node/db"
    state = switched(topo)
    assert state.components[db1].state is P
    plan = resync_plan(topo, state, 10)
    assert plan.withheld == {B, db1}

    async def go() -> None:
        nodes = Nodes()
        async with running(Dispatcher(topo, nodes, quiesce_wait=30.0)) as dispatcher:
            dispatcher.resync(10, state, EPOCH)
            await settle()
            firsts = {n: [o["component"] for o in p["orders"]] for n, p, _ in nodes.got}
            assert firsts["n1"] == [A] and firsts["n2"] == [db2]
            assert not nodes.promoted_at("n1", db1) and not nodes.promoted_at("n2", B)
            for order in sorted(plan.gates, key=str):
                assert not nodes.promoted_at("n1", db1) and not nodes.promoted_at("n2", B)
                dispatcher.applied(order, EPOCH)
                await settle()
            assert nodes.promoted_at("n1", db1) and nodes.promoted_at("n2", B)

    asyncio.run(go())
