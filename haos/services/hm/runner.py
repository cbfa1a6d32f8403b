"""The audit runner: an asyncio loop around the pure :class:`AuditMonitor`.

One round: hand overdue reports on (``tick``), drop runs that missed their deadline, start
what is due. Then sleep until the monitor's next deadline, or until woken early because the
set of audits or a run's outcome changed the schedule. Each run is a task in the runner's
TaskGroup; its outcome is given to the monitor only while that very run is still current
and in time (the monitor cannot tell runs apart, see :meth:`AuditMonitor.result`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from haos.clock import Clock
from haos.cluster.hm.policy import AuditMonitor, check_spec
from haos.config.model import AuditSpec
from haos.errors import ModelError, UsageError
from haos.model.reports import ErrorReport
from haos.services.hm.probes import Probe

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (component, audit name)


@dataclass(eq=False)
class _Run:
    """One run of one audit; identity (``is``) tells a current run from a dropped one."""

    spec: AuditSpec
    started: float
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def deadline(self) -> float:
        return self.started + self.spec.timeout


class AuditRunner:
    """Runs the audits ``monitor`` schedules with ``probes`` (by ``AuditSpec.kind``).

    Error reports -- AUDIT_FAILED from a run's result, AUDIT_OVERDUE from ``tick`` -- go to
    ``report`` as they arise. An exception from ``report`` ends :meth:`run`.
    Register audits through this class (not the monitor directly) so the loop wakes up.

    ``on_round`` is called at the end of every completed round: it is the HM's proof of life
    (the node agent's watchdog gate waits for it). With ``beat`` the runner makes a round at
    least every ``beat`` seconds, also when no audit is due or none is configured, so that
    proof keeps coming while the runner is sound. A run that fails or misses its deadline is an
    error report, never a missing round: only a runner that cannot get round stops it.
    """

    def __init__(
        self,
        monitor: AuditMonitor,
        probes: Mapping[str, Probe],
        report: Callable[[ErrorReport], None],
        clock: Clock,
        *,
        beat: float | None = None,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        if beat is not None and not beat > 0:
            raise UsageError(f"the audit runner's beat must be positive, not {beat!r}")
        self._monitor = monitor
        self._probes = dict(probes)
        self._report = report
        self._clock = clock
        self._beat = beat
        self._on_round = on_round
        self._wake = asyncio.Event()
        self._runs: dict[Key, _Run] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.rounds = 0  # completed rounds, for status and tests

    @property
    def in_flight(self) -> list[Key]:
        """Audits with a run in progress."""
        return list(self._runs)

    # --- registration (from the client library or the configuration) ---------------------

    def check(self, spec: AuditSpec) -> None:
        """Raise ModelError unless :meth:`register` would take ``spec``: an unknown kind, a
        target its probe can never run, a non-positive period or timeout. No side effects."""
        probe = self._probes.get(spec.kind)
        if probe is None:
            raise ModelError(
                f"audit {spec.component}/{spec.name}: unknown kind {spec.kind!r}"
                f" (known: {', '.join(sorted(self._probes))})"
            )
        probe.check(spec)
        check_spec(spec)

    def register(self, spec: AuditSpec) -> None:
        """Add or replace an audit; its first run is due now.

        Raises ModelError as :meth:`check` does; nothing is registered then.
        """
        self.check(spec)
        self._monitor.register(spec, self._clock.now())
        self._drop((spec.component, spec.name))
        self._wake.set()

    def unregister(self, component: str, name: str | None = None) -> None:
        """Forget one audit of ``component`` or all of them; runs in flight are cancelled."""
        self._monitor.unregister(component, name)
        self._drop_where(lambda key: key[0] == component and name in (None, key[1]))
        self._wake.set()

    def suspend(self, component: str) -> None:
        """Stop auditing ``component`` while it is recovered; runs in flight are cancelled."""
        self._monitor.suspend(component)
        self._drop_where(lambda key: key[0] == component)
        self._wake.set()

    def resume(self, component: str) -> None:
        """Audit ``component`` again, first run now."""
        self._monitor.resume(component, self._clock.now())
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run audits until cancelled; runs in flight are cancelled (and cleaned up) then."""
        if self._tg is not None:
            raise UsageError("the audit runner is already running")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                while True:
                    self._round()
                    if self._on_round is not None:
                        self._on_round()
                    await self._clock.wait(self._wake, self._next_wake())
        finally:
            self._tg = None
            self._runs.clear()

    def _next_wake(self) -> float | None:
        deadline = self._monitor.next_deadline()
        if self._beat is None:
            return deadline
        beat = self._clock.now() + self._beat
        return beat if deadline is None else min(deadline, beat)

    def _round(self) -> None:
        self._wake.clear()  # anything that changes the schedule from now on wakes us again
        now = self._clock.now()
        for report in self._monitor.tick(now):
            log.warning("%s: %s", report.component, report.detail)
            self._report(report)
        self._drop_where(lambda key: now >= self._runs[key].deadline)
        for spec in self._monitor.due(now):
            self._start(spec, now)
        self.rounds += 1

    def _start(self, spec: AuditSpec, now: float) -> None:
        assert self._tg is not None
        key = (spec.component, spec.name)
        self._drop(key)
        run = _Run(spec, now)
        self._runs[key] = run
        run.task = self._tg.create_task(self._one(run), name=f"audit {key[0]}/{key[1]}")

    async def _one(self, run: _Run) -> None:
        spec = run.spec
        ok, detail = await self._probe(spec)
        key = (spec.component, spec.name)
        if self._runs.get(key) is not run:
            return  # dropped meanwhile: replaced, suspended or overdue
        del self._runs[key]
        now = self._clock.now()
        if now >= run.deadline:
            self._wake.set()  # late: the monitor reports it overdue on the next round
            return
        for report in self._monitor.result(spec.component, spec.name, ok, now, detail):
            log.warning("%s: %s", report.component, report.detail)
            self._report(report)
        self._wake.set()  # the next run's due time moved to started + period

    async def _probe(self, spec: AuditSpec) -> tuple[bool, str]:
        probe = self._probes.get(spec.kind)
        if probe is None:
            return False, f"no probe for audit kind {spec.kind!r}"
        try:
            return await probe.run(spec)
        except Exception as e:  # a broken audit is a failed audit, not a broken HM
            log.debug("audit %s/%s raised", spec.component, spec.name, exc_info=True)
            return False, f"{type(e).__name__}: {e}"

    def _drop(self, key: Key) -> None:
        run = self._runs.pop(key, None)
        if run is not None and run.task is not None:
            run.task.cancel()

    def _drop_where(self, predicate: Callable[[Key], bool]) -> None:
        for key in [k for k in self._runs if predicate(k)]:
            self._drop(key)
