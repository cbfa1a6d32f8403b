"""The one way haos runs a short host command: argv list, stdin closed, clean environment."""

from __future__ import annotations

import subprocess

from haos.errors import UnavailableError

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def run(argv: list[str], timeout: float = 600.0) -> str:
    """Run ``argv`` to completion; its stdout. UnavailableError on failure or timeout."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=ENV,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise UnavailableError(f"{argv[0]} failed: {e}") from e
    if done.returncode != 0:
        tail = done.stderr.strip()[-800:]
        raise UnavailableError(f"{' '.join(argv)} exited {done.returncode}: {tail}")
    return done.stdout
