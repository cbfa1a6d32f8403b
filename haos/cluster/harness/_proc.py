"""Every helper command of the harness goes through :func:`run`.

Argument lists only (no shell), stdin closed unless input is given, a clean environment,
output captured as text, a deadline, and :class:`CommandFailed` on a non-zero exit.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from haos.cluster.harness.errors import CommandFailed, HarnessError

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_ENV = {"PATH": SAFE_PATH, "LC_ALL": "C"}


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; raise CommandFailed if it fails (``check``) or times out.

    On a timeout the command is SIGKILLed (the tools it runs exec each other, so one pid).
    """
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            env=CLEAN_ENV,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
        raise CommandFailed(argv, None, stderr) from e
    except FileNotFoundError as e:
        raise HarnessError(f"{argv[0]} is not installed: {e}") from e
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr)
    return proc
