"""Every helper command of the harness goes through :func:`run` (over :func:`haos.proc.complete`).

Argument lists only (no shell), stdin closed unless input is given, a clean environment,
output captured as text, a deadline (the command's process group is killed at it), and
:class:`CommandFailed` on a non-zero exit.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from haos import proc
from haos.errors import UnavailableError
from haoslab.harness.errors import CommandFailed, HarnessError

CLEAN_ENV = proc.ENV
SAFE_PATH = proc.ENV["PATH"]


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; raise CommandFailed if it fails (``check``) or times out."""
    try:
        done = proc.complete(argv, timeout, input=None if input is None else input.encode())
    except UnavailableError as e:
        raise HarnessError(f"{argv[0]} is not installed: {e}") from e
    stdout = done.stdout.decode(errors="replace")
    stderr = done.stderr.decode(errors="replace")
    if done.returncode is None:
        raise CommandFailed(argv, None, stderr)
    if check and done.returncode != 0:
        raise CommandFailed(argv, done.returncode, stderr)
    return subprocess.CompletedProcess(list(argv), done.returncode, stdout, stderr)
