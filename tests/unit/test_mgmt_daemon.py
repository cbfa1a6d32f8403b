"""haos-mgmtd as a process: its composition root reads cluster.toml and the token file,
serves HTTP on a real loopback port from a control socket that answers like a cluster
daemon, tells systemd READY=1 and WATCHDOG=1 over a real NOTIFY_SOCKET, and ends on
SIGTERM; a token file it cannot read stops it with exit status 2 naming the key."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _mgmt import recorded

from haos.errors import UnavailableError
from haos.mgmt.source import ControlSource
from haos.services.control import AsyncControlClient, ControlClient, ControlError

pytestmark = pytest.mark.timeout(60)

DEADLINE = 20.0  # s: python start and uvicorn's import on a busy machine


class ControlSocket:
    """A control socket that answers each request op with the recorded answer."""

    def __init__(self, path: Path, answers: dict[str, Any]) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline())
                outer.requests.append(request)
                answer = answers.get(request["op"], {"ok": False, "error": "usage", "message": "?"})
                for line in answer if isinstance(answer, list) else [answer]:  # a stream's
                    self.wfile.write(json.dumps(line).encode() + b"\n")

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp: Path, port: int, token_file: Path) -> Path:
    path = tmp / "cluster.toml"
    path.write_text(
        '[cluster]\nname = "demo"\n\n[[components]]\nname = "n1"\nclass = "node"\n\n'
        '[[nodes]]\nname = "n1"\nnode_id = 1\ncomponent = "n1"\n\n'
        f'[management]\nlisten = "127.0.0.1"\nport = {port}\ntoken_files = ["{token_file}"]\n'
    )
    return path


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(DEADLINE)
    yield sock, path
    sock.close()


def wait_message(sock: socket.socket, word: str) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        seen += sock.recv(4096).decode().splitlines()
        if word in seen:
            return seen
    raise AssertionError(f"no {word} in {seen}")


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return int(r.status), bytes(r.read())


def test_the_daemon_serves_the_cluster_and_tells_systemd_it_is_ready_and_alive(
    tmp_path: Path, notify: tuple[socket.socket, Path]
) -> None:
    r = recorded()
    answers = {op: r[op] for op in ("status", "crim", "availability")}
    control = ControlSocket(tmp_path / "control.sock", answers)
    token = tmp_path / "noc.token"
    token.write_text("lab-token-1\n")
    port = free_port()
    sock, notify_path = notify
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "haos.mgmt", "--config", str(config(tmp_path, port, token))]
    argv += ["--control", str(tmp_path / "control.sock")]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = wait_message(sock, "READY=1")
        assert any(m.startswith("STATUS=serving http://127.0.0.1:") for m in seen), seen
        status, body = get(f"http://127.0.0.1:{port}/instances")
        assert status == 200
        [si] = json.loads(body)
        assert si["primaries"] == r["crim"]["instances"]["counter-si"]["primary"]
        assert [q["op"] for q in control.requests[:3]] == ["status", "crim", "availability"]
        wait_message(sock, "WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=DEADLINE)
        # uvicorn re-raises the SIGTERM it handled once it has stopped: a clean stop to systemd
        assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    finally:
        proc.kill()
        proc.wait()
        control.close()


def test_a_token_file_it_cannot_read_stops_it_with_status_2_naming_the_key(tmp_path: Path) -> None:
    path = config(tmp_path, free_port(), tmp_path / "missing.token")
    done = subprocess.run(
        [sys.executable, "-m", "haos.mgmt", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "management.token_files[0]: cannot read" in done.stderr


def test_the_control_source_sends_what_haosctl_sends_and_returns_the_answers(
    tmp_path: Path,
) -> None:
    r = recorded()
    operator = {"ok": True, "refused": False, "reason": "switched over"}
    answers = {"history": r["history"], "events": r["events"], "operator": operator}
    path = tmp_path / "control.sock"
    control = ControlSocket(path, answers)
    source = ControlSource(AsyncControlClient(path), ControlClient(path))

    async def go() -> tuple[list[Any], list[Any], list[Any], dict[str, Any]]:
        history = await source.history(20)
        kept = await source.kept_events(None)
        followed: list[Any] = []
        with pytest.raises(UnavailableError, match="closed the stream"):
            async for item in source.follow_events(12.5):
                followed.append(item)
        done = await source.operator("switchover", "counter-si", 3.0)
        return history, kept, followed, done

    try:
        history, kept, followed, done = asyncio.run(go())
        assert history == r["history"]["history"]
        assert kept == followed == r["events"][1:]
        assert done == operator
        assert control.requests == [
            {"op": "history", "limit": 20},
            {"op": "events", "cluster": True, "since": None, "follow": False},
            {"op": "events", "cluster": True, "since": 12.5, "follow": True},
            {"op": "operator", "action": "switchover", "target": "counter-si", "timeout": 3.0},
        ]
        answers["events"] = [{"ok": False, "error": "unavailable", "message": "not yet"}]
        with pytest.raises(ControlError, match="not yet"):
            asyncio.run(source.kept_events(None))
    finally:
        control.close()
