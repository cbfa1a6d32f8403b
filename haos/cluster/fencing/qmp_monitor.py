"""A QEMU guest's QMP monitor as a fence device: connect, ask, command, all under deadlines.

The monitor is reached over a unix socket (``-qmp unix:PATH,server=on,wait=off``) or over TCP
(``-qmp tcp:HOST:PORT,server=on,wait=off``, or a forwarder in front of a unix socket). A
QEMU monitor serves one client at a time: a guest fenced this way needs a monitor of its own
for fencing, not the one its operator keeps open.

**A guest that is gone.** A unix socket that does not exist, or that nobody listens on
(``ECONNREFUSED``: its QEMU exited, or was killed and left the file), means the guest's QEMU
is not running: the guest is off (:class:`Absent`). Over TCP a refused connection says
nothing about the guest (the forwarder may be down), so it is an error; a forwarder that
knows the guest's socket is gone says so instead of QMP's greeting with one JSON line
``{"absent": "<why>"}`` (see :data:`ABSENT_KEY`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from haos.cluster.fencing.types import FenceError

ABSENT_KEY = "absent"  # a forwarder's first line when the guest's QEMU is gone
_MAX_LINE = 1 << 20


class Absent(Exception):
    """The guest's QEMU is not running: nobody serves its monitor."""


class Closed(FenceError):
    """QEMU closed the monitor (as it does when it exits)."""


class Refused(FenceError):
    """Nobody listens at a TCP monitor's address: by itself no proof that QEMU is gone."""


@dataclass(frozen=True)
class Endpoint:
    """Where a guest's monitor listens: a unix socket ``path``, or TCP ``host``:``port``."""

    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return self.path if self.path else f"{self.host}:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        """A connected socket; :class:`Absent` if the guest's QEMU is gone (unix only),
        FenceError if the monitor cannot be reached."""
        if self.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(timeout, 0.001))
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                raise Absent(f"no QEMU listens on {self.path} ({e.strerror})") from e
            except OSError as e:
                sock.close()
                raise FenceError(f"cannot connect to {self.path}: {e}") from e
            return sock
        try:
            return socket.create_connection((self.host, self.port), timeout=max(timeout, 0.001))
        except ConnectionRefusedError as e:
            raise Refused(f"cannot connect to {self}: {e.strerror}") from e
        except OSError as e:
            raise FenceError(f"cannot connect to {self}: {e}") from e


class Monitor:
    """One QMP session: greeting read and capabilities negotiated before it is returned.

    Commands are answered in order; events that arrive meanwhile are kept for
    :meth:`wait_event`. Every read takes an absolute deadline (``time.monotonic()``).
    """

    def __init__(self, endpoint: Endpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self.events: list[dict[str, Any]] = []
        self._sock = sock
        self._buf = b""

    @classmethod
    def open(cls, endpoint: Endpoint, deadline: float) -> Monitor:
        """Connect and negotiate; Absent or FenceError (see the module docstring)."""
        sock = endpoint.connect(deadline - time.monotonic())
        monitor = cls(endpoint, sock)
        try:
            greeting = monitor.read(deadline)
            if ABSENT_KEY in greeting:
                raise Absent(f"{endpoint}: {greeting[ABSENT_KEY]}")
            if "QMP" not in greeting:
                raise FenceError(f"{endpoint}: not a QMP greeting: {str(greeting)[:200]}")
            monitor.execute("qmp_capabilities", deadline)
        except BaseException:
            monitor.close()
            raise
        return monitor

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, deadline: float) -> dict[str, Any]:
        """The next message; FenceError on timeout, on a closed monitor, on garbage."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FenceError(f"{self.endpoint}: no answer from QEMU in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError as e:
                raise Closed(f"{self.endpoint}: QEMU closed the monitor ({e.strerror})") from e
            except OSError as e:
                raise FenceError(f"{self.endpoint}: {e}") from e
            if not chunk:
                raise Closed(f"{self.endpoint}: QEMU closed the monitor")
            self._buf += chunk
            if len(self._buf) > _MAX_LINE:
                raise FenceError(f"{self.endpoint}: a message longer than {_MAX_LINE} bytes")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise FenceError(f"{self.endpoint}: not JSON: {line[:200]!r}") from e
        if not isinstance(msg, dict):
            raise FenceError(f"{self.endpoint}: not a QMP message: {line[:200]!r}")
        return msg

    def execute(self, command: str, deadline: float, **arguments: Any) -> Any:
        """Run ``command``; its ``return`` value. FenceError if QEMU refuses it."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            raise Closed(f"{self.endpoint}: {e}") from e
        while True:
            msg = self.read(deadline)
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                err = msg["error"]
                raise FenceError(f"{command}: {err.get('class')}: {err.get('desc')}")
            elif "return" in msg:
                return msg["return"]

    def wait_event(self, name: str, deadline: float) -> dict[str, Any]:
        """The first event ``name``, kept or new."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("event") == name:
                    return self.events.pop(i)
            msg = self.read(deadline)
            if "event" in msg:
                self.events.append(msg)

    def wait_closed(self, deadline: float) -> None:
        """Until QEMU closes the monitor (it does so as it exits); FenceError at the deadline."""
        with contextlib.suppress(Closed):
            while True:
                self.read(deadline)

    def running(self, deadline: float) -> bool:
        """Whether the guest's vCPUs run (``query-status``)."""
        status = self.execute("query-status", deadline)
        return bool(isinstance(status, dict) and status.get("running"))
