"""Every subprocess of the HM goes through :func:`run_command`.

Argument lists only (no shell), stdin closed, a clean environment, its own process group,
a deadline; on a timeout or cancellation the whole group is SIGKILLed and reaped. The deadline
starts once the program runs: starting it (fork, then exec) is not bounded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_ENV: Mapping[str, str] = {"PATH": SAFE_PATH, "LANG": "C", "LC_ALL": "C"}

_OUTPUT_LIMIT = 4096  # bytes of output kept (the tail): enough for a reason, bounded memory
_CHUNK = 65536


@dataclass(frozen=True)
class CommandResult:
    """``returncode`` is None when the command was killed at its timeout."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str  # the tail of stdout and stderr, interleaved

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def last_line(self) -> str:
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else ""


async def run_command(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] = CLEAN_ENV
) -> CommandResult:
    """Run ``argv`` to completion or until ``timeout`` seconds passed.

    Raises OSError only when the program cannot be started (e.g. FileNotFoundError). On
    cancellation the process group is killed and reaped before CancelledError propagates.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,  # its own process group: a timeout kills its helpers too
        # A fork, not a vfork (CPython vforks unless it must change the user): until the
        # program executes, a vfork holds the starting thread *with the interpreter's lock*,
        # and a program on a file system that stopped answering never executes -- the whole
        # daemon would stand still. After a fork only the starting thread waits (the HM's,
        # see .thread), and the daemon's watchdog gate sees the HM hang.
        user=os.getuid(),
    )
    try:
        async with asyncio.timeout(timeout):
            tail = await _read_tail(proc)
            returncode: int | None = await proc.wait()
    except TimeoutError:
        await _kill(proc)
        tail, returncode = b"", None
    except BaseException:
        await _kill(proc)
        raise
    return CommandResult(tuple(argv), returncode, tail.decode(errors="replace"))


async def _read_tail(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    tail = b""
    while chunk := await proc.stdout.read(_CHUNK):
        tail = (tail + chunk)[-_OUTPUT_LIMIT:]
    return tail


async def _kill(proc: asyncio.subprocess.Process) -> None:
    # The whole group, even if the leader already exited: helpers it left behind may be what
    # hangs (holding the output pipe). Linux does not hand out a pid that is still a group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    # asyncio's child watcher reaps it in any case; waiting here makes "gone" observable.
    await proc.wait()
