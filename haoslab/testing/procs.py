"""Process checks for tests that kill things."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Running: a zombie is dead (it only waits to be reaped by its parent), and a process that
    ends while its stat is read (ESRCH) is dead too."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
