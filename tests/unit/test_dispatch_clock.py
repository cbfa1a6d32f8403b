"""The dispatcher's holds on an injected clock: a hold is released by the confirmation it
waits for (the senders wake on it, no time has to pass), and gives up exactly when the clock
passes ``quiesce_wait`` after its orders were handed over -- not before, however long the
test takes in real time."""

from __future__ import annotations

import asyncio

from _holds import SI, SP, TOPO, A, B, Nodes, formed, running, settle

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.policy import decide
from haos.services.executor import Dispatcher
from haos.services.orders import RoleOrder
from haoslab.testing.clock import FakeClock

WAIT = 30.0


def switchovers(count: int) -> list[Decision]:
    state, out = formed(), []
    for k in range(count):
        d = decide(TOPO, state, ev.OperatorSwitchover(SI), 2.0 + k)
        assert not d.refused, d.reason
        out.append(d)
        state = d.state
    return out


def test_a_confirmation_releases_the_switchover_at_once_with_the_clock_standing_still() -> None:
    (d10,) = switchovers(1)

    async def go() -> None:
        nodes, clock = Nodes(), FakeClock(500.0)
        async with running(Dispatcher(TOPO, nodes, clock, quiesce_wait=WAIT)) as dispatcher:
            await dispatcher.carry_out(10, d10)
            await settle()
            assert {n for n, _, _ in nodes.got} == {"n1"}  # only the old primary's node
            assert clock.waiting_until == 500.0 + WAIT  # counted from handing it over
            dispatcher.applied(RoleOrder(A, SP, True, 10))
            await settle()
            assert nodes.promoted("n2", B) == [10]
            assert {n for n, _, _ in nodes.got} == {"n1", "n2", "n3"}
            assert clock.t == 500.0 and dispatcher.holding == 0

    asyncio.run(go())


def test_an_unconfirmed_switchover_goes_on_when_the_clock_passes_the_wait_not_before() -> None:
    (d10,) = switchovers(1)

    async def go() -> None:
        nodes, clock = Nodes(), FakeClock(500.0)
        async with running(Dispatcher(TOPO, nodes, clock, quiesce_wait=WAIT)) as dispatcher:
            await dispatcher.carry_out(10, d10)
            await settle()
            clock.advance(WAIT - 0.01)
            await settle()
            assert nodes.promoted("n2", B) == [] and dispatcher.holding == 1
            clock.advance(0.01)
            await settle()
            assert nodes.promoted("n2", B) == [10] and dispatcher.holding == 0
            assert not clock.sleeping  # every sender waits for its next batch, no timer

    asyncio.run(go())


def test_in_a_burst_each_wait_counts_on_the_clock_from_when_its_order_was_handed_over() -> None:
    """Switchovers 10 (A->B), 11 (B->A), 12 (A->B) back to back, ``quiesce_wait`` 0.2 s: 12's
    order reaches A only once 11 was confirmed at 0.3 s, so it may give up at 0.5 s, not
    before (B would be promoted beside A, still primary)."""
    d10, d11, d12 = switchovers(3)

    async def go() -> None:
        nodes, clock = Nodes(), FakeClock(0.0)
        async with running(Dispatcher(TOPO, nodes, clock, quiesce_wait=0.2)) as dispatcher:
            for seq, d in ((10, d10), (11, d11), (12, d12)):
                await dispatcher.carry_out(seq, d)
            await settle()
            clock.advance(0.15)
            dispatcher.applied(RoleOrder(A, SP, True, 10))
            await settle()
            clock.advance(0.15)  # 0.3 s: 11 and 12 still wait
            dispatcher.applied(RoleOrder(B, SP, True, 11))
            await settle()
            clock.advance(0.19)  # 0.49 s
            await settle()
            assert nodes.promoted("n1", A) == [11]
            assert nodes.promoted("n2", B) == [10], "switchover 12 gave up too early"
            clock.advance(0.01)  # 0.5 s: A had its 0.2 s to confirm 12: going on
            await settle()
            assert nodes.promoted("n2", B) == [10, 12]
            assert dispatcher.holding == 0

    asyncio.run(go())
