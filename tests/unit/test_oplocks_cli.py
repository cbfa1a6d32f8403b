"""``haosctl lock-ops``: what it asks the node daemon, how it shows the locks, and how an
operator command refused by a lock ends (the error ``locked``, exit status 2)."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haos.cli.main import main

pytestmark = pytest.mark.timeout(60)

LOCK = {
    "subtree": "shelf1/slot1",
    "node": "n1",
    "operation": "maintenance-0a1b",
    "kind": "maintenance",
    "reason": "fan tray swap",
    "taken": 1_800_000_000.0,
    "expires": 1_800_003_600.0,
}
LOCKED = {
    "ok": False,
    "error": "locked",
    "message": "shelf1/slot1/node/app: shelf1/slot1 is locked by n1 (maintenance, ...)",
}


class FakeDaemon:
    """A control socket answering each op with the object set for it; keeps the requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, dict[str, Any]] = {
            "locks": {"ok": True, "locks": [LOCK]},
            "lock_take": {"ok": True, "lock": LOCK},
            "lock_release": {"ok": True, "lock": LOCK},
            "lock_break": {"ok": True, "lock": LOCK},
            "operator": LOCKED,
        }
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline())
                fake.requests.append(request)
                self.wfile.write(json.dumps(fake.answers[request["op"]]).encode() + b"\n")

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "control.sock")
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def haosctl(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    status = main([*argv, "--control", str(daemon.path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_list_shows_each_lock_its_holder_and_reason(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = haosctl(daemon, capsys, "lock-ops", "list")
    assert status == 0
    assert "shelf1/slot1" in out and "maintenance-0a1b on n1" in out and "fan tray swap" in out
    status, out, _ = haosctl(daemon, capsys, "lock-ops", "list", "--json")
    assert status == 0 and json.loads(out) == [LOCK]
    daemon.answers["locks"] = {"ok": True, "locks": []}
    assert "no operation locks are held" in haosctl(daemon, capsys, "lock-ops", "list")[1]


def test_take_release_and_break_ask_for_the_subtree_named(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = haosctl(
        daemon,
        capsys,
        "lock-ops",
        "take",
        "shelf1/slot1",
        "--reason",
        "fan tray swap",
        "--for",
        "2h",
    )
    assert status == 0 and out.startswith("locked shelf1/slot1: maintenance maintenance-0a1b")
    assert haosctl(daemon, capsys, "lock-ops", "release", "shelf1/slot1")[1].startswith("released")
    assert haosctl(daemon, capsys, "lock-ops", "break", "shelf1/slot1")[1].startswith("broken")
    assert daemon.requests == [
        {
            "op": "lock_take",
            "subtree": "shelf1/slot1",
            "reason": "fan tray swap",
            "duration": 7200.0,
        },
        {"op": "lock_release", "subtree": "shelf1/slot1"},
        {"op": "lock_break", "subtree": "shelf1/slot1"},
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["take", "shelf1", "--reason", "x", "--for", "forever"], "--for"),
        (["take", "shelf1", "--reason", "x", "--for", "0.5"], "--for"),
        (["take", "shelf1"], "--reason"),
        (["steal", "shelf1"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_asked(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    status, _, err = haosctl(daemon, capsys, "lock-ops", *argv)
    assert status == 2 and words in err
    assert daemon.requests == []


def test_a_command_refused_by_a_lock_ends_with_the_error_locked_naming_the_holder(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = haosctl(daemon, capsys, "switchover", "app-si", "--json")
    assert status == 2
    answer = json.loads(out)
    assert answer["error"] == "locked" and "locked by n1" in answer["message"]
    status, _, err = haosctl(daemon, capsys, "switchover", "app-si")
    assert status == 2 and err.startswith("haosctl: locked error:") and "locked by n1" in err
