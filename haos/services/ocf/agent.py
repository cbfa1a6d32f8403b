"""Running an OCF resource agent (``/usr/lib/ocf/resource.d/<provider>/<type>``) unchanged.

The agent gets what Pacemaker's executor gives it (OCF Resource Agent API 1.1): the action as
its only argument, and an environment of ``OCF_ROOT``, ``OCF_RA_VERSION_MAJOR/MINOR``,
``OCF_RESOURCE_INSTANCE/TYPE/PROVIDER``, one ``OCF_RESKEY_<name>`` per parameter, and the
``OCF_RESKEY_CRM_meta_*`` values: ``timeout`` (ms) and ``interval`` (ms, 0 except for a
recurring monitor) always; for a promotable agent also the clone meta values that
``ocf_is_ms``/``ocf_is_clone`` in ``ocf-shellfuncs`` and the agents test (``promotable``,
``clone_max``, ``promoted_max`` and their legacy ``master_*`` names, ...). Nothing else of our
own environment leaks in.

The answer is the exit status, mapped onto :class:`OcfRc`. An exit status the spec does not
define (a shell's 126/127, a signal) counts as ``ERR_GENERIC``, as it does for Pacemaker; the
raw status stays in :attr:`AgentResult.exit_status`. An agent still running at its timeout is
killed with its process group and the result has ``timed_out`` set.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from haos.errors import ConfigError, ConfigProblem, HaosError
from haos.proc import run_program
from haos.services.ocf.metadata import AgentMetadata, check_params, parse_metadata

log = logging.getLogger(__name__)

OCF_ROOT = "/usr/lib/ocf"
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TIMEOUT = 20.0  # seconds: Pacemaker's default operation timeout
RA_VERSION = (1, 1)
_TAIL = 4096  # bytes of each output stream kept in a result
_METADATA_LIMIT = 1 << 20  # meta-data is parsed, so keep all of it (within reason)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OcfRc(enum.IntEnum):
    """Exit status of an OCF agent, as the OCF Resource Agent API defines it."""

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    RUNNING_PROMOTED = 8
    FAILED_PROMOTED = 9

    def __str__(self) -> str:
        return f"OCF_{self.name}"

    @classmethod
    def from_exit(cls, status: int | None) -> OcfRc:
        """The spec's meaning of ``status``; undefined ones (and None: killed) are generic."""
        if status is None:
            return cls.ERR_GENERIC
        try:
            return cls(status)
        except ValueError:
            return cls.ERR_GENERIC


class OcfAction(enum.Enum):
    START = "start"
    STOP = "stop"
    MONITOR = "monitor"
    PROMOTE = "promote"
    DEMOTE = "demote"
    META_DATA = "meta-data"
    VALIDATE_ALL = "validate-all"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class AgentResult:
    """One run of an agent action. ``stdout``/``stderr`` are the last few KiB only (all of
    it for meta-data); ``exit_status`` is None when the agent was killed at its timeout."""

    action: OcfAction
    rc: OcfRc
    stdout: str
    duration: float
    exit_status: int | None = 0
    stderr: str = ""

    @property
    def timed_out(self) -> bool:
        return self.exit_status is None

    @property
    def ok(self) -> bool:
        return self.rc is OcfRc.SUCCESS and not self.timed_out

    def describe(self) -> str:
        """One line for a log or an error: what ran, how it ended, the agent's last words."""
        if self.timed_out:
            return f"{self.action} timed out after {self.duration:.1f} s"
        lines = [x.strip() for x in (self.stderr + "\n" + self.stdout).splitlines() if x.strip()]
        reasons = [x for x in lines if "ERROR" in x or "ocf-exit-reason" in x]
        last = reasons[-1] if reasons else (lines[-1] if lines else "no output")
        return f"{self.action} returned {self.rc} (exit {self.exit_status}): {last}"


class OcfAgentError(HaosError):
    """An agent action did not do what was asked; ``result`` says how it ended."""

    code = "ocf-agent"

    def __init__(self, agent: str, result: AgentResult) -> None:
        self.result = result
        super().__init__(f"{agent}: {result.describe()}")


class OcfAgent:
    """One configured OCF resource: an agent, its parameters and its per-action timeouts.

    ``timeouts`` maps action names (``"start"``, ``"monitor"``, ...) to seconds; actions not
    in it get ``default_timeout``. ``promotable`` makes the agent run as Pacemaker runs one
    instance of a promotable clone of ``clone_max`` instances with one promoted.
    """

    def __init__(
        self,
        provider: str,
        type: str,
        params: Mapping[str, str],
        instance: str,
        timeouts: Mapping[str, float] | None = None,
        *,
        promotable: bool = False,
        clone_max: int = 2,
        monitor_interval: float = 10.0,
        default_timeout: float = DEFAULT_TIMEOUT,
        ocf_root: str = OCF_ROOT,
        path: str = DEFAULT_PATH,
    ) -> None:
        self.provider, self.type, self.instance = provider, type, instance
        self.params = dict(params)
        self.timeouts = dict(timeouts or {})
        self.promotable = promotable
        self.clone_max = clone_max
        self.monitor_interval = monitor_interval
        self.default_timeout = default_timeout
        self.ocf_root = ocf_root
        self.path = path
        _check_config(self)

    @property
    def name(self) -> str:
        return f"ocf:{self.provider}:{self.type}"

    @property
    def program(self) -> str:
        return os.path.join(self.ocf_root, "resource.d", self.provider, self.type)

    def timeout_for(self, action: OcfAction) -> float:
        return self.timeouts.get(action.value, self.default_timeout)

    def environment(self, action: OcfAction, *, interval: float = 0.0) -> dict[str, str]:
        """The complete environment the agent runs with for ``action``."""
        env = {
            "PATH": self.path,
            "LC_ALL": "C",
            "OCF_ROOT": self.ocf_root,
            "OCF_RA_VERSION_MAJOR": str(RA_VERSION[0]),
            "OCF_RA_VERSION_MINOR": str(RA_VERSION[1]),
            "OCF_RESOURCE_INSTANCE": self.instance,
            "OCF_RESOURCE_TYPE": self.type,
            "OCF_RESOURCE_PROVIDER": self.provider,
        }
        env.update({f"OCF_RESKEY_{k}": v for k, v in self.params.items()})
        meta = {
            "name": action.value,
            "timeout": _ms(self.timeout_for(action)),
            "interval": _ms(interval),
        }
        if self.promotable:
            meta.update(
                promotable="true",
                clone_max=str(self.clone_max),
                clone_node_max="1",
                promoted_max="1",
                promoted_node_max="1",
                master_max="1",  # the pre-2.1 names, which older agents still read
                master_node_max="1",
                globally_unique="false",
                notify="false",
            )
        env.update({f"OCF_RESKEY_CRM_meta_{k}": v for k, v in meta.items()})
        return env

    async def run(self, action: OcfAction, *, interval: float = 0.0) -> AgentResult:
        """Run ``action`` once; never raises for what the agent does (see :class:`AgentResult`).

        Raises :class:`~haos.errors.UnavailableError` if the agent cannot be started.
        """
        timeout = self.timeout_for(action)
        log.debug("%s %s: running %s (timeout %.1f s)", self.name, self.instance, action, timeout)
        done = await run_program(
            [self.program, action.value],
            self.environment(action, interval=interval),
            timeout=timeout,
            tail=_METADATA_LIMIT if action is OcfAction.META_DATA else _TAIL,
        )
        result = AgentResult(
            action,
            OcfRc.from_exit(done.returncode),
            done.stdout,
            done.elapsed,
            done.returncode,
            done.stderr,
        )
        log.debug("%s %s: %s", self.name, self.instance, result.describe())
        return result

    async def start(self) -> AgentResult:
        return await self.run(OcfAction.START)

    async def stop(self) -> AgentResult:
        return await self.run(OcfAction.STOP)

    async def monitor(self, *, probe: bool = False) -> AgentResult:
        """A recurring monitor (interval ``monitor_interval``), or a one-off probe."""
        return await self.run(OcfAction.MONITOR, interval=0.0 if probe else self.monitor_interval)

    async def promote(self) -> AgentResult:
        return await self.run(OcfAction.PROMOTE)

    async def demote(self) -> AgentResult:
        return await self.run(OcfAction.DEMOTE)

    async def validate_all(self) -> AgentResult:
        return await self.run(OcfAction.VALIDATE_ALL)

    async def meta_data(self) -> AgentMetadata:
        """The agent's parsed meta-data; raises :class:`OcfAgentError` if it fails to say."""
        result = await self.run(OcfAction.META_DATA)
        if not result.ok:
            raise OcfAgentError(self.name, result)
        return parse_metadata(result.stdout)

    async def check_params(self) -> AgentMetadata:
        """Check the configured parameters against the meta-data: :class:`ConfigError` naming
        each unknown or missing required one. Returns the meta-data."""
        meta = await self.meta_data()
        check_params(meta, self.params, source=f"{self.name} {self.instance}")
        return meta


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000))


def _check_config(agent: OcfAgent) -> None:
    source = f"ocf:{agent.provider}:{agent.type}"
    problems: list[ConfigProblem] = []
    for key, value in (("provider", agent.provider), ("type", agent.type)):
        if not _NAME.fullmatch(value):
            problems.append(ConfigProblem(source, key, f"bad OCF {key} name {value!r}"))
    if not agent.instance or any(c in agent.instance for c in "\0\n"):
        problems.append(ConfigProblem(source, "instance", f"bad instance name {agent.instance!r}"))
    for name, value in agent.params.items():
        if not _PARAM.fullmatch(name):
            problems.append(ConfigProblem(source, f"params.{name}", "not a valid parameter name"))
        elif "\0" in value:
            problems.append(ConfigProblem(source, f"params.{name}", "value contains NUL"))
    for action, seconds in agent.timeouts.items():
        if action not in {a.value for a in OcfAction}:
            problems.append(ConfigProblem(source, f"timeouts.{action}", "unknown OCF action"))
        elif not seconds > 0:
            problems.append(ConfigProblem(source, f"timeouts.{action}", "must be positive"))
    if not agent.default_timeout > 0:
        problems.append(ConfigProblem(source, "default_timeout", "must be positive"))
    if not agent.monitor_interval > 0:
        problems.append(ConfigProblem(source, "monitor_interval", "must be positive"))
    if agent.clone_max < 1:
        problems.append(ConfigProblem(source, "clone_max", "must be at least 1"))
    if problems:
        raise ConfigError(problems)
