"""haosctl at its boundaries: a node daemon's answers that are not what the protocol says,
timeouts that are no durations, ``--json`` errors, and a reader that goes away early."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haos.cli.main import EXIT_BROKEN_PIPE, main

pytestmark = pytest.mark.timeout(60)

STATUS = {"ok": True, "quorate": True, "master": 1, "vice_master": None, "node_names": {"1": "n1"}}
CRIM = {
    "ok": True,
    "seq": 3,
    "master": "n1",
    "hosts": {"s/n1/app": "n1"},
    "groups": {"app": {"redundancy": "2N", "members": ["s/n1/app"]}},
    "instances": {"si": {"group": "app", "primary": ["s/n1/app"], "secondary": [], "served": True}},
    "crim": {
        "nodes": {"n1": {"member": True, "admin": "unlocked"}},
        "components": {"s/n1/app": {"state": "primary", "health": "ok", "admin": "unlocked"}},
    },
    "running": {},
}
HISTORY = {"ok": True, "history": [{"seq": 1, "at": 1.5, "reason": "placed"}]}
OPERATOR = {"ok": True, "state": "done", "reason": "locked n2", "refused": False}


class FakeDaemon:
    """A control socket that answers each op with the line set for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, bytes] = {
            op: json.dumps(a).encode() + b"\n"
            for op, a in {
                "status": STATUS,
                "crim": CRIM,
                "history": HISTORY,
                "operator": OPERATOR,
            }.items()
        }
        self.requests: list[dict[str, Any]] = []
        daemon = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline())
                daemon.requests.append(request)
                self.wfile.write(daemon.answers[request["op"]])

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def set(self, op: str, answer: object) -> None:
        self.answers[op] = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.answers[op] += b"\n"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "control.sock")
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def haosctl(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_good_answers_are_shown(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    control = ["--control", str(daemon.path)]
    assert haosctl(["status", *control], capsys)[0] == 0
    status, out, _ = haosctl(["history", *control], capsys)
    assert status == 0 and "#1     placed" in out
    status, out, _ = haosctl(["lock", "n2", *control], capsys)
    assert status == 0 and "lock n2: done: locked n2" in out


DEEP = b"[" * 100_000 + b"]" * 100_000
BAD_ANSWERS: list[tuple[str, list[str], object, str]] = [
    ("status", ["status"], [1, 2], "not a JSON object but an array"),
    ("status", ["status"], DEEP, "nested deeper than"),
    ("status", ["status"], b'{"ok": true, "quorate": true, "master": 1e400}', "master: 1e400"),
    ("status", ["status"], b"this is not json", "not JSON"),
    ("status", ["status"], {"quorate": True}, "without ok"),
    ("status", ["status"], {"ok": False}, "error without its code and message"),
    ("status", ["status"], {**STATUS, "quorate": None}, "quorate must be true or false"),
    ("status", ["status"], {"ok": True, "master": 1}, "quorate must be true or false; it is miss"),
    ("status", ["status"], {**STATUS, "master": "one"}, "master must be a whole number"),
    ("status", ["status"], {**STATUS, "node_names": [1]}, "node_names must be an object"),
    ("crim", ["status"], {**CRIM, "crim": []}, "crim answer: crim must be an object"),
    ("crim", ["status"], {**CRIM, "seq": [3]}, "crim answer: seq must be a whole number"),
    ("crim", ["status"], {**CRIM, "crim": {"nodes": {"n1": [1]}}}, "wrong type"),
    ("crim", ["status"], {**CRIM, "crim": {"nodes": {}}}, "lacks the field 'components'"),
    ("crim", ["status"], {**CRIM, "instances": {"si": {"group": "x"}}}, "lacks the field"),
    ("history", ["history"], {"ok": True}, "history answer has no list"),
    ("history", ["history"], {"ok": True, "history": [[1]]}, "history entry is not an object"),
    ("history", ["history"], {"ok": True, "history": [{"seq": 1}]}, "at must be a number"),
    ("history", ["history"], {"ok": True, "history": [{"seq": 1, "at": 2.0}]}, "lacks the field"),
    ("history", ["history"], {"ok": True, "history": [{"seq": "1", "at": 2.0}]}, "seq must be"),
    ("operator", ["lock", "n2"], {"ok": True, "reason": "x"}, "refused must be true or false"),
    ("operator", ["lock", "n2"], {**OPERATOR, "reason": {"a": 1}}, "reason must be a string"),
]


@pytest.mark.parametrize(("op", "argv", "answer", "words"), BAD_ANSWERS)
def test_an_answer_that_breaks_the_protocol_is_a_clear_error_without_a_traceback(
    op: str,
    argv: list[str],
    answer: object,
    words: str,
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon.set(op, answer)
    status, out, err = haosctl([*argv, "--control", str(daemon.path)], capsys)
    assert status == 2 and out == ""
    assert err.startswith("haosctl: bad-answer error: ") and words in err, err
    assert len(err) < 500

    if (op == "crim" and "must be" not in words) or words == "lacks the field":
        return  # deeper than --json reads: it prints the answers as they came
    status, out, err = haosctl([*argv, "--control", str(daemon.path), "--json"], capsys)
    assert status == 2 and err == ""
    error = json.loads(out)
    assert error["error"] == "bad-answer" and words in error["message"]


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "1e400", "0", "-1", "3601", "abc", "1x"])
def test_a_timeout_that_is_no_sane_duration_is_a_usage_error(
    timeout: str, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["status", "--control", str(daemon.path), f"--timeout={timeout}"]
    status, out, err = haosctl(argv, capsys)
    assert status == 2 and out == ""
    assert "argument --timeout: --timeout" in err and "usage: haosctl status" in err
    status, out, err = haosctl([*argv, "--json"], capsys)
    assert status == 2 and err == ""
    assert json.loads(out)["error"] == "usage"
    assert daemon.requests == []


def test_timeouts_in_seconds_or_with_a_unit_are_taken(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    for timeout in ("0.5", "500ms", "1m", "3600"):
        argv = ["history", "--control", str(daemon.path), "--timeout", timeout]
        assert haosctl(argv, capsys)[0] == 0


@pytest.mark.parametrize("limit", ["0", "-1", "1e400", "1000001", "x"])
def test_a_history_limit_out_of_range_is_a_usage_error(
    limit: str, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = haosctl(["history", "--control", str(daemon.path), "--limit", limit], capsys)
    assert status == 2 and "--limit must be" in err
    assert daemon.requests == []


def test_with_json_every_error_is_a_json_object_with_its_stable_code(
    daemon: FakeDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.set("operator", {"ok": False, "error": "conflict", "message": "lost the race"})
    status, out, err = haosctl(["lock", "n2", "--control", str(daemon.path), "--json"], capsys)
    assert status == 2 and err == ""
    assert json.loads(out) == {"error": "conflict", "message": "conflict: lost the race"}

    gone = str(tmp_path / "none.sock")
    status, out, err = haosctl(["status", "--control", gone, "--json"], capsys)
    error = json.loads(out)
    assert status == 2 and error["error"] == "unavailable" and gone in error["message"]

    status, out, err = haosctl(["lock", "--json"], capsys)  # the target is missing
    assert status == 2 and err == ""
    assert json.loads(out) == {
        "error": "usage",
        "message": "the following arguments are required: target",
    }

    status, out, err = haosctl(["simulate", "--example", "no-such", "--json"], capsys)
    assert status == 2 and json.loads(out)["error"] == "usage"


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `haosctl simulate | head -1` once head has exited
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "haos.cli.main", "simulate", "--faults", "50"],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == EXIT_BROKEN_PIPE
