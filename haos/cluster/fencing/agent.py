"""Fencing through the agents of Debian's ``fence-agents`` package, run unchanged.

Every agent (``fence_ipmilan``, ``fence_apc``, ``fence_redfish``, ...) speaks the same
protocol, the one Pacemaker's fencer uses: run without arguments, it reads its options from
stdin as ``key=value`` lines (the parameter names of ``fence_<x> -o metadata``; ``action=``
says what to do) and answers with its exit code:

* ``0``: done -- the node is off (``off``), was cycled (``reboot``), or is on (``status``);
* ``2`` for ``status``: the node is off;
* anything else (mostly ``1``): failed; the reason is the first ``ERROR:`` line it logged.

An agent that runs longer than the timeout is killed with its whole process group (agents
run helpers such as ``ipmitool``) and the fencing counts as failed. Output is captured and
logged; option values whose name mentions a password are never logged.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from haos.cluster.fencing.types import FenceAction, FenceError, FenceResult, PowerStatus
from haos.cluster.fencing.types import check_action as _check_action
from haos.config.model import NodeSpec
from haos.errors import UnavailableError, UsageError
from haos.proc import run_program

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_OK = 0
EXIT_STATUS_OFF = 2  # only for action=status
_KEY = re.compile(r"[a-z][a-z0-9_-]*")
_OUTPUT_LIMIT = 64 * 1024


@dataclass(frozen=True)
class AgentDevice:
    """One node's fence device: which agent, and its options.

    ``agent`` is a program name, looked up in the fencer's ``path``, or an absolute path.
    ``options`` are the agent's parameters (``ip``, ``username``, ``password``, ``plug``,
    ``lanplus``, ...), written to its stdin in this order after ``action=``.
    ``password_file``: read at each run and written last as ``password=`` (its first line),
    so the secret is on the agent's stdin only: never in argv, never logged.
    """

    agent: str
    options: tuple[tuple[str, str], ...] = ()
    password_file: str = ""

    @classmethod
    def of(cls, agent: str, **options: str) -> AgentDevice:
        """``AgentDevice.of("fence_ipmilan", ip="10.0.0.9", username="admin", ...)``."""
        return cls(agent, tuple(options.items()))

    def __post_init__(self) -> None:
        for key, value in self.options:
            if not _KEY.fullmatch(key) or key == "action":
                raise UsageError(f"{self.agent}: bad fence agent option name {key!r}")
            if any(c in value for c in "\n\r\0"):
                raise UsageError(f"{self.agent}: option {key} must be one line")

    def stdin(self, action: str) -> bytes:
        """The ``key=value`` lines the agent reads, ``action`` first.

        FenceError when the password file cannot be read."""
        lines = [f"action={action}", *(f"{k}={v}" for k, v in self.options)]
        if self.password_file:
            lines.append(f"password={self._password()}")
        return ("\n".join(lines) + "\n").encode()

    def _password(self) -> str:
        try:
            with open(self.password_file, encoding="utf-8") as f:
                first = f.readline(4096)
        except (OSError, UnicodeDecodeError) as e:
            reason = f"{self.agent}: cannot read password file {self.password_file}: {e}"
            raise FenceError(reason) from e
        return first.rstrip("\r\n")

    def redacted(self) -> str:
        """The options for a log line, secrets replaced by ``***``."""
        shown = " ".join(f"{k}={'***' if 'pass' in k else v}" for k, v in self.options)
        return shown + (" password=***" if self.password_file else "")


@dataclass(frozen=True)
class AgentRun:
    """One run of an agent: its exit code (None: killed after the timeout) and its output."""

    agent: str
    action: str
    returncode: int | None
    stdout: str
    stderr: str
    elapsed: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def reason(self) -> str:
        """One line saying why it failed: the agent's first ERROR line (the cause; later ones
        say "validate-all failed", "Please use '-h' for usage"), else its last line."""
        if self.timed_out:
            return f"{self.agent} {self.action} timed out after {self.elapsed:.1f} s"
        lines = [line.strip() for line in (self.stderr + "\n" + self.stdout).splitlines()]
        errors = [line for line in lines if "ERROR" in line]
        last = errors[0] if errors else next((x for x in reversed(lines) if x), "no output")
        last = re.sub(r"^\S+ \S+ ERROR: ", "", last)  # drop fencing.py's timestamp prefix
        return f"{self.agent} {self.action} exited {self.returncode}: {last}"


async def run_agent(
    device: AgentDevice, action: str, *, timeout: float, path: str = DEFAULT_PATH
) -> AgentRun:
    """Run ``device.agent`` once with ``action``; never raises for what the agent does.

    Raises :class:`FenceError` only if the agent cannot be started (not installed, or its
    password file unreadable).
    """
    program = device.agent if os.path.isabs(device.agent) else shutil.which(device.agent, path=path)
    if program is None or not os.access(program, os.X_OK):
        raise FenceError(f"fence agent {device.agent} not found in {path}")
    log.debug("running %s action=%s %s", device.agent, action, device.redacted())
    given = device.stdin(action)  # before the start: an unreadable password is a FenceError
    try:
        done = await run_program(
            [program],
            {"PATH": path, "LANG": "C", "LC_ALL": "C"},
            timeout=timeout,
            tail=_OUTPUT_LIMIT,
            input=given,
        )
    except UnavailableError as e:
        raise FenceError(f"fence agent {device.agent}: {e}") from e
    run = AgentRun(device.agent, action, done.returncode, done.stdout, done.stderr, done.elapsed)
    for stream, text in (("stdout", run.stdout), ("stderr", run.stderr)):
        for line in text.splitlines():
            if line.strip():
                log.debug("%s %s %s: %s", device.agent, action, stream, line)
    return run


def metadata_parameters(xml: str) -> frozenset[str]:
    """The parameter names in an agent's ``-o metadata`` XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise FenceError(f"fence agent metadata is not XML: {e}") from e
    return frozenset(p.attrib["name"] for p in root.iter("parameter") if "name" in p.attrib)


class FenceAgentFencer:
    """A :class:`~haos.cluster.fencing.types.Fencer` that runs one fence agent per node."""

    def __init__(
        self,
        devices: Mapping[str, AgentDevice],
        *,
        timeout: float = 60.0,
        path: str = DEFAULT_PATH,
    ) -> None:
        """``devices`` maps node names to their fence device; ``timeout`` bounds each run.

        Choose the timeout above the agent's own (``power_timeout`` + ``power_wait`` +
        login): a run that is killed counts as failed even if the node did go off.
        """
        if not timeout > 0:
            raise UsageError(f"fence agent timeout must be positive, not {timeout!r}")
        self._devices = dict(devices)
        self._timeout = timeout
        self._path = path

    def device(self, node: NodeSpec) -> AgentDevice:
        try:
            return self._devices[node.name]
        except KeyError:
            raise UsageError(f"no fence device configured for node {node.name}") from None

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        """Run the agent with ``action``; ok on exit code 0 (see the module docstring)."""
        action = _check_action(action)
        device = self.device(node)
        try:
            run = await run_agent(device, action, timeout=self._timeout, path=self._path)
        except FenceError as e:
            log.warning("fencing %s (%s) failed: %s", node.name, action, e)
            return FenceResult(node.name, action, False, str(e))
        if run.returncode == EXIT_OK:
            detail = f"{device.agent} {action} succeeded in {run.elapsed:.1f} s"
            log.info("fenced %s: %s", node.name, detail)
            return FenceResult(node.name, action, True, detail)
        log.warning("fencing %s failed: %s", node.name, run.reason())
        return FenceResult(node.name, action, False, run.reason())

    async def status(self, node: NodeSpec) -> PowerStatus:
        """``action=status``: exit 0 is on, 2 is off, anything else raises FenceError."""
        run = await self.run(node, "status")
        if run.returncode == EXIT_OK:
            return "on"
        if run.returncode == EXIT_STATUS_OFF:
            return "off"
        raise FenceError(f"status of {node.name}: {run.reason()}")

    async def run(self, node: NodeSpec, action: str) -> AgentRun:
        """Run the node's agent with any action it knows (``monitor``, ``validate-all``, ...)."""
        if not _KEY.fullmatch(action):
            raise UsageError(f"bad fence agent action {action!r}")
        return await run_agent(self.device(node), action, timeout=self._timeout, path=self._path)

    async def check(self, node: NodeSpec) -> None:
        """Check the node's device configuration without touching the device.

        Every option must be a parameter of the agent (from its metadata), and the agent's
        own ``validate-all`` must pass. Raises FenceError naming the problem.
        """
        device = self.device(node)
        meta = await self.run(node, "metadata")
        if meta.returncode != EXIT_OK:
            raise FenceError(f"{device.agent} metadata: {meta.reason()}")
        known = metadata_parameters(meta.stdout)
        unknown = sorted(k for k, _ in device.options if k.replace("-", "_") not in known)
        if unknown:
            raise FenceError(f"{device.agent} has no parameter {', '.join(unknown)}")
        valid = await self.run(node, "validate-all")
        if valid.returncode != EXIT_OK:
            raise FenceError(f"{node.name}: {valid.reason()}")
