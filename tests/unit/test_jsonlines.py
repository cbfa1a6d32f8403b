"""The bounded JSON-line reader and the typed request fields that every haos socket uses."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from haos import jsonlines
from haos.fields import BadField, Op, Table, flag, integer, mapping, number, text
from haos.jsonlines import BadLine, LineTooLong
from haos.limits import MAX_CHECKPOINT_SECTION, MAX_SOCKET_LINE

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than"),
        (b'{"seq": ' + b"1" + b"0" * 400 + b"}", "seq: 100000000000000000000000... has more"),
        (b'{"seq": ' + b"9" * 5000 + b"}", "seq: 999"),  # past Python's 4300-digit limit
        (b'{"seq": [-' + b"9" * 31 + b"]}", "seq[0]: -999"),
        (b'{"limit": 1e400}', "limit: 1e400 is not a finite number"),
        (b'{"limit": -1e400}', "limit: -1e400 is not a finite number"),
        (b'{"a": {"b": [1, NaN]}}', "a.b[1]: NaN is not a finite number"),
        (b'{"t": Infinity}', "t: Infinity is not a finite number"),
        (b'{"t": -Infinity}', "t: -Infinity is not a finite number"),
        (b"\xff\xfe", "not JSON"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object but an array"),
        (b'"text"', "not a JSON object but a string"),
    ],
)
def test_lines_no_field_can_hold_are_refused_naming_where(line: bytes, words: str) -> None:
    with pytest.raises(BadLine) as refused:
        jsonlines.decode(line)
    assert words in str(refused.value)
    assert refused.value.code == "usage"


def test_a_refused_number_leaves_the_plain_top_level_fields_readable() -> None:
    with pytest.raises(BadLine) as refused:
        jsonlines.decode(b'{"id": 7, "period": 1e400}')
    assert refused.value.obj is not None and refused.value.obj["id"] == 7


def test_ordinary_objects_decode_unchanged() -> None:
    obj = {"op": "put", "key": "/a", "value": "é" * 10, "n": -(2**63), "f": 0.5, "x": None}
    assert jsonlines.decode(json.dumps(obj).encode() + b"\n") == obj


def test_encode_refuses_a_line_over_the_limit_and_numbers_that_are_not_finite() -> None:
    line = jsonlines.encode({"op": "put", "value": "x" * (MAX_SOCKET_LINE - 100)})
    assert len(line) <= MAX_SOCKET_LINE
    with pytest.raises(LineTooLong, match=f"limit of {MAX_SOCKET_LINE} bytes"):
        jsonlines.encode({"op": "put", "value": "x" * MAX_SOCKET_LINE})
    with pytest.raises(BadLine, match="not finite"):
        jsonlines.encode({"op": "x", "t": float("nan")})


def test_the_limit_carries_a_largest_checkpoint_section_in_base64() -> None:
    data = "A" * (MAX_CHECKPOINT_SECTION * 4 // 3 + 4)
    request = {"op": "ckpt_write", "id": 2**62, "name": "n" * 200, "section": "s" * 200}
    assert len(jsonlines.encode({**request, "data": data, "sync": True})) < MAX_SOCKET_LINE


def test_a_server_reads_lines_past_asyncios_default_limit_and_refuses_past_its_own(
    tmp_path: Path,
) -> None:
    results: list[object] = []

    async def run() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while (message := await jsonlines.read_message(reader)) is not None:
                    results.append(len(message["data"]))
                    writer.write(jsonlines.encode({"ok": True}))
            except LineTooLong as e:
                results.append(e)
                writer.write(jsonlines.encode({"ok": False, "error": e.code, "message": str(e)}))
            writer.close()

        path = str(tmp_path / "s.sock")
        async with await jsonlines.start_unix_server(handler, path):
            reader, writer = await jsonlines.open_unix_connection(path)
            for size in (300 * 1024, 16 * 1024 * 1024):  # both over asyncio's 64 KiB default
                writer.write(jsonlines.encode({"data": "x" * size}))
                assert jsonlines.decode(await reader.readline()) == {"ok": True}
            writer.write(b'{"data": "' + b"x" * MAX_SOCKET_LINE + b'"}\n')
            answer = jsonlines.decode(await reader.readline())
            assert answer["error"] == "line-too-long"
            assert f"limit of {MAX_SOCKET_LINE} bytes" in answer["message"]
            assert await reader.read() == b""  # and the connection is closed
            writer.close()

    asyncio.run(run())
    assert results[:2] == [300 * 1024, 16 * 1024 * 1024]
    assert isinstance(results[2], LineTooLong)


def test_socket_lines_reads_a_long_answer_and_refuses_one_over_the_limit() -> None:
    left, right = socket.socketpair()
    big = b"y" * (20 * 1024 * 1024)

    def send() -> None:
        right.sendall(b"short\n" + big + b"\n" + b"z" * (MAX_SOCKET_LINE + 1))
        right.close()

    sender = threading.Thread(target=send)
    sender.start()
    lines = jsonlines.SocketLines(left)
    assert lines.read() == b"short"
    assert lines.read() == big
    with pytest.raises(LineTooLong):
        lines.read()
    left.close()
    sender.join(10)


TABLE = Table.of(
    [
        Op(
            "put",
            (
                text("key"),
                text("value", empty=True),
                integer("expect", 0, 100, default=None),
                flag("sync", default=True),
                number("timeout", 0.0, 60.0, default=10.0),
                mapping("meta", default={}),
            ),
        )
    ]
)


PUT = {"op": "put", "key": "/a", "value": ""}


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        ({"key": "/a"}, "op must be a string naming the operation, not None"),
        ({"op": 5}, "op must be a string naming the operation, not 5"),
        ({"op": ["put"]}, "op must be a string naming the operation"),
        ({"op": "frob"}, "unknown op 'frob'; one of: put"),
        ({"op": "put", "value": ""}, "put: key must be a non-empty string; it is missing"),
        ({**PUT, "key": ""}, "put: key must be a non-empty string, not ''"),
        ({**PUT, "value": 1}, "put: value must be a string, not 1"),
        ({**PUT, "expect": -1}, "expect must be a whole number in 0..100, not -1"),
        ({**PUT, "expect": True}, "expect must be a whole number"),
        ({**PUT, "expect": 1.5}, "expect must be a whole number"),
        ({**PUT, "sync": 1}, "sync must be true or false, not 1"),
        ({**PUT, "timeout": float("nan")}, "timeout must be a number of more than 0"),
        ({**PUT, "timeout": 0}, "timeout must be a number of more than 0"),
        ({**PUT, "timeout": 61}, "at most 60"),
        ({**PUT, "meta": [1]}, "meta must be an object, not an array of 1 items"),
        ({**PUT, "key": "x" * 10_000, "meta": 2}, "meta must be an object, not 2"),
        ({**PUT, "expect": "x" * 10_000}, "expect must be a whole number in 0..100, not 'xxx"),
    ],
)
def test_request_fields_are_checked_by_type_and_range_naming_the_field(
    request_: object, words: str
) -> None:
    assert isinstance(request_, dict)
    with pytest.raises(BadField) as refused:
        TABLE.check(request_)
    assert words in str(refused.value)
    assert len(str(refused.value)) < 300  # a long value is shortened, not quoted whole


def test_checked_requests_hold_the_declared_fields_with_defaults() -> None:
    op, fields = TABLE.check({"op": "put", "key": "/a", "value": "v", "expect": None, "x": 1})
    assert op == "put"
    assert fields == {
        "key": "/a",
        "value": "v",
        "expect": None,
        "sync": True,
        "timeout": 10.0,
        "meta": {},
    }


SAMPLES: tuple[object, ...] = ("x", "active", 1, 0.5, True, {})
WRONG: tuple[object, ...] = ([[]], None, "", -(2**70), float("nan"), {"deep": []}, 2**70, 1e300)


def valid_request(op: Op) -> dict[str, object]:
    """A request of ``op`` whose every field holds the first sample its check takes."""
    request: dict[str, object] = {"op": op.name}
    for f in op.fields:
        request[f.name] = next(v for v in SAMPLES if _takes(f.check, v))
    return request


def _takes(check: Callable[[object], object], value: object) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


def every_field() -> list[tuple[str, Table, Op, str]]:
    from haos.services.agent.endpoint import ANSWERS, REQUESTS
    from haos.services.control import OPS

    tables = {"control": OPS, "requests": REQUESTS, "answers": ANSWERS}
    return [
        (where, table, op, f.name)
        for where, table in tables.items()
        for op in table.ops.values()
        for f in op.fields
    ]


@pytest.mark.parametrize(
    ("where", "table", "op", "name"),
    every_field(),
    ids=[f"{w}-{o.name}-{n}" for w, _, o, n in every_field()],
)
def test_every_field_of_every_socket_op_refuses_wrong_values_naming_itself(
    where: str, table: Table, op: Op, name: str
) -> None:
    good = valid_request(op)
    assert table.check(good)[0] == op.name
    refused = []
    for wrong in WRONG:
        try:
            table.check({**good, name: wrong})
        except BadField as e:
            assert f"{op.name}: {name} must be" in str(e), (where, e)
            refused.append(wrong)
    # No field takes an array; each refuses at least half of the wrong values (a nullable one
    # takes None, an unbounded number 2**70, a text one may take "", a mapping any object).
    assert [[]] in refused and len(refused) >= len(WRONG) // 2
