"""The one way haos runs a command to completion, sync or async.

Every run: an argv list (no shell); stdin closed unless input is given; a clean environment
unless one is given; its own process group; a deadline, after which the whole group is
killed with SIGKILL (a command's helpers must not keep acting after its caller gave up); only
the last ``tail`` bytes of each output stream kept by the async runner, so a chatty program
cannot eat memory. Long-running processes (daemons, guests) are not run through here.

* :func:`run` / :func:`run_bytes`: sync, stdout; UnavailableError when the command cannot
  start, fails or times out. :func:`complete`: sync, never raises for what the command does.
* :func:`run_program`: async, never raises for what the program does: a
  :class:`ProcessResult` with its status (None after the deadline) and output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from haos.errors import UnavailableError

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

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


def run(
    argv: Sequence[str],
    timeout: float = 600.0,
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` to completion; its stdout. UnavailableError on failure or timeout."""
    return run_bytes(argv, timeout, input=input, env=env).decode("utf-8", "replace")


def run_bytes(
    argv: Sequence[str],
    timeout: float = 600.0,
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """Like :func:`run`, for a command whose output is not text."""
    done = complete(argv, timeout, input=input, env=env)
    if done.returncode is None:
        raise UnavailableError(f"{' '.join(argv)} did not finish within {timeout:g} s")
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-800:]
        raise UnavailableError(f"{' '.join(argv)} exited {done.returncode}: {tail}")
    return done.stdout


@dataclass(frozen=True)
class Completed:
    """A sync run: exit status (None: killed after the deadline), whole outputs."""

    returncode: int | None
    stdout: bytes
    stderr: bytes


def complete(
    argv: Sequence[str],
    timeout: float,
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv`` to completion or its deadline; never raises for what it does.
    UnavailableError only when it cannot be started."""
    argv = list(argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(ENV if env is None else env),
            start_new_session=True,  # own process group: a timeout kills its helpers too
        )
    except OSError as e:
        raise UnavailableError(f"cannot run {argv[0]}: {e.strerror or e}") from e
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = b"", b""
        with contextlib.suppress(subprocess.TimeoutExpired):  # a helper outside the group
            out, err = proc.communicate(timeout=_PIPE_GRACE)  # may hold the pipes
        proc.kill()
        proc.wait()
        return Completed(None, out or b"", err or b"")
    except BaseException:
        kill_group(proc.pid)
        proc.wait()
        raise
    return Completed(proc.returncode, out, err)


async def run_program(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float,
    tail: int = 4096,
    input: bytes | None = None,
) -> ProcessResult:
    """Run ``argv`` (with exactly ``env``, default the clean one); never raises for what the
    program does. Raises :class:`UnavailableError` only if it cannot be started at all."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(ENV if env is None else env),
            start_new_session=True,
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
            if input is not None:
                assert proc.stdin is not None
                with contextlib.suppress(ConnectionError):  # it may exit without reading
                    proc.stdin.write(input)
                    await proc.stdin.drain()
                proc.stdin.close()
            returncode = await proc.wait()
    except TimeoutError:
        kill_group(proc.pid)
        await proc.wait()
        returncode = None
    except BaseException:
        kill_group(proc.pid)
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
        returncode, out.decode(errors="replace"), err.decode(errors="replace"), elapsed
    )


async def _read_tail(stream: asyncio.StreamReader, tail: int) -> bytes:
    kept = b""
    while chunk := await stream.read(_CHUNK):
        kept = (kept + chunk)[-tail:]
    return kept


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a run's program and its helpers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
