"""RRPC on the in-memory bus: replies, errors, timeouts, retries that never run a call twice,
prompt failure when the server's node leaves, and junk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.messaging import rrpc_wire as wire
from haos.cluster.dss.messaging.rrpc import (
    Call,
    CallTimeout,
    RemoteError,
    RpcService,
    decode_failure,
)
from haos.cluster.dss.messaging.rrpc_core import CallTable, ReplyCache, Seen
from haos.cluster.dss.transport import GroupTransport, TransportEvent, View
from haos.cluster.dss.wire import Envelope, Service, WireError
from haos.errors import ConflictError, NotActiveError, UnavailableError, UsageError
from haoslab.fakes.localnet import LocalNet, garble, inject

pytestmark = pytest.mark.timeout(60)
DEADLINE = 5.0


async def echo(call: Call) -> bytes:
    return b"echo:" + call.payload


class Names:
    def __init__(self) -> None:
        self.table: dict[str, int] = {}

    def resolve_node(self, name: str) -> int | None:
        return self.table.get(name)


def factory(names: Names | None = None) -> Callable[[GroupTransport], RpcService]:
    return lambda t: RpcService(t, resolver=names, instance=t.node_id * 1000)


def test_a_call_reaches_the_server_and_the_reply_only_the_caller() -> None:
    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b, c = await net.start_all(1, 2, 3)
            b.register("echo", echo)
            assert await a.call(2, "echo", b"hi") == b"echo:hi"
            assert (b.stats.executed, c.stats.executed) == (1, 0)
            assert c.stats.not_for_us == 2  # the request and the reply, silently
            assert a.drops.total == b.drops.total == c.drops.total == 0

    asyncio.run(go())


def test_a_call_by_name_goes_to_the_node_the_resolver_names_now() -> None:
    names = Names()

    async def go() -> None:
        async with LocalNet(factory(names)) as net:
            a, b, c = await net.start_all(1, 2, 3)
            for server in (b, c):
                server.register("who", lambda call, n=server.node_id: _const(str(n)))
            names.table["/svc/db"] = 2
            assert await a.call("/svc/db", "who") == b"2"
            names.table["/svc/db"] = 3  # fail-over: the standby's binding replaced the active's
            assert await a.call("/svc/db", "who") == b"3"
            with pytest.raises(UnavailableError, match="no node serves"):
                await a.call("/svc/none", "who")

    asyncio.run(go())


async def _const(value: str) -> bytes:
    return value.encode()


def test_handler_errors_and_missing_methods_come_back_as_remote_errors() -> None:
    async def boom(call: Call) -> bytes:
        raise ValueError("bad input")

    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            b.register("boom", boom)
            with pytest.raises(RemoteError, match="ValueError: bad input") as err:
                await a.call(2, "boom")
            assert err.value.status is wire.Status.ERROR
            with pytest.raises(RemoteError, match="no method 'nope'") as err:
                await a.call(2, "nope")
            assert err.value.status is wire.Status.NO_METHOD

    asyncio.run(go())


def test_a_handlers_error_code_reaches_the_caller_whatever_its_message() -> None:
    async def not_active(call: Call) -> bytes:
        raise NotActiveError("mastership moved to n3")

    async def conflict(call: Call) -> bytes:
        raise ConflictError("revision 7 changed")

    async def crash(call: Call) -> bytes:
        raise KeyError("x")

    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            for name, handler in (("na", not_active), ("cf", conflict), ("kx", crash)):
                b.register(name, handler)
            codes = {}
            for name in ("na", "cf", "kx", "nope"):
                with pytest.raises(RemoteError) as err:
                    await a.call(2, name)
                codes[name] = err.value.remote_code
            assert codes == {
                "na": "not-active",
                "cf": "conflict",
                "kx": "internal",
                "nope": "no-method",
            }

    asyncio.run(go())


def test_a_reply_in_the_older_plain_text_form_still_fails_the_call() -> None:
    error = decode_failure(2, wire.Status.ERROR, b"ValueError: bad input")
    assert error.remote_code == "remote" and str(error) == "node 2: ValueError: bad input"
    error = decode_failure(2, wire.Status.ERROR, b'{"code": 5}')  # not a code: kept as text
    assert error.remote_code == "remote"


def test_a_call_to_a_node_outside_the_group_fails_at_once() -> None:
    async def go() -> None:
        async with LocalNet(factory()) as net:
            (a,) = await net.start_all(1)
            with pytest.raises(UnavailableError, match="node 7 is not a member"):
                await a.call(7, "echo")
            with pytest.raises(UsageError):
                await a.call(1, "echo", timeout=0)

    asyncio.run(go())


def test_a_call_nobody_answers_times_out_after_every_attempt() -> None:
    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            b.register("hang", lambda call: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
            with pytest.raises(CallTimeout, match="3 attempt"):
                await a.call(2, "hang", timeout=0.02, retries=2)
            assert a.stats.retries == 2
            assert (b.stats.executed, b.stats.duplicates) == (1, 2)
            assert a.outstanding == 0

    asyncio.run(go())


def test_a_retry_of_a_running_call_does_not_run_it_again() -> None:
    async def go() -> None:
        gate = asyncio.Event()
        runs: list[Call] = []

        async def slow(call: Call) -> bytes:
            runs.append(call)
            await gate.wait()
            return b"done"

        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            b.register("slow", slow)
            call = asyncio.create_task(a.call(2, "slow", b"x", timeout=0.05, retries=20))
            await net.taps[2].wait_for(lambda: b.stats.duplicates >= 1)  # a retry arrived
            gate.set()
            assert await call == b"done"
            assert len(runs) == 1 and b.stats.executed == 1

    asyncio.run(go())


def test_a_retry_of_a_finished_call_gets_the_kept_reply_without_running_it() -> None:
    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            b.register("echo", echo)
            assert await a.call(2, "echo", b"once") == b"echo:once"
            # The same request again, as if the reply had been lost and the caller retried.
            request = wire.Request(2, a_instance := 1000, 1, "echo", b"once")
            assert a_instance == 1000
            payload = envelope.encode(
                Envelope(Service.RRPC, wire.Kind.REQUEST, wire.encode_request(request))
            )
            inject(net, 1, payload)
            await net.taps[1].wait_for(lambda: a.drops.counts["stale-reply"] == 1)
            assert (b.stats.executed, b.stats.replayed) == (1, 1)

    asyncio.run(go())


class Ticks:
    """Counts event-loop iterations: one callback that re-schedules itself each iteration."""

    def __init__(self) -> None:
        self.n = 0
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.n += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


def test_outstanding_calls_fail_in_the_iteration_that_shows_the_server_left() -> None:
    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b, _ = await net.start_all(1, 2, 3)
            b.register("hang", lambda call: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
            ticks = Ticks()
            seen: dict[str, int] = {}

            def on_event(event: TransportEvent) -> None:
                if isinstance(event, View) and 2 in event.left:
                    seen["view"] = ticks.n

            def on_resume(handled: TransportEvent) -> None:
                if isinstance(handled, View) and 2 in handled.left:
                    seen["outstanding after the view"] = a.outstanding

            net.taps[1].on_event, net.taps[1].on_resume = on_event, on_resume

            async def calling(payload: bytes) -> None:
                try:
                    await a.call(2, "hang", payload, timeout=60, retries=3)
                except UnavailableError as e:
                    seen[f"failed {payload!r}"] = ticks.n
                    assert "node 2 left" in str(e)

            async with asyncio.TaskGroup() as tg:
                for p in (b"1", b"2"):
                    tg.create_task(calling(p))
                await net.taps[2].wait_for(lambda: b.stats.executed == 2)
                net.crash(2)
            ticks.stop()
            assert seen["outstanding after the view"] == 0  # failed while handling the view
            # ...and each caller resumed in the very next iteration: no timer was involved.
            assert seen["failed b'1'"] - seen["view"] <= 1
            assert seen["failed b'2'"] - seen["view"] <= 1

    asyncio.run(go())


def test_closing_the_caller_fails_its_outstanding_calls() -> None:
    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            b.register("hang", lambda call: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
            call = asyncio.create_task(a.call(2, "hang", timeout=60))
            await net.taps[2].wait_for(lambda: b.stats.executed == 1)
            await a.close()
            with pytest.raises(UnavailableError, match="closed"):
                await call

    asyncio.run(go())


def test_reply_cache_runs_each_call_once_and_forgets_departed_callers() -> None:
    cache = ReplyCache(limit=2)
    assert cache.begin((1, 9, 1)) == (Seen.NEW, None)
    assert cache.begin((1, 9, 1)) == (Seen.RUNNING, None)
    cache.finish((1, 9, 1), b"\0r1")
    assert cache.begin((1, 9, 1)) == (Seen.DONE, b"\0r1")
    for call_id in (2, 3):
        cache.begin((2, 9, call_id))
        cache.finish((2, 9, call_id), b"\0")
    assert cache.begin((1, 9, 1)) == (Seen.NEW, None)  # evicted: the limit is 2
    cache.forget_callers_except([1])
    assert len(cache) == 1  # only the running call of node 1 is left
    table = CallTable()
    table.start(1, 2)
    table.start(2, 3)
    assert table.orphaned([1, 3]) == [1]


def _valid() -> list[bytes]:
    bodies = [
        (wire.Kind.REQUEST, wire.encode_request(wire.Request(2, 1000, 5, "echo", b"x"))),
        (wire.Kind.REQUEST, wire.encode_request(wire.Request(3, 1000, 6, "echo", b""))),
        (wire.Kind.REPLY, wire.encode_reply(wire.Reply(2, 2000, 1, wire.Status.OK, b"r"))),
        (wire.Kind.REPLY, wire.encode_reply(wire.Reply(2, 1, 1, wire.Status.ERROR, b"e"))),
    ]
    return [envelope.encode(Envelope(Service.RRPC, k, b)) for k, b in bodies]


def is_malformed(data: bytes) -> bool:
    try:
        env = envelope.decode(data, expect=Service.RRPC)
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
    token = uuid.uuid4().bytes

    async def go() -> None:
        async with LocalNet(factory()) as net:
            a, b = await net.start_all(1, 2)
            b.register("echo", echo)
            for data in junk:
                inject(net, 1, data)
            assert await a.call(2, "echo", token) == b"echo:" + token
            malformed = sum(map(is_malformed, junk))
            assert b.drops.total - b.drops.counts["stale-reply"] == malformed
            assert b.drops.counts["handler-error"] == 0

    asyncio.run(go())


def test_a_call_by_name_through_cns_reaches_the_new_active_after_a_fail_over() -> None:
    from haos.cluster.dss.naming import NamingService

    async def go() -> None:
        async with LocalNet(NamingService) as names:
            cns = await names.start_all(1, 2, 3)
            async with LocalNet(lambda t: RpcService(t, resolver=cns[t.node_id - 1])) as net:
                a, b, c = await net.start_all(1, 2, 3)
                for server in (b, c):
                    server.register("who", lambda call, n=server.node_id: _const(str(n)))
                await cns[1].bind("/svc/db", b"rpc")  # node 2 is the active
                await names.wait_for(lambda: cns[0].resolve_node("/svc/db") == 2)
                assert await a.call("/svc/db", "who") == b"2"
                names.crash(2)  # node 2 dies: its process leaves both groups
                net.crash(2)
                await names.wait_for(lambda: cns[2].resolve("/svc/db") is None)
                await cns[2].rebind("/svc/db", b"rpc")  # the standby takes over
                await names.wait_for(lambda: cns[0].resolve_node("/svc/db") == 3)
                assert await a.call("/svc/db", "who", retries=1) == b"3"

    asyncio.run(go())
