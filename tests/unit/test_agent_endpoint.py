"""The component endpoint and the client library, talking over a real unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from _endpoint import APP, NOW, Bench, receive, run, send

from haos.client import AgentError, Assignment, Client
from haos.errors import UnavailableError
from haos.limits import MAX_SOCKET_LINE
from haos.model.reports import ErrorKind, ErrorReport
from haos.model.states import AvailabilityState
from haos.services.agent.endpoint import EndpointError, SessionClosed, SessionTimeout

pytestmark = pytest.mark.timeout(30)

PRIMARY, SPARE = AvailabilityState.PRIMARY, AvailabilityState.SPARE


def test_a_role_is_assigned_once_the_application_acks(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as client:
            await client.register()
            session = await b.endpoint.wait_session(APP, 5)
            roles = aiter(client.assignments())
            assign = asyncio.create_task(session.assign(PRIMARY, False, 5))
            got = await anext(roles)
            assert got == Assignment("primary", False, got.seq) and got.primary
            await asyncio.sleep(0)
            assert not assign.done()  # waits for the ack
            await client.ack(got)
            await assign

    run(body, tmp_path)


def test_a_refused_or_unanswered_role_raises(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as client:
            await client.register()
            session = await b.endpoint.wait_session(APP, 5)
            roles = aiter(client.assignments())

            async def refuse() -> None:
                await client.ack(await anext(roles), ok=False, message="port in use")

            refusal = asyncio.create_task(refuse())
            with pytest.raises(EndpointError, match="refused the role primary: port in use"):
                await session.assign(PRIMARY, False, 5)
            await refusal
            with pytest.raises(SessionTimeout, match=r"did not answer role within 0\.05 s"):
                await session.assign(SPARE, False, 0.05)

    run(body, tmp_path)


def test_quiesce_runs_the_applications_callback_before_answering(tmp_path: Path) -> None:
    events: list[str] = []

    async def flush() -> None:
        events.append("flush started")
        await asyncio.sleep(0.05)
        events.append("flushed")

    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path), on_quiesce=flush) as client:
            await client.register()
            session = await b.endpoint.wait_session(APP, 5)
            await session.quiesce(5)
            events.append("quiesced")

    run(body, tmp_path)
    assert events == ["flush started", "flushed", "quiesced"]


def test_checkpoints_and_names_go_through_the_backend(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as client:
            await client.register()
            assert await client.checkpoint_read("counter") is None
            await client.checkpoint_write("counter", b"\x00\xff7", sync=True)
            await client.checkpoint_write("other", b"x", sync=False)
            assert await client.checkpoint_read("counter") == b"\x00\xff7"
            assert b.backend.writes == [
                (APP, "counter", b"\x00\xff7", True),
                (APP, "other", b"x", False),
            ]
            await client.name_bind("demo/counter", "10.0.0.1:7070")
            assert await client.name_lookup("demo/counter") == "10.0.0.1:7070"
            assert await client.name_lookup("/nothing") is None
            assert b.backend.names == {"demo/counter": ("10.0.0.1:7070", APP)}
            b.backend.fail = UnavailableError("no quorum")
            with pytest.raises(AgentError, match="unavailable: no quorum") as info:
                await client.checkpoint_write("counter", b"1")
            assert info.value.error == "unavailable"

    run(body, tmp_path)


def test_a_slow_name_bind_does_not_hold_up_checkpoint_writes(tmp_path: Path) -> None:
    """Requests run in lanes: checkpoint writes stay in order among themselves but do not
    wait behind a repository write (a name bind) of the same application."""

    async def body(b: Bench) -> None:
        b.backend.names_gate = asyncio.Event()
        async with Client(APP, str(b.path)) as client:
            await client.register()
            bind = asyncio.create_task(client.name_bind("demo/counter", "10.0.0.1:7070"))
            await asyncio.sleep(0.05)
            for value in (b"1", b"2", b"3"):
                await client.checkpoint_write("counter", value, sync=True)
            assert [w[2] for w in b.backend.writes] == [b"1", b"2", b"3"]
            assert not bind.done() and b.backend.names == {}
            b.backend.names_gate.set()
            await asyncio.wait_for(bind, 5)
            assert b.backend.names == {"demo/counter": ("10.0.0.1:7070", APP)}

    run(body, tmp_path)


def test_reported_errors_reach_the_report_callback(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as client:
            await client.register()
            await client.report_error("error", "disk full")
            with pytest.raises(AgentError, match="unknown error kind 'bad'"):
                await client.report_error("bad", "x")
        assert b.reports == [ErrorReport(APP, ErrorKind.ERROR, NOW, "client", "disk full")]
        assert b.endpoint.bad_messages == 1

    run(body, tmp_path)


def test_audits_are_registered_run_through_the_application_and_dropped_on_exit(
    tmp_path: Path,
) -> None:
    answers: list[tuple[bool, str]] = [(True, "fine"), (False, "queue stuck")]

    async def audit() -> tuple[bool, str]:
        return answers.pop(0)

    async def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    async def slow() -> tuple[bool, str]:
        await asyncio.sleep(10)
        return True, ""

    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as client:
            await client.register()
            await client.register_audit("alive", 1.0, 0.5, audit)
            await client.register_audit("broken", 1.0, 0.5, broken)
            await client.register_audit("slow", 1.0, 0.05, slow)
            spec, _ = b.audits.audits[(APP, "alive")]
            assert (spec.kind, spec.period, spec.timeout, spec.target) == (
                "callback", 1.0, 0.5, "alive"
            )  # fmt: skip
            assert await b.audits.run(APP, "alive") == (True, "fine")
            assert await b.audits.run(APP, "alive") == (False, "queue stuck")
            ok, detail = await b.audits.run(APP, "broken")
            assert not ok and "boom" in detail
            ok, detail = await b.audits.run(APP, "slow")
            assert not ok and "did not answer audit within 0.05 s" in detail
            with pytest.raises(AgentError, match="period must be a positive"):
                await client.register_audit("bad", -1.0, 0.5, audit)
            await client.close()
            async with asyncio.timeout(5):
                while b.endpoint.session(APP) is not None:
                    await asyncio.sleep(0.01)
        assert b.audits.audits == {}

    run(body, tmp_path)


def test_bad_messages_are_answered_and_counted_and_the_endpoint_serves_on(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await b.raw()
        writer.write(b"this is not json\n")
        await writer.drain()
        reply = await receive(reader)
        assert reply["ok"] is False and "not JSON" in reply["message"]
        assert await reader.readline() == b""  # no hello: the connection ends

        reader, writer = await b.raw()
        await send(writer, {"op": "report_error", "id": 1, "kind": "error", "detail": ""})
        assert "first message must be hello" in (await receive(reader))["message"]

        for hello, why in [
            ({"op": "hello", "id": 1, "version": 2, "component": APP}, "speaks version 1"),
            ({"op": "hello", "id": 1, "version": 1, "component": "n2/x"}, "not a client comp"),
            ({"op": "hello", "id": 1, "version": 1}, "component must be a non-empty string"),
        ]:
            reader, writer = await b.raw()
            await send(writer, hello)
            reply = await receive(reader)
            assert reply["id"] == 1 and why in reply["message"], reply

        reader, writer = await b.raw()
        await send(writer, {"op": "hello", "id": 1, "version": 1, "component": APP})
        assert (await receive(reader)) == {"id": 1, "ok": True, "version": 1}
        for bad, why in [
            ([1, 2], "not a JSON object"),
            ({"id": 2}, "no op"),
            ({"op": "frobnicate", "id": 3}, "unknown op 'frobnicate'"),
            ({"op": "ckpt_read"}, "has no integer id"),
            ({"op": "ack", "seq": 99}, "answers nothing that was asked"),
            ({"op": "ckpt_write", "id": 4, "section": "s", "data": "%%%"}, "not valid base64"),
            ({"op": "ckpt_read", "id": 5, "section": ""}, "section must be a non-empty"),
            ({"op": "hello", "id": 6, "version": 1, "component": APP}, "already registered"),
        ]:
            await send(writer, bad)
            assert why in (await receive(reader))["message"], bad
        assert b.endpoint.bad_messages == 1 + 1 + 3 + 8

        async with Client("n1/other", str(b.path)) as other:  # the endpoint still serves
            await other.register()
            await other.checkpoint_write("s", b"ok")
        with contextlib.suppress(ConnectionError):  # over the line limit: that connection ends
            writer.write(b"x" * (MAX_SOCKET_LINE + 1) + b"\n")
            await writer.drain()
        async with asyncio.timeout(5):
            while b.endpoint.session(APP) is not None:
                await asyncio.sleep(0.01)
        assert b.endpoint.bad_messages == 14

    run(body, tmp_path)


def test_a_new_registration_replaces_the_old_session(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as first, Client(APP, str(b.path)) as second:
            await first.register()
            old = await b.endpoint.wait_session(APP, 5)
            await second.register()
            new = b.endpoint.session(APP)
            assert new is not None and new is not old and old.closed.is_set()
            with pytest.raises(SessionClosed):
                await old.assign(PRIMARY, False, 1)
            with pytest.raises(UnavailableError, match="agent closed the connection"):
                async for _ in first.assignments():
                    pass

    run(body, tmp_path)


def test_a_client_without_an_agent_fails_clearly(tmp_path: Path) -> None:
    async def body() -> None:
        async with Client(APP, str(tmp_path / "nothing.sock")) as client:
            with pytest.raises(UnavailableError, match=r"nothing\.sock"):
                await client.register()

    asyncio.run(body())
