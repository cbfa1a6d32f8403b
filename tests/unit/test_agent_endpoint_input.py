"""The application socket under hostile input: every bad line is answered with a usage error
naming what is wrong, nothing of it is applied, and the session (and every other) goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _endpoint import APP, OTHER, Bench, receive, run

from haos.client import Client
from haos.errors import UsageError
from haos.limits import MAX_CHECKPOINT_DATA, MAX_SOCKET_LINE

pytestmark = pytest.mark.timeout(60)


async def still_serving(
    b: Bench, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The session that sent the bad line still works, and so does another application."""
    writer.write(b'{"op": "ckpt_write", "id": 90, "section": "after", "data": "b2s="}\n')
    assert await receive(reader) == {"id": 90, "ok": True}
    assert b.backend.checkpoints[(APP, "after")] == b"ok"
    assert b.endpoint.session(APP) is not None
    await another_is_served(b)


async def another_is_served(b: Bench) -> None:
    """Another application registers and writes as if nothing happened."""
    async with Client(OTHER, str(b.path)) as other:
        await other.register()
        await other.checkpoint_write("s", b"fine")
    assert b.backend.checkpoints[(OTHER, "s")] == b"fine"


DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"1" + b"0" * 400  # 10**400
HUGER = b"9" * 5000  # past Python's 4300-digit limit for int()


AUDIT = b'{"op": "register_audit", "id": 5, "name": "a", '
WRITE = b'{"op": "ckpt_write", "id": 5, "section": "s", '
READ = b'{"op": "ckpt_read", "section": "s", '


@pytest.mark.parametrize(
    ("line", "has_id", "words"),
    [
        (WRITE + b'"data": ' + DEEP + b"}", False, "nested deeper"),
        (b'{"a":' * 50_000, False, "nested deeper"),
        (WRITE + b'"data": ' + HUGE + b"}", True, "data: 1000"),
        (READ + b'"id": ' + HUGE + b"}", False, "id: 1000"),
        (READ + b'"id": ' + HUGER + b"}", False, "id: 999"),
        (b'{"op": "ack", "seq": ' + HUGE + b"}", False, "seq: 1000"),
        (WRITE + b'"data": "", "sync": NaN}', True, "sync: NaN is not a finite number"),
        (AUDIT + b'"period": Infinity, "timeout": 1}', True, "period: Infinity is not"),
        (AUDIT + b'"period": 2, "timeout": -Infinity}', True, "timeout: -Infinity is not"),
        (AUDIT + b'"period": 1e400, "timeout": 1}', True, "period: 1e400 is not"),
        (b'{"op": "ack", "seq": [1]}', False, "ack: seq must be a whole number"),
        (b'{"op": "quiesced", "seq": {"a": 1}}', False, "quiesced: seq must be a whole number"),
        (b'{"op": "audit_result", "seq": 1, "ok": "y"}', False, "audit_result: ok must be true"),
        (WRITE + b'"data": "", "sync": "no"}', True, "ckpt_write: sync must be true or false"),
        (b'{"op": "ckpt_read", "id": 5, "section": [1]}', True, "section must be a non-empty"),
        (b'{"op": "name_bind", "id": 5, "name": "n", "handle": 7}', True, "handle must be a str"),
        (READ + b'"id": true}', False, "ckpt_read has no integer id"),
        (b'{"op": 5, "id": 5}', False, "no op"),
        (AUDIT + b'"period": 1e-300, "timeout": 1e-301}', True, "period must be at least 0.05s"),
        (AUDIT + b'"period": 1, "timeout": 2}', True, "timeout must be shorter than the period"),
        (AUDIT + b'"period": 1, "timeout": 1}', True, "timeout must be shorter than the period"),
        (AUDIT + b'"period": true, "timeout": 0.5}', True, "period must be a positive"),
    ],
)
def test_a_bad_line_gets_a_usage_error_naming_the_field_and_the_session_goes_on(
    line: bytes, has_id: bool, words: str, tmp_path: Path
) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await b.session()
        writer.write(line + b"\n")
        reply = await receive(reader)
        assert reply["ok"] is False and reply["error"] == "usage", reply
        assert words in reply["message"], reply
        assert len(reply["message"]) < 400  # a huge value is not echoed whole
        assert reply.get("id") == (5 if has_id else None)  # the caller's request is answered
        assert b.backend.writes == [] and b.audits.audits == {}  # nothing applied
        assert b.endpoint.bad_messages == 1
        await still_serving(b, reader, writer)

    run(body, tmp_path)


def test_a_line_over_the_limit_is_answered_naming_the_limit_and_ends_only_that_connection(
    tmp_path: Path,
) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await b.session()
        writer.write(b'{"op": "ckpt_write", "id": 2, "data": "' + b"A" * MAX_SOCKET_LINE + b'"}\n')
        reply = await receive(reader)
        assert reply["ok"] is False and reply["error"] == "line-too-long"
        assert f"limit of {MAX_SOCKET_LINE} bytes" in reply["message"]
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # the connection is closed
        assert b.backend.writes == []
        await another_is_served(b)

    run(body, tmp_path)


def test_a_hello_over_the_limit_is_answered_naming_the_limit(tmp_path: Path) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await b.raw()
        writer.write(b'{"op": "hello", "component": "' + b"c" * MAX_SOCKET_LINE + b'"}\n')
        reply = await receive(reader)
        assert reply["error"] == "line-too-long" and "MAX_SOCKET_LINE" in reply["message"]
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        assert b.endpoint.bad_messages == 1
        await still_serving(b, *await b.session())

    run(body, tmp_path)


def test_a_largest_checkpoint_section_travels_and_a_larger_one_is_refused_unsent(
    tmp_path: Path,
) -> None:
    async def body(b: Bench) -> None:
        async with Client(APP, str(b.path)) as client:
            await client.register()
            biggest = bytes(range(256)) * (MAX_CHECKPOINT_DATA // 256)
            await client.checkpoint_write("big", biggest)
            assert b.backend.checkpoints[(APP, "big")] == biggest
            assert await client.checkpoint_read("big") == biggest
            with pytest.raises(UsageError, match="MAX_CHECKPOINT_DATA"):
                await client.checkpoint_write("big", biggest + b"x")
            with pytest.raises(UsageError, match="MAX_SOCKET_LINE"):
                await client.name_bind("n", "h" * MAX_SOCKET_LINE)
            assert len(b.backend.writes) == 1 and b.backend.names == {}
            await client.checkpoint_write("small", b"still connected")
        assert b.endpoint.bad_messages == 0

    run(body, tmp_path)


def test_the_endpoint_refuses_data_over_the_section_limit_from_a_raw_client(
    tmp_path: Path,
) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await b.session()
        data = b"A" * ((MAX_CHECKPOINT_DATA // 3 + 1) * 4)  # base64 of one byte too many
        writer.write(b'{"op": "ckpt_write", "id": 3, "section": "s", "data": "' + data + b'"}\n')
        reply = await receive(reader)
        assert reply["id"] == 3 and reply["ok"] is False
        assert "MAX_CHECKPOINT_DATA" in reply["message"]
        assert b.backend.writes == []
        await still_serving(b, reader, writer)

    run(body, tmp_path)
