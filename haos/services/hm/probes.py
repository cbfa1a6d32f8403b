"""How an audit is run, per kind: a command, an HTTP GET on this node, or a callback.

A probe answers one run of one audit with ``(ok, detail)``. It does not judge lateness: the
:class:`~haos.services.hm.runner.AuditRunner` cancels a run at its deadline. Probes still
bound their own work by ``spec.timeout`` so they are safe to use on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import SplitResult

from haos.config.audits import command_argv, local_http_url
from haos.config.model import AuditSpec
from haos.config.schema import Invalid
from haos.errors import ModelError
from haos.services.hm._proc import CLEAN_ENV, run_command

AuditCallback = Callable[[], Awaitable[tuple[bool, str]]]
"""A client-library audit: returns ``(ok, detail)``; raising counts as a failure."""

_STATUS_LINE_LIMIT = 8192


class Probe(Protocol):
    """Runs audits of one kind."""

    def check(self, spec: AuditSpec) -> None:
        """Raise :class:`~haos.errors.ModelError` if ``spec.target`` can never be run."""
        ...

    async def run(self, spec: AuditSpec) -> tuple[bool, str]:
        """One run of ``spec``: ``(ok, detail)``. Cancellation stops it and cleans up."""
        ...


class CommandProbe:
    """``target`` is a command line (split like a shell would, but no shell runs it).

    Exit status 0 passes. At the timeout (or on cancellation) the command's whole process
    group is killed.
    """

    def __init__(self, env: Mapping[str, str] = CLEAN_ENV) -> None:
        self._env = dict(env)

    def check(self, spec: AuditSpec) -> None:
        _argv(spec)

    async def run(self, spec: AuditSpec) -> tuple[bool, str]:
        argv = _argv(spec)
        try:
            done = await run_command(argv, timeout=spec.timeout, env=self._env)
        except OSError as e:
            return False, f"cannot start {argv[0]}: {e.strerror or e}"
        if done.timed_out:
            return False, f"{argv[0]} killed after {spec.timeout:g}s"
        if done.returncode == 0:
            return True, ""
        last = done.last_line()
        why = f"{argv[0]} exited {done.returncode}"
        return False, f"{why}: {last}" if last else why


def _argv(spec: AuditSpec) -> list[str]:
    """The argv of a command audit, read as the configuration loader reads it."""
    try:
        return command_argv(spec.target)
    except Invalid as e:
        raise ModelError(f"audit {spec.component}/{spec.name}: {e}") from None


class HttpProbe:
    """``target`` is an ``http://`` URL on this node (loopback); a 2xx status passes.

    Only plain HTTP to a loopback address or ``localhost``: audits check components of this
    node, and a remote or TLS target would make the audit's verdict depend on the network.
    """

    def check(self, spec: AuditSpec) -> None:
        _url(spec)

    async def run(self, spec: AuditSpec) -> tuple[bool, str]:
        url = _url(spec)
        host, port = url.hostname or "", url.port or 80
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        try:
            async with asyncio.timeout(spec.timeout):
                return await _get(host, port, path, url.netloc)
        except TimeoutError:
            return False, f"no answer from {url.geturl()} within {spec.timeout:g}s"
        except OSError as e:
            return False, f"cannot GET {url.geturl()}: {e.strerror or e}"


def _url(spec: AuditSpec) -> SplitResult:
    """The URL of an HTTP audit, read as the configuration loader reads it."""
    try:
        return local_http_url(spec.target)
    except Invalid as e:
        raise ModelError(f"audit {spec.component}/{spec.name}: {e}") from None


async def _get(host: str, port: int, path: str, netloc: str) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(host, port, limit=_STATUS_LINE_LIMIT)
    try:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: haos-hm\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1"))
        await writer.drain()
        try:
            line = await reader.readline()
        except ValueError:  # longer than the limit
            return False, "HTTP status line too long"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.decode("latin-1").strip().split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, f"not an HTTP response: {line[:80]!r}"
    status = int(parts[1])
    text = " ".join(parts[1:])
    return (200 <= status < 300), f"HTTP {text}"


class CallbackProbe:
    """``target`` names an audit that the component's application registered through the
    client library (``register_audit(target, ...)``): callbacks are kept per component, so
    two applications may both name an audit "alive"."""

    def __init__(self) -> None:
        self._callbacks: dict[tuple[str, str], AuditCallback] = {}

    def add(self, component: str, name: str, callback: AuditCallback) -> None:
        """Make ``callback`` runnable as ``component``'s target ``name`` (replacing any
        earlier one)."""
        if not name:
            raise ModelError("an audit callback needs a name")
        self._callbacks[(component, name)] = callback

    def remove(self, component: str, name: str) -> None:
        """Forget ``component``'s ``name``; runs of it fail from now on. Unknown names are
        ignored."""
        self._callbacks.pop((component, name), None)

    def check(self, spec: AuditSpec) -> None:
        if not spec.target:
            raise ModelError(f"audit {spec.component}/{spec.name}: no callback name")

    async def run(self, spec: AuditSpec) -> tuple[bool, str]:
        callback = self._callbacks.get((spec.component, spec.target))
        if callback is None:
            return False, f"no callback registered as {spec.target!r}"
        ok, detail = await callback()
        return bool(ok), detail
