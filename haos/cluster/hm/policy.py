"""Audit scheduling policy of the health monitor (HM).

Pure: no I/O, no clock reads, no logging. The caller passes ``now`` from one monotonic clock,
never decreasing. A typical round of the HM loop is::

    reports = monitor.tick(now)        # overdue audits -> error reports for the CEC
    for spec in monitor.due(now):      # start these audits (results come back later)
        runner.start(spec)
    if monitor.healthy_this_round(now):
        watchdog.pet()
    sleep_until(monitor.next_deadline())

and each audit's outcome is fed back with :meth:`AuditMonitor.result`.

Timing rules (``period`` and ``timeout`` from :class:`~haos.config.model.AuditSpec`):

* An audit is first due when it is registered (or, for audits given to the constructor, at
  the first call that passes ``now``), then ``period`` after the start of its previous run.
* A run started at ``s`` is answered in time when its result arrives at ``now < s + timeout``.
  At ``s + timeout`` it is overdue: one AUDIT_OVERDUE report with ``observed_at = s + timeout``.
* A run due at ``n`` that has not been started by ``n + timeout`` is overdue as well (the audit
  runner itself stalled): a stuck monitor must not hide a stuck component.
* After an overdue report the audit is re-armed for its next period, so one missed run gives
  one report, however late or often :meth:`AuditMonitor.tick` is called.

Expiry is judged by every call that passes ``now`` (not only :meth:`~AuditMonitor.tick`), so
the order of calls within a round cannot hide a missed deadline; the reports it produces are
handed out by the next :meth:`~AuditMonitor.tick`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypedDict

from haos.config.model import AuditSpec
from haos.errors import ModelError
from haos.model.reports import ErrorKind, ErrorReport

SOURCE = "hm"

Outcome = Literal["ok", "failed", "overdue"]


class AuditStatus(TypedDict):
    """One audit's row of :meth:`AuditMonitor.status`.

    ``last_ok`` is None before the first outcome; an overdue run counts as not ok.
    ``last_result_at`` is when the last outcome was decided: the result's arrival, or for an
    overdue run the deadline it missed. ``consecutive_failures`` counts failed and overdue
    runs since the last passing one.
    """

    component: str
    name: str
    last_ok: bool | None
    last_outcome: Outcome | None
    last_result_at: float | None
    consecutive_failures: int
    suspended: bool


@dataclass(slots=True)
class _Audit:
    spec: AuditSpec
    next_due: float | None  # None: given to the constructor, scheduled by the first call
    started: float | None = None  # start of the run in flight
    overdue: bool = False  # latest run went overdue and no later run has completed since
    last_outcome: Outcome | None = None
    last_result_at: float | None = None
    consecutive_failures: int = 0

    def deadline(self) -> float | None:
        """When the current run (or the run waiting to be started) becomes overdue."""
        if self.started is not None:
            return self.started + self.spec.timeout
        if self.next_due is not None:
            return self.next_due + self.spec.timeout
        return None

    def settle(self, outcome: Outcome, at: float) -> None:
        self.last_outcome = outcome
        self.last_result_at = at
        self.overdue = outcome == "overdue"
        self.consecutive_failures = 0 if outcome == "ok" else self.consecutive_failures + 1


def check_spec(spec: AuditSpec) -> None:
    """Raise :class:`~haos.errors.ModelError` unless period and timeout are positive."""
    for field in ("period", "timeout"):
        value: float = getattr(spec, field)
        if not (math.isfinite(value) and value > 0):
            raise ModelError(
                f"audit {spec.component}/{spec.name}: {field} must be a positive number,"
                f" not {value!r}"
            )


class AuditMonitor:
    """Decides which audits run when, and which outcomes become error reports.

    Audits are keyed by ``(component, name)``. Registering a key again replaces the audit and
    restarts its schedule (a run in flight is forgotten).
    """

    def __init__(self, specs: Iterable[AuditSpec] = ()) -> None:
        self._audits: dict[tuple[str, str], _Audit] = {}
        self._suspended: set[str] = set()
        self._pending: list[ErrorReport] = []
        for spec in specs:
            check_spec(spec)
            self._audits[(spec.component, spec.name)] = _Audit(spec, next_due=None)

    # --- registration ---------------------------------------------------------------------

    def register(self, spec: AuditSpec, now: float) -> None:
        """Add (or replace) an audit; its first run is due at ``now``.

        Raises :class:`~haos.errors.ModelError` unless period and timeout are positive.
        """
        check_spec(spec)
        self._audits[(spec.component, spec.name)] = _Audit(spec, next_due=now)

    def unregister(self, component: str, name: str | None = None) -> None:
        """Forget one audit of ``component``, or all of them when ``name`` is None.

        Unknown names are ignored. Reports already produced are still handed out by tick().
        """
        if name is not None:
            self._audits.pop((component, name), None)
            return
        for key in [k for k in self._audits if k[0] == component]:
            del self._audits[key]

    # --- the round ------------------------------------------------------------------------

    def due(self, now: float) -> list[AuditSpec]:
        """Audits to start now; each is marked started at ``now``.

        A started audit is not returned again until its result arrives or it goes overdue.
        """
        self._expire(now)
        started: list[AuditSpec] = []
        for audit in self._active():
            if audit.started is None and audit.next_due is not None and audit.next_due <= now:
                audit.started = now
                started.append(audit.spec)
        return started

    def result(
        self, component: str, name: str, ok: bool, now: float, detail: str = ""
    ) -> list[ErrorReport]:
        """Take the outcome of the run in flight; a failure becomes an AUDIT_FAILED report.

        Ignored (returns ``[]``) when the audit is unknown, not running (never started,
        suspended, or already reported overdue) or when the result comes at or after the
        run's deadline: that run is then reported overdue by tick() instead. A result carries
        no run identity, so the runner must drop a run once it has gone overdue.
        """
        self._expire(now)
        audit = self._audits.get((component, name))
        if audit is None or audit.started is None or component in self._suspended:
            return []
        audit.next_due = audit.started + audit.spec.period
        audit.started = None
        if ok:
            audit.settle("ok", now)
            return []
        audit.settle("failed", now)
        text = f"audit {name} failed: {detail}" if detail else f"audit {name} failed"
        return [
            ErrorReport(
                component=component,
                kind=ErrorKind.AUDIT_FAILED,
                observed_at=now,
                source=SOURCE,
                detail=text,
            )
        ]

    def tick(self, now: float) -> list[ErrorReport]:
        """AUDIT_OVERDUE reports for every run that missed its deadline, oldest first."""
        self._expire(now)
        reports = sorted(self._pending, key=lambda r: r.observed_at)
        self._pending = []
        return reports

    def next_deadline(self) -> float | None:
        """Earliest time something needs doing: a run becomes due or a run in flight expires.

        None when no audit is active. ``-inf`` when an audit given to the constructor has
        not been scheduled yet (it is due at once).
        """
        times: list[float] = []
        for audit in self._active():
            if audit.started is not None:
                times.append(audit.started + audit.spec.timeout)
            elif audit.next_due is None:
                times.append(-math.inf)
            else:
                times.append(audit.next_due)
        return min(times, default=None)

    # --- recovery -------------------------------------------------------------------------

    def suspend(self, component: str) -> None:
        """Stop auditing ``component`` (it is being recovered); runs in flight are dropped.

        Applies to audits registered later too, until resume().
        """
        self._suspended.add(component)
        for audit in self._of(component):
            audit.started = None

    def resume(self, component: str, now: float) -> None:
        """Audit ``component`` again, first at ``now``. A no-op unless it was suspended.

        An overdue run from before the recovery no longer counts against the round.
        """
        if component not in self._suspended:
            return
        self._suspended.discard(component)
        for audit in self._of(component):
            audit.next_due = now
            audit.started = None
            audit.overdue = False

    # --- queries --------------------------------------------------------------------------

    def overdue(self, now: float) -> list[tuple[str, str]]:
        """``(component, name)`` of active audits that are overdue at ``now``.

        That is: the run in flight or waiting to start has missed its deadline, or the latest
        run went overdue and no run has completed in time since.
        """
        late: list[tuple[str, str]] = []
        for audit in self._active():
            deadline = audit.deadline()
            if audit.overdue or (deadline is not None and now >= deadline):
                late.append((audit.spec.component, audit.spec.name))
        return late

    def healthy_this_round(self, now: float) -> bool:
        """True when no active audit is overdue: the condition for petting the watchdog.

        A failed audit still counts as healthy here (it completed within its bounds and was
        reported); a missing answer does not, until a later run of that audit completes in
        time or its component is suspended or unregistered.
        """
        return not self.overdue(now)

    def status(self) -> list[AuditStatus]:
        """One row per registered audit, in registration order."""
        return [
            AuditStatus(
                component=a.spec.component,
                name=a.spec.name,
                last_ok=None if a.last_outcome is None else a.last_outcome == "ok",
                last_outcome=a.last_outcome,
                last_result_at=a.last_result_at,
                consecutive_failures=a.consecutive_failures,
                suspended=a.spec.component in self._suspended,
            )
            for a in self._audits.values()
        ]

    # --- internals ------------------------------------------------------------------------

    def _active(self) -> Iterator[_Audit]:
        return (a for a in self._audits.values() if a.spec.component not in self._suspended)

    def _of(self, component: str) -> Iterator[_Audit]:
        return (a for a in self._audits.values() if a.spec.component == component)

    def _expire(self, now: float) -> None:
        """Schedule unscheduled audits and turn missed deadlines into pending reports."""
        for audit in self._active():
            if audit.next_due is None:
                audit.next_due = now
                continue
            deadline = audit.deadline()
            if deadline is None or now < deadline:
                continue
            spec = audit.spec
            if audit.started is not None:
                detail = (
                    f"audit {spec.name} gave no result within {spec.timeout:g}s"
                    f" of its start at {audit.started:.3f}"
                )
                rearm = audit.started + spec.period
            else:
                detail = (
                    f"audit {spec.name} was not started within {spec.timeout:g}s"
                    f" of its due time {audit.next_due:.3f} (audit runner stalled)"
                )
                rearm = audit.next_due + spec.period
            # Re-arm from now at the earliest, so a late tick does not report the same
            # missed run again as a stall.
            audit.next_due = max(rearm, now)
            audit.started = None
            audit.settle("overdue", deadline)
            self._pending.append(
                ErrorReport(
                    component=spec.component,
                    kind=ErrorKind.AUDIT_OVERDUE,
                    observed_at=deadline,
                    source=SOURCE,
                    detail=detail,
                )
            )
