"""The one way the OCF adapter runs a program: argv list, stdin closed, the given environment
only, its own process group, a deadline.

On timeout the whole process group is killed with SIGKILL (agents run helpers; a helper left
running could keep acting on the resource after the caller has given up on it). Only the last
``tail`` bytes of each output stream are kept, so a chatty agent cannot eat memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from haos.errors import UnavailableError

# After the program exits, how long to wait for its output pipes to close: a daemon it
# started may hold them open forever, and must not be killed for it.
_PIPE_GRACE = 1.0
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ProcessResult:
    """One finished run: exit status (None: killed after the timeout), output tails, time."""

    returncode: int | None
    stdout: str
    stderr: str
    elapsed: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


async def run_program(
    argv: Sequence[str], env: Mapping[str, str], *, timeout: float, tail: int = 4096
) -> ProcessResult:
    """Run ``argv`` with exactly ``env``; never raises for what the program does.

    Raises :class:`UnavailableError` only if the program cannot be started at all.
    """
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,  # own process group: a timeout kills its helpers too
        )
    except OSError as e:
        raise UnavailableError(f"cannot run {argv[0]}: {e.strerror or e}") from e
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.ensure_future(_read_tail(proc.stdout, tail)),
        asyncio.ensure_future(_read_tail(proc.stderr, tail)),
    ]
    returncode: int | None
    try:
        async with asyncio.timeout(timeout):
            returncode = await proc.wait()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        returncode = None
    except BaseException:
        _kill_group(proc.pid)
        await proc.wait()
        for r in readers:
            r.cancel()
        raise
    elapsed = time.monotonic() - started
    done, pending = await asyncio.wait(readers, timeout=_PIPE_GRACE)
    for r in pending:
        r.cancel()
    out, err = (r.result() if r in done else b"" for r in readers)
    return ProcessResult(
        returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        elapsed,
    )


async def _read_tail(stream: asyncio.StreamReader, tail: int) -> bytes:
    kept = b""
    while chunk := await stream.read(_CHUNK):
        kept = (kept + chunk)[-tail:]
    return kept


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
