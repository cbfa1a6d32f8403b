"""A client of the demo counter that follows its primary, as a user of the service would.

    python3 -m haoslab.demo.probe --targets 10.1.0.1:7070,10.1.0.2:7070 [--interval 0.002]
        [--duration 60]

It sends ``INCR`` to whichever target answers, one request at a time, and prints one JSON line
per answer: ``{"t": <time.monotonic()>, "target": "host:port", "value": N}``, and
``{"t": …, "lost": "host:port", "why": …}`` when the connection it used fails. When the
current target fails it tries every target in turn until one answers. ``t`` is the system's
monotonic clock, which every process on the machine shares, so whoever started the probe
can compare it with the time it injected a fault. It ends after ``--duration`` seconds, or
when its standard input closes.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from collections.abc import Sequence


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"bad target {text!r}: expected host:port")
    return host, int(port)


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Probe:
    def __init__(self, targets: Sequence[tuple[str, int]], timeout: float) -> None:
        self.targets = list(targets)
        self.timeout = timeout
        self.current: tuple[str, int] | None = None
        self.sock: socket.socket | None = None
        self.buf = b""

    def name(self, t: tuple[str, int]) -> str:
        return f"{t[0]}:{t[1]}"

    def once(self) -> None:
        if self.sock is None and not self._connect():
            return
        assert self.sock is not None and self.current is not None
        try:
            self.sock.sendall(b"INCR\n")
            line = self._line()
            value = int(line)
        except (OSError, ValueError) as e:
            emit({"t": time.monotonic(), "lost": self.name(self.current), "why": str(e)})
            self._close()
            return
        emit({"t": time.monotonic(), "target": self.name(self.current), "value": value})

    def _connect(self) -> bool:
        # The one that failed last: a hung server still accepts connections (the kernel
        # does), so trying it first would wait out its timeout again and again.
        order = self.targets
        if self.current in order:
            i = order.index(self.current)
            order = order[i + 1 :] + order[: i + 1]
        for t in order:
            try:
                sock = socket.create_connection(t, timeout=self.timeout)
            except OSError:
                continue
            sock.settimeout(self.timeout)
            self.sock, self.current, self.buf = sock, t, b""
            return True
        return False

    def _line(self) -> str:
        assert self.sock is not None
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="haos-demo-probe", description=__doc__.splitlines()[0])
    p.add_argument("--targets", required=True, help="host:port,… of the counter's members")
    p.add_argument("--interval", type=float, default=0.002, help="pause between requests, s")
    p.add_argument("--timeout", type=float, default=0.3, help="per connect and answer, s")
    p.add_argument("--duration", type=float, default=300.0, help="stop after this many s")
    a = p.parse_args(argv)
    try:
        targets = [_target(t) for t in a.targets.split(",") if t]
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if not targets or a.interval < 0 or a.timeout <= 0 or a.duration <= 0:
        p.error("need targets, interval >= 0, and positive timeout and duration")
    probe = Probe(targets, a.timeout)
    end = time.monotonic() + a.duration
    while time.monotonic() < end:
        probe.once()
        readable, _, _ = select.select([sys.stdin], [], [], a.interval)
        if readable and not sys.stdin.read(1):
            break  # the one who started us is gone
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
