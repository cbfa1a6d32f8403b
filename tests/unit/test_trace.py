"""Tracepoints recorded to a file by a process started with HAOS_TRACE, and read back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from haos import trace
from haos.errors import UsageError

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
from haos import trace
trace.point("before.hook")           # nobody listens yet: not recorded
trace.from_env()
trace.point("a.start", "n2 primary")
trace.point("a.bytes", b"\\x00" * 7)
trace.point("a.none")
trace.point("a.text", "two\\nlines  and   spaces")
"""


def test_a_process_with_haos_trace_records_its_points_on_the_shared_clock(tmp_path: Path) -> None:
    path = tmp_path / "n1.trace"
    started = time.monotonic()
    env = {**os.environ, trace.ENV: str(path), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, timeout=60)
    points = list(trace.read(path))
    assert [(p.name, p.about) for p in points] == [
        ("a.start", "n2 primary"),
        ("a.bytes", "7B"),
        ("a.none", "-"),
        ("a.text", "two lines and spaces"),
    ]
    assert all(started <= p.t <= time.monotonic() for p in points)
    assert [p.t for p in points] == sorted(p.t for p in points)
    assert len({p.pid for p in points}) == 1


def test_without_haos_trace_nothing_is_recorded(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != trace.ENV}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_trace_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.trace"
    path.write_text("1.5 42 a.start -\nnot a trace line\n")
    with pytest.raises(UsageError, match=r"bad.trace:2: not a trace line"):
        list(trace.read(path))
