"""Tracepoints across processes, for latency breakdowns of a fail-over or a write.

A tracepoint is a :func:`sys.audit` event (:data:`EVENT`, see
:mod:`haos.cluster.dss.corosync.trace` for the message path's points) with two arguments:
the point's name and what it is about. Nothing listens unless a process installs a hook, so
an unheard point costs one C call. A process started with ``HAOS_TRACE=<file>`` in its
environment (a haos daemon, or an application linked with ``haos.client``) appends every
point to that file, one line each::

    <CLOCK_MONOTONIC seconds> <pid> <point> <about>

Every process on a machine shares the monotonic clock (containers included), so the files of
all nodes of a harness cluster line up with the time a fault was injected. Points of the
fail-over path, in order: ``agent.crash`` (a component's unit ended), ``agent.report`` (the
report handed to the cluster daemon), ``crim.report`` (it reached the active CRIM),
``crim.commit`` (the decision is checkpointed), ``orders.recv`` (a node's daemon received
its orders), ``agent.apply`` / ``agent.applied`` (the agent carries a role out),
``app.role`` (the application was given its role), ``app.serving`` and ``app.first`` (the
demo counter listens / answered its first increment).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haos.errors import UsageError

EVENT = "haos.trace"  # the audit event of every tracepoint
ENV = "HAOS_TRACE"
_installed: set[str] = set()


def point(name: str, about: object = None) -> None:
    """Mark ``name`` now (about ``about``); free unless a hook listens."""
    sys.audit(EVENT, name, about)


def record_to(path: str | Path) -> None:
    """Append every tracepoint of this process to ``path`` (once per path and process)."""
    path = str(path)
    if path in _installed:
        return
    _installed.add(path)
    out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as we do
    lock = threading.Lock()  # points fire on worker threads too
    pid = os.getpid()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != EVENT:
            return
        name, about = (*args, None, None)[:2]
        if about is None:
            text = "-"
        elif isinstance(about, bytes | bytearray | memoryview):
            text = f"{len(about)}B"
        else:
            text = " ".join(str(about).split()) or "-"
        line = f"{time.monotonic():.6f} {pid} {name} {text[:200]}\n"
        with lock:
            out.write(line)

    sys.addaudithook(hook)


def from_env() -> None:
    """:func:`record_to` the file named by ``HAOS_TRACE``, if it is set."""
    path = os.environ.get(ENV)
    if path:
        record_to(path)


@dataclass(frozen=True)
class Point:
    t: float
    pid: int
    name: str
    about: str


def read(path: Path) -> Iterator[Point]:
    """The points of one trace file; UsageError naming the line for a malformed one."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\n").split(" ", 3)
            try:
                yield Point(float(parts[0]), int(parts[1]), parts[2], parts[3])
            except (IndexError, ValueError):
                raise UsageError(f"{path}:{number}: not a trace line: {line!r}") from None
