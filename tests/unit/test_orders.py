"""Orders: decisions → per-node orders, their wire form, and the node's order book."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.policy import decide
from haos.cluster.crim.state import initial_state
from haos.cluster.crim.topology import Topology
from haos.config.loader import load_config
from haos.errors import HaosError, UsageError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.executor import Dispatcher
from haos.services.orderbook import Batch, NodeOrders, batch_from_json
from haos.services.orders import (
    RecoverOrder,
    RoleOrder,
    StopOrder,
    desired_roles,
    order_from_json,
    order_to_json,
    orders_for,
    report_from_json,
    report_to_json,
)
from haoslab.testing.clock import FakeClock

EXAMPLES = __import__("haos.examples", fromlist=["x"]).__path__[0]
TOPO = Topology(load_config(f"{EXAMPLES}/small-2n.toml"))
DEMO = [f"shelf1/slot{n}/node/demo" for n in (1, 2, 3)]
P, S, SP, OFF = (
    AvailabilityState.PRIMARY,
    AvailabilityState.SECONDARY,
    AvailabilityState.SPARE,
    AvailabilityState.OFFLINE,
)


def formed() -> Any:
    state = initial_state(TOPO)
    for n in ("n1", "n2", "n3"):
        state = decide(TOPO, state, ev.NodeJoined(n), 0.0).state
    decisions = []
    for c in DEMO:
        d = decide(TOPO, state, ev.ComponentAvailable(c), 1.0)
        state = d.state
        decisions.append(d)
    return state, decisions


def test_role_orders_go_to_the_node_hosting_each_component() -> None:
    state, decisions = formed()
    sent: dict[str, list[Any]] = {}
    for i, d in enumerate(decisions):
        for node, orders in orders_for(TOPO, i + 1, d).items():
            sent.setdefault(node, []).extend(orders)
    assert all(TOPO.host_of[o.component] == node for node, orders in sent.items() for o in orders)
    final = {c: desired_roles(TOPO, state, TOPO.host_of[c] or "")[c] for c in DEMO}
    assert sorted(s.value for s in final.values()) == ["primary", "secondary", "spare"]
    last: dict[str, AvailabilityState] = {}
    for orders in sent.values():
        for o in orders:
            if isinstance(o, RoleOrder):
                last[o.component] = o.state
    assert {c: last.get(c, OFF) for c in DEMO} == final  # the orders add up to the state


def test_a_crash_of_the_primary_orders_a_restart_on_its_node() -> None:
    state, _ = formed()
    primary = next(c for c in DEMO if state.components[c].state is P)
    report = ErrorReport(primary, ErrorKind.CRASH, 2.0, "test")
    d = decide(TOPO, state, ev.ErrorReported(report), 2.0)
    orders = orders_for(TOPO, 9, d)
    node = TOPO.host_of[primary]
    assert node is not None
    assert RecoverOrder(primary, RecoveryLevel.RESTART, 9) in orders[node]


@pytest.mark.parametrize(
    "order",
    [
        RoleOrder("a/b", P, True, 3),
        RecoverOrder("a/b", RecoveryLevel.SOFT_RESET, 4),
        StopOrder("a/b", "off-line by operator", 5),
    ],
)
def test_orders_survive_their_wire_form(order: Any) -> None:
    assert order_from_json(order_to_json(order)) == order


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        ([], "expected an object"),
        ({"kind": "dance", "component": "x"}, "unknown kind"),
        ({"kind": "role", "component": "x", "state": "boss"}, "unknown availability state"),
        ({"kind": "role", "state": "primary"}, "missing field 'component'"),
        ({"kind": "recover", "component": "x", "level": "failover"}, "not carried out"),
        ({"kind": "role", "component": "x", "state": "primary", "seq": "1"}, "'seq' must be int"),
        ({"kind": "role", "component": 7, "state": "primary"}, "'component' must be str"),
    ],
)
def test_bad_orders_are_refused_by_name(obj: object, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        order_from_json(obj)


def test_error_reports_survive_their_wire_form_and_bad_ones_are_named() -> None:
    r = ErrorReport("a/b", ErrorKind.HANG, 12.5, "hm", "audit late", RecoveryLevel.RESTART)
    assert report_from_json(report_to_json(r)) == r
    with pytest.raises(UsageError, match="observed_at"):
        report_from_json({"component": "a", "kind": "hang", "observed_at": "soon"})
    with pytest.raises(UsageError, match="unknown kind"):
        report_from_json({"component": "a", "kind": "meh", "observed_at": 1})


def test_order_book_takes_full_states_and_skips_late_role_orders() -> None:
    book = NodeOrders("n1")
    seen: list[dict[str, Any]] = []
    book.subscribe(seen.append)
    assert not book.synced and not seen
    book.receive(Batch(5, (), {"x": S}))
    assert book.synced and book.roles == {"x": S}
    book.receive(Batch(6, (RoleOrder("x", P, False, 6),)))
    book.receive(Batch(4, (RoleOrder("x", SP, False, 4),)))  # late retry of an older decision
    assert book.roles == {"x": P}
    assert seen[0] == {"roles": {"x": "secondary"}}
    assert len(seen) == 2
    late: list[dict[str, Any]] = []
    book.subscribe(late.append)  # a new subscriber starts from the full state
    assert late == [{"roles": {"x": "primary"}}]


def test_bad_batches_are_refused() -> None:
    with pytest.raises(UsageError, match="bad seq"):
        batch_from_json({"seq": -1})
    with pytest.raises(UsageError, match="unknown availability state"):
        batch_from_json({"seq": 1, "roles": {"x": "boss"}})


class Channel:
    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.got: list[tuple[str, dict[str, Any]]] = []

    async def send(self, node: str, payload: dict[str, Any]) -> None:
        if node in self.down:
            raise HaosError(f"{node} unreachable")
        self.got.append((node, payload))


def test_a_node_that_missed_orders_gets_its_full_state_with_the_next() -> None:
    _, decisions = formed()

    async def go() -> Channel:
        channel = Channel(down={"n2"})
        dispatcher = Dispatcher(TOPO, channel)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(dispatcher.run())
            for i, d in enumerate(decisions):
                await dispatcher.carry_out(i + 1, d)
            await asyncio.sleep(0.05)
            channel.down.clear()
            d = decide(TOPO, decisions[-1].state, ev.OperatorLock("n2"), 3.0)
            await dispatcher.carry_out(len(decisions) + 1, d)
            await asyncio.sleep(0.05)
            task.cancel()
        return channel

    channel = asyncio.run(go())
    to_n2 = [p for node, p in channel.got if node == "n2"]
    assert len(to_n2) == 1 and "roles" in to_n2[0]  # what got through carries the full state
    assert to_n2[0]["orders"]  # together with the new orders
    assert not any("roles" in p for node, p in channel.got if node != "n2")


def test_a_node_without_quorum_steps_its_primaries_down_and_takes_the_next_full_state() -> None:
    book = NodeOrders("n1")
    seen: list[dict[str, Any]] = []
    book.subscribe(seen.append)
    book.receive(Batch(9, (), {"p": P, "s": S, "o": OFF}))
    book.step_down()
    assert book.roles == {"p": SP, "s": S, "o": OFF} and not book.synced
    assert seen[-1] == {"roles": {"p": "spare", "s": "secondary", "o": "offline"}}
    book.receive(Batch(3, (), {"p": S, "s": P, "o": OFF}))  # a new master's older numbering
    assert book.synced and book.roles["s"] is P


def test_the_order_book_asks_for_a_full_state_only_while_it_lacks_one() -> None:
    async def go() -> None:
        book = NodeOrders("n1")
        await asyncio.wait_for(book.wait_unsynced(), 1.0)  # at start: ask
        book.receive(Batch(1, (), {"x": S}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(book.wait_unsynced(), 0.05)  # has one: nothing to ask
        seen: list[dict[str, Any]] = []
        book.subscribe(seen.append)
        book.receive(Batch(2, (), {"x": S}))  # the same again: nothing to tell the agent
        assert len(seen) == 1
        book.step_down()
        await asyncio.wait_for(book.wait_unsynced(), 1.0)

    asyncio.run(go())


def test_a_planned_switchover_promotes_only_after_the_old_primary_confirmed() -> None:
    state, _ = formed()
    primary = next(c for c in DEMO if state.components[c].state is P)
    d = decide(TOPO, state, ev.OperatorSwitchover(primary), 3.0)
    demoted = [a for a in d.actions if getattr(a, "graceful", False)]
    assert demoted, d.actions  # the CRIM asks the primary to quiesce

    async def go() -> tuple[list[str], list[str]]:
        channel = Channel(down=set())
        dispatcher = Dispatcher(TOPO, channel, quiesce_wait=5.0)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(dispatcher.run())
            carried = tg.create_task(dispatcher.carry_out(9, d))
            await asyncio.sleep(0.1)
            early = [node for node, _ in channel.got]
            dispatcher.applied(RoleOrder(primary, SP, True, 9))
            await carried
            await asyncio.sleep(0.05)
            task.cancel()
        return early, [node for node, _ in channel.got]

    early, final = asyncio.run(go())
    assert early == [TOPO.host_of[primary]]  # only the old primary's node, at first
    assert sorted(final) == ["n1", "n2", "n3"]


def test_a_held_switchover_blocks_no_other_decision_and_keeps_each_nodes_order() -> None:
    """carry_out returns at once; the old primary's node gets its quiescing orders, then every
    node gets the rest of this decision and the next one, in order, once it confirmed, or once
    quiesce_wait passed without it."""
    state, _ = formed()
    primary = next(c for c in DEMO if state.components[c].state is P)
    switch = decide(TOPO, state, ev.OperatorSwitchover(primary), 3.0)
    later = decide(TOPO, switch.state, ev.OperatorLock("n3"), 4.0)
    first = TOPO.host_of[primary]

    async def go(confirm: bool) -> list[tuple[str, int]]:
        channel, clock = Channel(down=set()), FakeClock()
        dispatcher = Dispatcher(TOPO, channel, clock, quiesce_wait=0.3)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(dispatcher.run())
            await asyncio.wait_for(dispatcher.carry_out(9, switch), 0.05)  # returns at once
            await asyncio.wait_for(dispatcher.carry_out(10, later), 0.05)
            await asyncio.sleep(0.1)
            assert {node for node, _ in channel.got} == {first}
            assert [p["seq"] for _, p in channel.got] == [9]
            if confirm:
                dispatcher.applied(RoleOrder(primary, SP, True, 9))
            else:
                clock.advance(0.3)
            await asyncio.sleep(0.05)
            task.cancel()
        return [(node, p["seq"]) for node, p in channel.got]

    for confirm in (True, False):
        got = asyncio.run(go(confirm))
        for node in TOPO.nodes:
            assert [seq for n, seq in got if n == node] == [9, 10], (confirm, node, got)


def test_a_confirmation_after_its_hold_gave_up_does_not_release_the_next_switchover() -> None:
    state, _ = formed()
    primary = next(c for c in DEMO if state.components[c].state is P)
    switch = decide(TOPO, state, ev.OperatorSwitchover(primary), 3.0)
    first = TOPO.host_of[primary]

    async def go() -> set[str]:
        channel, clock = Channel(down=set()), FakeClock()
        dispatcher = Dispatcher(TOPO, channel, clock, quiesce_wait=0.2)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(dispatcher.run())
            await dispatcher.carry_out(9, switch)
            await asyncio.sleep(0.05)
            clock.advance(0.2)
            await asyncio.sleep(0.05)  # the hold gave up: every node got decision 9
            dispatcher.applied(RoleOrder(primary, SP, True, 9))  # the old primary, too late
            channel.got.clear()
            await dispatcher.carry_out(10, switch)  # the same switchover gate again
            await asyncio.sleep(0.1)
            task.cancel()
        return {node for node, _ in channel.got}

    assert asyncio.run(go()) == {first}  # the others still wait for a fresh confirmation
