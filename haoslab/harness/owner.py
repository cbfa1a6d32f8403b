"""Which process owns a cluster, so cleanup can tell live runs from crashed ones.

A cluster's id is claimed by its work directory ``<base>/<id>``, which appears atomically
(a rename) already holding the file ``owner``: the pid and start time (``/proc/<pid>/stat``
field 22, so a recycled pid does not pass for the owner) of the process that runs it. The
cluster creates its namespaces only after that and removes the directory only after deleting
them, so every namespace of a live cluster has a live owner on record.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from haoslab.harness.errors import HarnessError

DEFAULT_BASE = Path("/tmp/haos-harness")
_FILE = "owner"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return int(stat.rpartition(")")[2].split()[19])


CLAIMING = ".claim-"  # prefix of work directories still being claimed


def claim_workdir(base: Path, attempts: int = 16) -> Path:
    """A new ``<base>/<six hex digits>`` owned by this process (see the module docstring)."""
    for _ in range(attempts):
        cluster_id = secrets.token_hex(3)
        # FileNotFoundError: another cluster's close removed the empty base meanwhile.
        with contextlib.suppress(FileNotFoundError):
            base.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=CLAIMING, dir=base))
            pid = os.getpid()
            (staging / _FILE).write_text(f"{pid} {start_time(pid)}\n")
            try:
                staging.rename(base / cluster_id)  # fails if that id has a non-empty directory
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                continue
            return base / cluster_id
    raise HarnessError(f"no free cluster id in {base} after {attempts} attempts")


def alive(workdir: Path) -> bool:
    """Whether the process that created ``workdir`` still runs (False if unknown)."""
    try:
        pid_text, started = (workdir / _FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    return str(start_time(pid)) == started


def owned_by(workdir: Path, pid: int, started: int) -> bool:
    """Whether ``workdir`` was claimed by the process ``pid`` that started at ``started``
    (clock ticks since boot, :func:`start_time`), whether or not that process still runs."""
    try:
        return (workdir / _FILE).read_text().split() == [str(pid), str(started)]
    except OSError:
        return False
