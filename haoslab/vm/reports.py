"""The guest's verdicts: ``haos-report {json}`` lines on its second serial port.

QEMU connects the port (``-serial chardev:report``, a unix socket client) to a listening
socket of ours. One thread per guest reads lines, keeps every report and appends the raw text
to a log file; tests wait for the report they expect with a deadline, never for a guessed time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haos.errors import UnavailableError

PREFIX = "haos-report "
Report = dict[str, Any]


class ReportPort:
    """Listens on ``path``; collects the reports of the guest connected to it."""

    def __init__(
        self,
        path: Path,
        log: Path,
        idle: Callable[[], object] | None = None,
        idle_every: float = 5.0,
    ) -> None:
        """``idle``: called by a waiting :meth:`wait` every ``idle_every`` seconds, on the
        waiting thread, while no report it waits for came (e.g. to look after the guest)."""
        self.path = path
        self.log = log
        self._idle = idle
        self._idle_every = idle_every
        self.reports: list[Report] = []
        self._cond = threading.Condition()
        self._closed = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server.bind(str(path))
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, name=f"reports {path}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        with self.log.open("a", encoding="utf-8") as log:
            while not self._closed:
                try:
                    conn, _ = self._server.accept()
                except OSError:
                    return
                with conn:
                    self._read(conn, log)

    def _read(self, conn: socket.socket, log: Any) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode("utf-8", errors="replace").strip("\r\x00 ")
                log.write(line + "\n")
                log.flush()
                self._take(line)

    def _take(self, line: str) -> None:
        start = line.find(PREFIX)
        if start < 0:
            return
        try:
            report = json.loads(line[start + len(PREFIX) :])
        except json.JSONDecodeError:
            return
        if not isinstance(report, dict):
            return
        report["received"] = time.time()  # host clock, for timings measured on the host
        with self._cond:
            self.reports.append(report)
            self._cond.notify_all()

    def mark(self) -> int:
        """The number of reports so far: pass it to :meth:`wait` to see only newer ones."""
        with self._cond:
            return len(self.reports)

    def wait(
        self, match: Callable[[Report], bool], timeout: float, since: int = 0, what: str = ""
    ) -> Report:
        """The first report from index ``since`` on that ``match``es; UnavailableError on time."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            with self._cond:
                for report in self.reports[seen:]:
                    if match(report):
                        return report
                seen = len(self.reports)
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    got = [r.get("event") for r in self.reports[since:]]
                    raise UnavailableError(
                        f"no report {what or 'matching'} within {timeout:.0f} s "
                        f"(got since then: {got})"
                    )
                self._cond.wait(left if self._idle is None else min(left, self._idle_every))
            if self._idle is not None:
                self._idle()

    def wait_event(self, event: str, timeout: float, since: int = 0) -> Report:
        return self.wait(lambda r: r.get("event") == event, timeout, since, what=repr(event))
