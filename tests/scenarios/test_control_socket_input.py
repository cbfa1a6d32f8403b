"""A real node daemon's control socket: requests up to the line limit reach the services, and
every request it cannot use is answered with a usage error naming what is wrong, nothing of it
applied, while the daemon goes on serving everyone else."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Callable, Iterator

import pytest

from haos.cluster.dss.ccr.model import MAX_VALUE_BYTES
from haos.fields import Op
from haos.jsonlines import LineTooLong, SocketLines
from haos.limits import MAX_SOCKET_LINE
from haos.services.control import OPS, ControlError
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def daemons() -> Iterator[Daemons]:
    with Cluster(ClusterSpec(nodes=1)) as cluster, Daemons(cluster) as d:
        yield d


def raw(d: Daemons, line: bytes) -> tuple[dict[str, object], bytes]:
    """Send ``line`` on a connection of its own: the answer, and what followed it (the
    daemon closes a one-request connection, so nothing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(d.dir / "n1.sock"))
        # over the limit, the daemon answers and closes before the whole line is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(line)
        lines = SocketLines(sock)
        answer = lines.read()
        assert answer is not None, "the daemon closed the connection without an answer"
        rest = lines.read()
    return json.loads(answer), rest or b""


def test_a_value_of_the_repositorys_limit_travels_and_a_larger_one_gets_its_error(
    daemons: Daemons,
) -> None:
    control = daemons.control(1)
    largest = "v" * MAX_VALUE_BYTES  # 256 KiB: four times asyncio's default line limit
    revision = control.request("put", key="/big/largest", value=largest)["revision"]
    got = control.request("get", key="/big/largest")
    assert got["value"] == largest and got["revision"] == revision
    with pytest.raises(ControlError) as refused:
        control.request("put", key="/big/over", value=largest + "v")
    assert refused.value.error == "usage"
    assert f"value of {MAX_VALUE_BYTES + 1} bytes exceeds {MAX_VALUE_BYTES}" in str(refused.value)
    assert control.request("get", key="/big/over")["value"] is None


def test_a_checkpoint_write_past_64_kib_reaches_the_checkpoint(daemons: Daemons) -> None:
    control = daemons.control(1)
    control.request("ckpt_open", name="big", role="active")
    data = base64.b64encode(bytes(range(256)) * 512).decode()  # 128 KiB, 171 KiB as text
    control.request("ckpt_write", name="big", section="s", data=data, sync=True)
    assert control.request("ckpt_read", name="big", section="s")["data"] == data


DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"1" + b"0" * 400


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"[1, 2]", "not a JSON object but an array"),
        (b'"status"', "not a JSON object but a string"),
        (b"not json", "not JSON"),
        (b'{"op": 5}', "op must be a string naming the operation, not 5"),
        (b'{"op": ["status"]}', "op must be a string naming the operation"),
        (b"{}", "op must be a string naming the operation, not None"),
        (b'{"op": "frobnicate"}', "unknown op 'frobnicate'"),
        (b'{"op": "history", "limit": 1e400}', "limit: 1e400 is not a finite number"),
        (b'{"op": "history", "limit": -1}', "history: limit must be a whole number in 1..1000000"),
        (b'{"op": "history", "limit": 0}', "history: limit must be a whole number in 1..1000000"),
        (b'{"op": "history", "limit": 2.5}', "history: limit must be a whole number"),
        (b'{"op": "history", "limit": "5"}', "history: limit must be a whole number"),
        (b'{"op": "history", "limit": ' + HUGE + b"}", "limit: 1000"),
        (b'{"op": "history", "limit": NaN}', "limit: NaN is not a finite number"),
        (b'{"op": "status", "x": ' + DEEP + b"}", "nested deeper than"),
        (DEEP, "nested deeper than"),
        (b'{"op": "put", "key": "/bad", "value": 5}', "put: value must be a string, not 5"),
        (b'{"op": "put", "key": "/bad", "value": "v", "expect": -1}', "put: expect must be"),
        (b'{"op": "put", "key": "/bad", "value": "v", "expect": ' + HUGE + b"}", "expect: 1000"),
        (b'{"op": "put", "value": "v"}', "put: key must be a non-empty string; it is missing"),
        (b'{"op": "watch", "prefix": 7}', "watch: prefix must be a non-empty string, not 7"),
        (b'{"op": "ckpt_open", "name": "c", "persistent": "yes"}', "persistent must be true or"),
        (
            b'{"op": "ckpt_open", "name": "c", "role": "boss"}',
            "role must be one of active, standby",
        ),
        (b'{"op": "operator", "action": "lock", "target": "n1", "timeout": Infinity}', "timeout:"),
        (b'{"op": "operator", "action": "lock", "target": "n1", "timeout": 1e9}', "timeout must"),
        (b'{"op": "report", "report": [1]}', "report: report must be an object"),
        (b'{"op": "running", "component": "c", "state": "primary", "at": "now"}', "at must be a"),
        (b'{"op": "event", "kind": 3, "component": "c"}', "event: kind must be a non-empty"),
    ],
)
def test_a_request_it_cannot_use_gets_a_usage_error_naming_the_field_and_nothing_is_applied(
    line: bytes, words: str, daemons: Daemons
) -> None:
    answer, rest = raw(daemons, line + b"\n")
    assert answer["ok"] is False and answer["error"] == "usage", answer
    assert words in str(answer["message"]), answer
    assert rest == b""  # and that connection ends
    control = daemons.control(1)
    assert control.request("get", key="/bad")["value"] is None  # nothing applied
    assert control.request("status")["node"] == "n1"  # the daemon serves on
    assert "c" not in control.request("desired")["roles"]


def test_a_line_over_the_limit_is_answered_naming_the_limit_and_the_daemon_serves_on(
    daemons: Daemons,
) -> None:
    line = b'{"op": "put", "key": "/bad", "value": "' + b"v" * MAX_SOCKET_LINE + b'"}\n'
    answer, rest = raw(daemons, line)
    assert answer["ok"] is False and answer["error"] == "line-too-long"
    assert f"limit of {MAX_SOCKET_LINE} bytes" in str(answer["message"])
    assert rest == b""
    control = daemons.control(1)
    assert control.request("get", key="/bad")["value"] is None
    assert control.request("status")["node"] == "n1"
    with pytest.raises(LineTooLong, match="MAX_SOCKET_LINE"):  # the client does not send it
        control.request("put", key="/bad", value="v" * MAX_SOCKET_LINE)


def _sample(check: Callable[[object], object]) -> object:
    for value in ("/x", "active", 1, 0.5, 60, True, {}):
        try:
            check(value)
        except ValueError:
            continue
        return value
    raise AssertionError("no sample fits")


FIELDS = [(op, f.name) for op in OPS.ops.values() for f in op.fields]


@pytest.mark.parametrize(("op", "name"), FIELDS, ids=[f"{o.name}-{n}" for o, n in FIELDS])
def test_every_field_of_every_op_is_checked_before_the_op_runs(
    op: Op, name: str, daemons: Daemons
) -> None:
    request = {"op": op.name, **{f.name: _sample(f.check) for f in op.fields}, name: [[1]]}
    answer, _ = raw(daemons, json.dumps(request).encode() + b"\n")
    assert answer["ok"] is False and answer["error"] == "usage", answer
    assert f"{op.name}: {name} must be" in str(answer["message"]), answer
    control = daemons.control(1)
    assert control.request("get", key="/x")["value"] is None  # a put of /x did not run
    assert control.request("status")["node"] == "n1"
