"""Run commands in a guest through the QEMU guest agent (qemu-guest-agent in the image).

QEMU exposes the agent's virtio-serial port as a unix socket on the host
(``-chardev socket,server=on``). Each call opens a connection, resynchronises with
``guest-sync-delimited`` (answers to requests of an earlier, aborted session are skipped up to
the 0xFF delimiter), then runs one command. While the guest boots the agent does not answer;
:func:`wait_agent` waits for it with a deadline.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haos.errors import UnavailableError
from haoslab.lifecycle import Closing


@dataclass(frozen=True)
class ExecResult:
    exitcode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exitcode == 0


class Agent(Closing):
    """One connection to a guest agent."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(str(path))
            self._sync(timeout)
        except (OSError, UnavailableError) as e:
            self._sock.close()
            raise UnavailableError(f"guest agent at {path} not answering: {e}") from e

    def close(self) -> None:
        self._sock.close()

    def _send(self, request: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(request).encode() + b"\n")

    def _recv(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise UnavailableError(f"{self.path}: no answer in time")
        self._sock.settimeout(left)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            return
        if not chunk:
            raise UnavailableError(f"{self.path}: connection closed")
        self._buf += chunk

    def _sync(self, timeout: float) -> None:
        token = random.randrange(1, 2**31)
        # A lone 0xFF makes the agent drop any half-read request of an earlier session.
        self._sock.sendall(b"\xff")
        self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        deadline = time.monotonic() + timeout
        while True:
            if b"\xff" in self._buf:
                self._buf = self._buf.split(b"\xff")[-1]
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("return") == token:
                        return
            self._recv(deadline)

    def call(self, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._send(request)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            self._recv(deadline)
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise UnavailableError(f"guest agent: {command}: {msg['error'].get('desc')}")
        return msg.get("return")

    def exec(self, argv: list[str], timeout: float = 120.0, stdin: bytes = b"") -> ExecResult:
        """Run ``argv`` in the guest to completion (stdout and stderr captured)."""
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            args["input-data"] = base64.b64encode(stdin).decode()
        pid = self.call("guest-exec", **args)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", pid=pid)
            if status.get("exited"):
                return ExecResult(
                    int(status.get("exitcode", -1)),
                    _b64(status.get("out-data")),
                    _b64(status.get("err-data")),
                )
            if time.monotonic() > deadline:
                raise UnavailableError(f"guest command {argv} still running after {timeout} s")
            time.sleep(0.2)  # the agent has no completion event: poll with a deadline


def _b64(data: str | None) -> str:
    return base64.b64decode(data).decode("utf-8", errors="replace") if data else ""


def wait_agent(path: Path, timeout: float) -> Agent:
    """An :class:`Agent` as soon as the guest's agent answers, or UnavailableError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return Agent(path, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        except UnavailableError as e:
            last = e
            time.sleep(1.0)
    raise UnavailableError(f"guest agent at {path} did not answer within {timeout} s: {last}")
