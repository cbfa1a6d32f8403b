"""The driver of an OCF resource agent: :class:`~haos.services.ocf.OcfComponent` plus a monitor.

States map onto the agent as :mod:`haos.services.ocf.component` says. While the resource
should run (started or promoted), ``monitor`` runs every ``monitor_interval`` s; the first
unhealthy result after the resource was last brought up is reported (one report per failure,
not one per monitor run). A transition FIG 5 does not allow (primary -> secondary) goes
through spare, as a switchover does.

An action that fails with a definitive code (a hard error such as ``OCF_ERR_INSTALLED``, or
``OCF_ERR_CONFIGURED``) is reported by the driver itself, with that class of error, before
it raises :class:`OcfActionFailed` (whose ``reported`` says so): the CRIM then takes the
component out of service rather than retrying it on this node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from haos.config.model import ManagerSpec
from haos.errors import ConfigError, ConfigProblem, HaosError, IllegalTransition
from haos.model.reports import RecoveryLevel
from haos.model.states import AvailabilityState, is_legal
from haos.services.agent.base import DriverDeps, DriverError, Report, check_recovery
from haos.services.ocf import (
    OcfAction,
    OcfAgent,
    OcfAgentError,
    OcfComponent,
    OcfRc,
    failed_action,
)
from haos.services.ocf.component import level

log = logging.getLogger(__name__)

_SPARE = AvailabilityState.SPARE
DEFAULT_MONITOR_INTERVAL = 10.0


class OcfActionFailed(DriverError):
    """An agent action failed. ``reported``: the driver already sent the error report (a
    definitive one), so its caller need not report the failure again."""

    def __init__(self, message: str, reported: bool) -> None:
        super().__init__(message)
        self.reported = reported


class OcfDriver:
    """Runs ``component`` (an :class:`OcfComponent`) and monitors it while it should run."""

    def __init__(
        self,
        component: OcfComponent,
        report: Report,
        tasks: asyncio.TaskGroup,
        *,
        monitor_interval: float = DEFAULT_MONITOR_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = component.name
        self._component = component
        self._report = report
        self._tasks = tasks
        self._interval = monitor_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._monitor: asyncio.Task[None] | None = None
        self._reported = False
        self.monitors = 0  # monitor runs, for status and tests

    @property
    def state(self) -> AvailabilityState:
        """The state last fully reached."""
        return self._component.state

    async def apply(self, state: AvailabilityState, graceful: bool) -> None:
        async with self._lock:
            await self._go(state)

    async def recover(self, level: RecoveryLevel) -> None:
        """Stop the resource and bring it back to its state (a soft reset does the same)."""
        check_recovery(self.name, level)
        async with self._lock:
            target = self._component.state
            await self._run(OcfAction.STOP)
            self._component.state = AvailabilityState.OFFLINE
            await self._go(target)

    async def current(self) -> AvailabilityState | None:
        """Probe the resource: promoted -> primary; running -> primary (a plain agent) or
        secondary (a promotable one); stopped -> the stopped state last applied; else None."""
        async with self._lock:
            result = await self._component.agent.monitor(probe=True)
        if result.timed_out:
            return None
        if result.rc is OcfRc.RUNNING_PROMOTED:
            return AvailabilityState.PRIMARY
        if result.rc is OcfRc.SUCCESS:
            promotable = self._component.promotable
            return AvailabilityState.SECONDARY if promotable else AvailabilityState.PRIMARY
        if result.rc is OcfRc.NOT_RUNNING:
            state = self._component.state
            return state if level(state, self._component.promotable) == 0 else None
        return None

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None

    async def _go(self, state: AvailabilityState) -> None:
        current = self._component.state
        steps = [state] if is_legal(current, state) or current is state else [_SPARE, state]
        for step in steps:
            if step is self._component.state:
                continue
            try:
                await self._component.transition(step)
            except OcfAgentError as e:
                reported = self._report_definitive(e)
                message = f"{self.name}: cannot go {current} -> {step}: {e}"
                raise OcfActionFailed(message, reported) from e
            except IllegalTransition as e:
                raise DriverError(f"{self.name}: cannot go {current} -> {step}: {e}") from e
            except HaosError as e:
                raise DriverError(f"{self.name}: {self._component.agent.name}: {e}") from e
        self._reported = False
        if self._monitor is None and self._running():
            self._monitor = self._tasks.create_task(self._watch())

    async def _run(self, action: OcfAction) -> None:
        try:
            result = await self._component.agent.run(action)
        except HaosError as e:
            raise DriverError(f"{self.name}: {action}: {e}") from e
        if not result.ok:
            error = OcfAgentError(self._component.agent.name, result)
            raise OcfActionFailed(f"{self.name}: {error}", self._report_definitive(error))

    def _report_definitive(self, error: OcfAgentError) -> bool:
        """Report a definitive failure (hard error, misconfiguration); True if it was one."""
        report = failed_action(
            self.name, error.result, self._clock(), source=self._component.agent.name
        )
        if report is None:
            return False
        log.error("%s: %s", self.name, report.detail)
        self._reported = True
        self._report(report)
        return True

    def _running(self) -> bool:
        return level(self._component.state, self._component.promotable) > 0

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # the monitor's period
            async with self._lock:
                if not self._running() or self._reported:
                    continue
                try:
                    report = await self._component.check(self._clock())
                except HaosError as e:  # the agent cannot even be run
                    log.error("%s: monitor: %s", self.name, e)
                    continue
                self.monitors += 1
            if report is not None:
                self._reported = True
                log.warning("%s: %s", self.name, report.detail)
                self._report(report)


async def make_ocf_driver(name: str, spec: ManagerSpec, deps: DriverDeps) -> OcfDriver:
    """An :class:`OcfDriver` for ``spec`` (``agent = "ocf:<provider>:<type>"``).

    Reads the agent's meta-data: promotable unless the spec says, the advertised action
    timeouts (stop: ``stop_timeout``) and monitor interval. Raises ConfigError for unknown or
    missing parameters, or promotable = true on an agent that cannot promote.
    """
    _, provider, kind = spec.agent.split(":")
    instance = name.replace("/", "_")  # agents build file names from it
    agent = OcfAgent(provider, kind, spec.params, instance, ocf_root=deps.ocf_root)
    try:
        meta = await agent.check_params()
    except OcfAgentError as e:
        raise DriverError(f"{name}: {spec.agent} gave no meta-data: {e}") from e
    promotable = meta.promotable if spec.promotable is None else spec.promotable
    if promotable and not meta.promotable:
        reason = f"{spec.agent} implements no promote/demote, so it cannot be promotable"
        raise ConfigError([ConfigProblem(name, "manager.promotable", reason)])
    monitor = meta.action("monitor")
    interval = deps.monitor_interval or (monitor.interval if monitor else None)
    agent = OcfAgent(
        provider,
        kind,
        spec.params,
        instance,
        {**_known(meta.default_timeouts()), "stop": spec.stop_timeout},
        promotable=promotable,
        monitor_interval=interval or DEFAULT_MONITOR_INTERVAL,
        ocf_root=deps.ocf_root,
    )
    return OcfDriver(
        OcfComponent(name, agent, promotable=promotable),
        deps.report,
        deps.tasks,
        monitor_interval=agent.monitor_interval,
        clock=deps.clock,
    )


def _known(timeouts: Mapping[str, float]) -> dict[str, float]:
    """The timeouts of the actions haos runs (agents also advertise reload, notify, ...)."""
    actions = {a.value for a in OcfAction}
    return {name: seconds for name, seconds in timeouts.items() if name in actions}
