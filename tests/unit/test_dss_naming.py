"""CNS on the in-memory bus: bind/resolve everywhere, rebind on take-over, an owner's bindings
going with it, state transfer to joiners (also under load and when the sender dies), partition
heal, and junk."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.naming import Binding, Change, NamingService, Reason, wire
from haos.cluster.dss.naming.table import (
    Bind,
    Members,
    NameTable,
    Request,
    Snapshot,
    Unbind,
    validate_name,
)
from haos.cluster.dss.wire import Envelope, Service, WireError
from haos.errors import ConflictError, UnavailableError, UsageError
from haoslab.fakes.localnet import LocalNet, garble, inject

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0


def tables(net: LocalNet[NamingService], *nodes: int) -> list[list[Binding]]:
    return [net[n].bindings_under("/") for n in nodes]


async def converged(net: LocalNet[NamingService], *nodes: int) -> list[Binding]:
    """Wait until every listed node holds the same table; return it."""

    def same() -> bool:
        if not all(net[n].in_sync for n in nodes):
            return False
        first, *rest = tables(net, *nodes)
        return all(t == first for t in rest)

    try:
        await net.wait_for(same)
    except TimeoutError:
        raise AssertionError(f"tables differ: {tables(net, *nodes)}") from None
    return tables(net, nodes[0])[0]


async def changes(feed: object, n: int) -> list[Change]:
    async with asyncio.timeout(DEADLINE):
        return [await feed.get() for _ in range(n)]  # type: ignore[attr-defined]


def test_a_binding_is_seen_on_every_node_and_a_second_bind_conflicts() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            bound = await b.bind("/svc/db", b"h2")
            assert (bound.owner, bound.handle) == (2, b"h2")
            assert await b.bind("/svc/db", b"h2") == bound  # the same binding again: no-op
            with pytest.raises(ConflictError, match="bound by node 2"):
                await c.bind("/svc/db", b"h3")
            await net.taps[1].wait_for(lambda: a.resolve("/svc/db") is not None)
            assert a.resolve("/svc/db") == c.resolve("/svc/db") == bound
            assert a.resolve_node("/svc/db") == 2

    asyncio.run(go())


def test_the_standby_rebinds_after_the_active_node_fails_and_resolve_gives_its_handle() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            await b.bind("/svc/db", b"active on 2")
            net.crash(2)
            await net.taps[3].wait_for(lambda: c.resolve("/svc/db") is None)  # owner-left
            taken = await c.rebind("/svc/db", b"active on 3")
            await net.taps[1].wait_for(lambda: a.resolve("/svc/db") == taken)
            assert a.resolve_node("/svc/db") == 3

    asyncio.run(go())


def test_a_switchover_rebind_wins_over_the_old_binding_and_a_late_unbind_cannot_undo_it() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            old = await b.bind("/svc/db", b"old")
            watch = a.watch("/svc")
            new = await c.rebind("/svc/db", b"new")
            assert new.stamp > old.stamp
            with pytest.raises(ConflictError):
                await b.unbind("/svc/db", b"old")  # the old active cleaning up, too late
            assert b.resolve("/svc/db") == new
            assert await changes(watch, 1) == [Change("/svc/db", old, new, Reason.REBOUND)]
            assert await c.unbind("/svc/db", b"new") is True
            assert await c.unbind("/svc/db") is False

    asyncio.run(go())


def test_when_a_node_leaves_its_bindings_go_and_watchers_are_told() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            for name in ("/svc/x", "/svc/y", "/other"):
                await b.bind(name, b"on 2")
            kept = await c.bind("/svc/z", b"on 3")
            watch = a.watch("/svc")
            net.crash(2)
            got = await changes(watch, 2)
            assert {(ch.name, ch.reason) for ch in got} == {
                ("/svc/x", Reason.OWNER_LEFT),
                ("/svc/y", Reason.OWNER_LEFT),
            }
            assert await converged(net, 1, 3) == [kept]

    asyncio.run(go())


def test_a_bind_for_an_owner_outside_the_group_is_refused() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, _ = await net.start_all(1, 2)
            with pytest.raises(UnavailableError, match="owner node 9"):
                await a.bind("/svc/db", b"h", owner=9)
            bound = await a.bind("/svc/db", b"h", owner=2)  # on behalf of another member: fine
            assert bound.owner == 2

    asyncio.run(go())


def test_a_joiner_gets_the_table_by_state_transfer() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b = await net.start_all(1, 2)
            for i in range(20):
                await (a if i % 2 else b).bind(f"/svc/{i}", bytes([i]))
            await a.unbind("/svc/3")
            c = await net.start(3)
            assert c.in_sync
            table = await converged(net, 1, 2, 3)
            assert len(table) == 19 and c.resolve("/svc/4") == a.resolve("/svc/4")

    asyncio.run(go())


def test_a_joiner_converges_while_binds_race_its_join_and_the_sender_dies() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)

            async def churn(node: NamingService, tag: str) -> None:
                for i in range(40):
                    await node.rebind(f"/load/{i % 7}", f"{tag}{i}".encode())
                    await asyncio.sleep(0)  # let the join land mid-stream (not a synchronisation)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(churn(b, "b"))
                tg.create_task(churn(c, "c"))
                joiner = await net.start(4, ready=False)
                net.crash(1)  # the member that would send the table dies before it can
            async with asyncio.timeout(DEADLINE):
                await joiner.wait_ready()
            table = await converged(net, 2, 3, 4)
            assert {bd.owner for bd in table} <= {2, 3} and len(table) == 7
            del a

    asyncio.run(go())


def test_a_joiner_founds_the_table_when_every_member_holding_it_died() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            (a,) = await net.start_all(1)
            await a.bind("/svc/a", b"a")
            joiner = await net.start(2, ready=False)
            net.crash(1)
            async with asyncio.timeout(DEADLINE):
                await joiner.wait_ready()
            assert joiner.bindings_under() == []  # 1's bindings went with it anyway
            assert (await joiner.bind("/svc/b", b"b")).owner == 2

    asyncio.run(go())


def test_after_a_partition_heals_both_sides_hold_the_union() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            await a.bind("/both", b"before")
            net.bus.partition([[1, 2], [3]])
            await net.taps[3].wait_for(lambda: c.resolve("/both") is None)
            left = await b.bind("/side/left", b"l")
            right = await c.bind("/side/right", b"r")
            net.bus.heal()
            table = await converged(net, 1, 2, 3)
            assert {bd.name for bd in table} == {"/both", "/side/left", "/side/right"}
            assert left in table and right in table

    asyncio.run(go())


def test_the_table_rules() -> None:
    t = NameTable()
    t.apply(Members((1, 2)))
    out, ch = t.apply(Request(1, 1, Bind("/a", b"1", 1)))
    assert out is not None and out.binding == Binding("/a", b"1", 1, 1) and len(ch) == 1
    out, _ = t.apply(Request(2, 1, Bind("/a", b"2", 2)))
    assert out is not None and isinstance(out.error, ConflictError)
    out, ch = t.apply(Request(2, 2, Bind("/a", b"2", 2, replace=True)))
    assert out is not None and out.binding == Binding("/a", b"2", 2, 2)
    assert ch[0].reason is Reason.REBOUND
    out, _ = t.apply(Request(1, 2, Unbind("/a", expect=b"1")))
    assert out is not None and isinstance(out.error, ConflictError)
    _, ch = t.apply(Members((1,)))
    assert [c.reason for c in ch] == [Reason.OWNER_LEFT] and t.resolve("/a") is None
    # Merge keeps the later binding of a name and drops non-members' bindings.
    t.apply(Request(1, 3, Bind("/m", b"mine", 1)))
    t.apply(Members((1, 3)))
    theirs = Snapshot(9, (1, 3), (Binding("/m", b"theirs", 3, 9), Binding("/x", b"x", 4, 2)))
    t.merge(theirs)
    assert [(bd.name, bd.handle) for bd in t.bindings_under()] == [("/m", b"theirs")]


@pytest.mark.parametrize("bad", ["", "svc", "/svc/", "//svc", "/a//b", "/a\nb", "/" + "x" * 1024])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_name(bad)


def _valid() -> list[bytes]:
    snap = Snapshot(3, (1, 2), (Binding("/a", b"h", 1, 1), Binding("/b/c", b"", 2, 3)))
    bodies = [
        (wire.Kind.BIND, wire.encode_bind(7, Bind("/svc/x", b"h", 1))),
        (wire.Kind.BIND, wire.encode_bind(8, Bind("/svc/x", b"h", 2, replace=True))),
        (wire.Kind.UNBIND, wire.encode_unbind(9, Unbind("/svc/x", b"h"))),
        (wire.Kind.UNBIND, wire.encode_unbind(9, Unbind("/svc/y"))),
        (wire.Kind.SYNC, wire.encode_sync(wire.Sync(Offer(((2, 0),), (1,)), snap))),
    ]
    return [envelope.encode(Envelope(Service.CNS, k, b)) for k, b in bodies]


def is_malformed(data: bytes) -> bool:
    try:
        env = envelope.decode(data, expect=Service.CNS)
        wire.decode(env.kind, env.body)
    except WireError:
        return True
    return False


JUNK = st.one_of(
    st.binary(max_size=80),
    st.builds(
        garble,
        st.sampled_from(_valid()),
        st.integers(0, 3),
        st.integers(0, 999),
        st.integers(0, 255),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(JUNK, min_size=1, max_size=6))
def test_junk_is_dropped_and_counted_and_the_service_keeps_working(junk: list[bytes]) -> None:
    name = f"/probe/{uuid.uuid4().hex}"

    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b = await net.start_all(1, 2)
            for data in junk:
                inject(net, 1, data)
            bound = await a.bind(name, b"h")
            await net.taps[2].wait_for(lambda: b.resolve(name) == bound)
            malformed = sum(map(is_malformed, junk))
            assert b.drops.total - b.drops.counts["unexpected-sync"] == malformed
            assert b.drops.counts["handler-error"] == 0

    asyncio.run(go())
