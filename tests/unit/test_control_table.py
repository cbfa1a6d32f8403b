"""The control socket's one table of operations: each op a typed request bound to its handler.

Parsing alone (what each kind of bad request is told), the table against what the clients in
this repository send, and the daemon's own server on a real unix socket: a bad request is
refused naming the field, nothing of it is applied, and the server serves on."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from haos.cluster.crim.topology import Topology
from haos.cluster.dss.messaging.rrpc import RpcService
from haos.config.loader import load_config
from haos.errors import ConflictError, UsageError
from haos.fields import BadField
from haos.services import controlops as ops
from haos.services.clusterapi import ClusterApi
from haos.services.clusterctl import OPERATIONS, ControlServer
from haos.services.control import OPS, AsyncControlClient, ControlError
from haos.services.crimd import AvailabilityService
from haos.services.orderbook import NodeOrders

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
STREAMS = {"watch", "events", "orders"}
OP_NAME = re.compile(r"[a-z][a-z_]*")


# --- the table ----------------------------------------------------------------------------


def test_every_op_of_the_table_has_a_frozen_request_type_and_every_request_a_handler() -> None:
    declared = ops.requests()
    assert set(OPERATIONS.rows) == set(declared)
    for name, row in OPERATIONS.rows.items():
        assert row.request is declared[name]
        assert dataclasses.is_dataclass(row.request)
        assert row.request.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert ops.op_of(row.request).name == name
    assert {n for n, r in OPERATIONS.rows.items() if isinstance(r, ops.Stream)} == STREAMS


def test_the_field_checks_the_tests_and_tools_read_are_the_tables() -> None:
    assert set(OPS.ops) == set(OPERATIONS.rows)
    for name, row in OPERATIONS.rows.items():
        names = [f.name for f in OPS.ops[name].fields]
        assert names == [f.name for f in dataclasses.fields(row.request)]


def test_a_request_type_not_in_the_table_is_refused_when_the_table_is_built() -> None:
    rows = [r for r in OPERATIONS.rows.values() if r.name != "put"]
    with pytest.raises(TypeError, match="ops without a handler: put"):
        ops.Operations.of(rows)
    with pytest.raises(TypeError, match="op status has two handlers"):
        ops.Operations.of([*OPERATIONS.rows.values(), OPERATIONS.rows["status"]])


def test_a_request_type_that_is_not_frozen_or_has_an_undeclared_field_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a frozen dataclass"):

        @ops.declare("thaw")
        @dataclasses.dataclass
        class Thaw:
            pass

    with pytest.raises(TypeError, match="field n must be declared with arg"):

        @ops.declare("loose")
        @dataclasses.dataclass(frozen=True)
        class Loose:
            n: int = 1

    assert "thaw" not in ops.requests() and "loose" not in ops.requests()


# --- parsing ------------------------------------------------------------------------------


def test_a_request_is_parsed_into_its_typed_dataclass_with_defaults_filled_in() -> None:
    assert ops.parse({"op": "put", "key": "/k", "value": ""}) == ops.Put(key="/k", value="")
    assert ops.parse({"op": "history"}) == ops.History(limit=50)
    assert ops.parse({"op": "ckpt_open", "name": "c"}) == ops.CkptOpen(
        name="c", role="standby", persistent=False
    )
    events = ops.parse({"op": "events", "cluster": True, "since": 5, "follow": False})
    assert events == ops.Events(cluster=True, since=5.0, follow=False)
    assert isinstance(events.since, float)
    assert ops.parse({"op": "watch", "after": None}) == ops.Watch(prefix="/", after=None)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"op": "frobnicate"}, "unknown op 'frobnicate'; one of: applied, availability,"),
        ({"op": 5}, "op must be a string naming the operation, not 5"),
        ({}, "op must be a string naming the operation, not None"),
        ({"op": ["put"]}, "op must be a string naming the operation, not an array of 1 items"),
    ],
)
def test_an_unknown_op_is_a_usage_error_listing_the_ops(
    message: dict[str, Any], words: str
) -> None:
    with pytest.raises(BadField) as refused:
        ops.parse(message)
    assert refused.value.code == "usage"
    assert words in str(refused.value)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        # missing
        ({"op": "put", "value": "v"}, "put: key must be a non-empty string; it is missing"),
        ({"op": "name_bind", "component": "c", "name": "n"}, "name_bind: handle must be a"),
        ({"op": "running", "component": "c", "state": "primary"}, "running: at must be a"),
        ({"op": "applied"}, "applied: order must be an object; it is missing"),
        # wrong type
        ({"op": "put", "key": "/k", "value": 5}, "put: value must be a string, not 5"),
        ({"op": "ckpt_open", "name": "c", "persistent": "yes"}, "persistent must be true or"),
        ({"op": "report", "report": [1]}, "report: report must be an object, not an array"),
        ({"op": "history", "limit": 2.5}, "history: limit must be a whole number in 1..1000000"),
        ({"op": "events", "since": "yesterday"}, "events: since must be a finite number"),
        ({"op": "applied", "order": {}, "epoch": True}, "applied: epoch must be a whole number"),
        # unknown key
        ({"op": "put", "key": "/k", "value": "v", "revision": 3}, "put: unknown field 'revision'"),
        ({"op": "status", "verbose": True}, "status: unknown field 'verbose'; it takes no fields"),
        ({"op": "history", "limit": 5, "since": 1, "x": 0}, "history: unknown field 'since', 'x'"),
        # out of range or not one of the choices
        ({"op": "history", "limit": 0}, "history: limit must be a whole number in 1..1000000"),
        ({"op": "put", "key": "/k", "value": "v", "expect": -1}, "put: expect must be a whole"),
        ({"op": "operator", "action": "lock", "target": "n1", "timeout": 1e9}, "timeout must be"),
        ({"op": "ckpt_open", "name": "c", "role": "boss"}, "role must be one of active, standby"),
        ({"op": "get", "key": ""}, "get: key must be a non-empty string, not ''"),
    ],
)
def test_a_bad_field_is_a_usage_error_naming_the_op_and_the_field(
    message: dict[str, Any], words: str
) -> None:
    with pytest.raises(BadField) as refused:
        ops.parse(message)
    assert refused.value.code == "usage"
    assert words in str(refused.value)


def test_a_huge_unknown_key_is_named_shortened() -> None:
    with pytest.raises(BadField) as refused:
        ops.parse({"op": "status", "k" * 10_000: 1})
    assert len(str(refused.value)) < 200


# --- the table against its clients --------------------------------------------------------


def sent_by_clients() -> dict[str, set[str]]:
    """Every op sent with ``.request("op", ...)`` / ``.stream("op", ...)`` in the product, the
    lab and the tests, with the fields each call names."""
    sent: dict[str, set[str]] = {}
    for root in ("haos", "haoslab", "tests"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("request", "stream")
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and OP_NAME.fullmatch(node.args[0].value)  # not an HTTP client's "GET"
                ):
                    continue
                names = {k.arg for k in node.keywords if k.arg is not None}
                sent.setdefault(node.args[0].value, set()).update(names)
    return sent


def test_the_ops_the_clients_send_are_exactly_the_tables_and_with_fields_it_declares() -> None:
    sent = sent_by_clients()
    assert set(sent) == set(OPERATIONS.rows)
    for name, names in sent.items():
        declared = {f.name for f in dataclasses.fields(OPERATIONS.rows[name].request)}
        assert names <= declared, (name, names - declared)
    # the product's own clients among them (the agent's link, haosctl, the events client)
    assert {"orders", "report", "event", "running", "applied", "operator", "history"} <= set(sent)


def test_the_events_client_sends_a_request_the_table_takes() -> None:
    source = (REPO / "haos/client/events.py").read_text()
    assert '{"op": "events", "cluster": True, "since": since, "follow": follow}' in source
    request = {"op": "events", "cluster": True, "since": None, "follow": True}
    assert ops.parse(request) == ops.Events(cluster=True, since=None, follow=True)


# --- the daemon's server on a real socket -------------------------------------------------


class Repository:
    """The repository calls the put/get handlers make, recorded."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, str, int | None]] = []

    async def put(self, key: str, value: str, expect_revision: int | None = None) -> int:
        if expect_revision is not None and expect_revision != len(self.puts):
            raise ConflictError(f"{key} is at revision {len(self.puts)}")
        self.puts.append((key, value, expect_revision))
        return len(self.puts)

    async def get(self, key: str) -> None:
        del key


class Rpc:
    def register(self, method: str, handler: Any) -> None:
        del method, handler


def cluster_api(orders: NodeOrders) -> ClusterApi:
    config = load_config(Path(__file__).resolve().parents[2] / "haos/examples/small-2n.toml")
    return ClusterApi(
        config.nodes[0],
        Topology(config),
        cast(RpcService, Rpc()),
        lambda: None,
        orders,
        lambda: cast(AvailabilityService | None, None),
    )


@asynccontextmanager
async def serving(tmp_path: Path, daemon: SimpleNamespace) -> AsyncIterator[AsyncControlClient]:
    path = str(tmp_path / "control.sock")
    server = await ControlServer(daemon).serve(path)  # type: ignore[arg-type]
    async with server:
        yield AsyncControlClient(path, timeout=5.0)


async def raw(path: str, line: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(line)
        await writer.drain()
        answer: dict[str, Any] = json.loads(await reader.readline())
        assert await reader.readline() == b""  # and the connection closes
    finally:
        writer.close()
    return answer


def test_a_bad_request_is_refused_naming_the_field_nothing_applied_and_the_server_serves_on(
    tmp_path: Path,
) -> None:
    repository, orders = Repository(), NodeOrders("n1")
    daemon = SimpleNamespace(ccr=repository, api=cluster_api(orders))

    async def go() -> None:
        async with serving(tmp_path, daemon) as client:
            for line, words in [
                (b'{"op": "put", "key": "/k", "value": "v", "expect": "0"}\n', "put: expect"),
                (b'{"op": "put", "key": "/k", "value": "v", "force": true}\n', "unknown field"),
                (b'{"op": "put", "value": "v"}\n', "put: key must be a non-empty string"),
                (b'{"op": "nope"}\n', "unknown op 'nope'"),
                (b'{"op": "running", "component": "c", "state": "primary"}\n', "at must be"),
            ]:
                answer = await raw(client.path, line)
                assert answer["ok"] is False and answer["error"] == "usage", answer
                assert words in answer["message"], answer
            # refused by the handler itself (a state no component runs as): nothing applied
            with pytest.raises(ControlError, match="running: bad state 'dancing'"):
                await client.request("running", component="c", state="dancing", at=1.0)
            assert repository.puts == [] and orders.running == {}
            # the server serves on: a good request of each kind is carried out
            assert (await client.request("put", key="/k", value="v"))["revision"] == 1
            with pytest.raises(ControlError) as lost:
                await client.request("put", key="/k", value="w", expect=0)
            assert lost.value.error == "conflict"  # the handler's error code travels
            await client.request("running", component="c", state="primary", at=1.0)
            assert repository.puts == [("/k", "v", None)]
            assert orders.running["c"].state == "primary"
            assert (await client.request("history", limit=3)) == {"ok": True, "history": []}

    asyncio.run(go())


def test_a_stream_row_answers_ok_then_writes_one_object_per_line(tmp_path: Path) -> None:
    subscribers: list[asyncio.Queue[dict[str, Any]]] = []
    daemon = SimpleNamespace(subscribers=subscribers)

    async def go() -> None:
        async with serving(tmp_path, daemon) as client:
            stream = cast(AsyncGenerator[dict[str, Any], None], client.stream("events"))
            first = asyncio.ensure_future(anext(stream))
            async with asyncio.timeout(5):
                while not subscribers:
                    await asyncio.sleep(0.01)
            subscribers[0].put_nowait({"notice": "joined"})
            subscribers[0].put_nowait({"notice": "left"})
            assert await first == {"notice": "joined"}
            assert await anext(stream) == {"notice": "left"}
            await stream.aclose()

    asyncio.run(go())


def test_a_usage_error_of_a_stream_is_answered_before_it_starts(tmp_path: Path) -> None:
    async def go() -> None:
        async with serving(tmp_path, SimpleNamespace(subscribers=[])) as client:
            with pytest.raises(ControlError) as refused:
                async for _ in client.stream("events", follow="yes"):
                    pass
            assert refused.value.error == UsageError.code
            assert "events: follow must be true or false" in str(refused.value)

    asyncio.run(go())
