"""Availability statistics reporter (ASR): notifications in, incidents and figures out.

Pure: no I/O, no clock reads, no logging; ``now`` is passed in, on the same clock as the
notifications' ``at``.

Availability of a service instance over the window ``[start, now]`` is the fraction of that
window in which it was not in an outage. An outage is opened by :class:`ServiceOutage` and
closed by :class:`ServiceRestored`. Notifications may arrive duplicated or out of order; the
recorder never lets incidents of one instance overlap, start before ``start`` or end before
they started, so the total outage never exceeds the elapsed time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from haos.model.reports import (
    Notification,
    RecoveryInitiated,
    ServiceOutage,
    ServiceRestored,
    StateChanged,
)


@dataclass(frozen=True)
class Incident:
    """One outage of one service instance; ``ended`` is None while it lasts."""

    instance: str
    started: float
    ended: float | None
    cause: str = ""
    restored_by: tuple[str, ...] = ()

    def duration(self, now: float) -> float:
        """Seconds of outage up to ``now`` (an open incident counts until ``now``)."""
        end = now if self.ended is None else min(self.ended, now)
        return max(0.0, end - self.started)


@dataclass(frozen=True)
class HistoryEntry:
    """One notification as ``haosctl history`` shows it.

    ``kind`` is ``outage``, ``restored``, ``recovery`` or ``state``; ``subject`` the instance
    or component. Notifications that changed nothing (a duplicate outage, a restore without
    an outage) are kept, with ``ignored`` set, because they help explain what happened.
    """

    at: float
    kind: str
    subject: str
    detail: str
    ignored: bool = False

    def __str__(self) -> str:
        mark = " (ignored)" if self.ignored else ""
        return f"{self.at:.3f} {self.kind:<9} {self.subject}: {self.detail}{mark}"


@dataclass(frozen=True)
class InstanceAvailability:
    """Figures of one service instance over ``[start, now]``.

    ``incidents`` and ``longest_outage`` include an outage still open (counted up to now);
    ``mttr`` (mean time to restore) is the mean duration of the closed incidents, None when
    there is none.
    """

    instance: str
    incidents: int
    outage_total: float
    availability: float
    longest_outage: float
    mttr: float | None
    down: bool


@dataclass(frozen=True)
class AvailabilityReport:
    """Availability of every known instance over ``[start, now]``.

    ``overall`` is the unweighted mean of the instances' availabilities: every instance
    counts the same, whatever its traffic. ``worst`` is the lowest one, ``worst_instance``
    its instance (None, and both figures 1.0, when no instance is known).
    """

    start: float
    now: float
    instances: tuple[InstanceAvailability, ...]
    overall: float
    worst: float
    worst_instance: str | None


def nines(a: float) -> float:
    """Number of nines of availability ``a``: ``-log10(1 - a)``; ``inf`` for ``a == 1``.

    Raises ValueError unless ``0 <= a <= 1``.
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"availability must be within [0, 1], not {a!r}")
    if a == 1.0:
        return math.inf
    return -math.log10(1.0 - a)


def format_nines(n: float) -> str:
    """``nines()`` for a table: two decimals, ``∞`` for a perfect record."""
    return "∞" if math.isinf(n) else f"{n:.2f}"


def format_percent(a: float) -> str:
    """Availability as a percentage with four decimals, rounded down.

    Rounding down keeps ``100.0000`` for a perfect record only: 99.99999 % shows as
    ``99.9999``, not as a misleading ``100.0000``.
    """
    return f"{math.floor(a * 1_000_000) / 10_000:.4f}"


class AvailabilityRecorder:
    """Turns availability-manager notifications into incidents, history and reports.

    Every closed incident is kept (one small record per outage) so reports are exact for any
    ``now``; the history keeps the last ``history_size`` entries. Instances first seen in a
    notification are added then, and measured over the same window as the others.
    """

    def __init__(self, instances: Iterable[str], start: float, history_size: int = 1000) -> None:
        self._start = start
        self._closed: dict[str, list[Incident]] = {name: [] for name in instances}
        self._open: dict[str, Incident] = {}
        self._history: deque[HistoryEntry] = deque(maxlen=history_size)

    def record(self, note: Notification) -> None:
        """Take one notification (in any order, possibly duplicated)."""
        match note:
            case ServiceOutage():
                self._outage(note)
            case ServiceRestored():
                self._restored(note)
            case RecoveryInitiated():
                detail = f"{note.level}" + (f": {note.reason}" if note.reason else "")
                self._log(note.at, "recovery", note.component, detail)
            case StateChanged():
                self._log(note.at, "state", note.component, f"{note.old} -> {note.new}")

    def incidents(self, instance: str | None = None) -> list[Incident]:
        """Incidents, closed ones first in order then open ones; of one instance if named."""
        names = list(self._closed) if instance is None else [instance]
        found = [i for name in names for i in self._closed.get(name, [])]
        found += [i for name in names if (i := self._open.get(name)) is not None]
        return found

    def history(self, limit: int = 20) -> list[HistoryEntry]:
        """The last ``limit`` history entries, oldest first."""
        if limit <= 0:
            return []
        return list(self._history)[-limit:]

    def report(self, now: float) -> AvailabilityReport:
        """Figures of every instance over ``[start, now]``."""
        rows = tuple(self._figures(name, now) for name in self._closed)
        if not rows:
            return AvailabilityReport(self._start, now, (), 1.0, 1.0, None)
        worst = min(rows, key=lambda r: r.availability)
        overall = math.fsum(r.availability for r in rows) / len(rows)
        return AvailabilityReport(
            self._start, now, rows, overall, worst.availability, worst.instance
        )

    # --- internals ------------------------------------------------------------------------

    def _outage(self, note: ServiceOutage) -> None:
        closed = self._closed.setdefault(note.instance, [])
        if note.instance in self._open:
            self._log(note.at, "outage", note.instance, "already in an outage", ignored=True)
            return
        # Clamp so incidents never overlap or precede the window: a late-delivered outage
        # must not count the same seconds twice.
        floor = self._start
        if closed and closed[-1].ended is not None:
            floor = max(floor, closed[-1].ended)
        started = max(note.at, floor)
        self._open[note.instance] = Incident(note.instance, started, None, note.cause)
        self._log(note.at, "outage", note.instance, note.cause or "out of service")

    def _restored(self, note: ServiceRestored) -> None:
        self._closed.setdefault(note.instance, [])
        incident = self._open.pop(note.instance, None)
        if incident is None:
            self._log(note.at, "restored", note.instance, "no outage open", ignored=True)
            return
        ended = max(note.at, incident.started)
        self._closed[note.instance].append(
            Incident(note.instance, incident.started, ended, incident.cause, note.by)
        )
        by = ", ".join(note.by) if note.by else "unknown"
        detail = f"after {ended - incident.started:.3f}s, by {by}"
        self._log(note.at, "restored", note.instance, detail)

    def _log(self, at: float, kind: str, subject: str, detail: str, ignored: bool = False) -> None:
        self._history.append(HistoryEntry(at, kind, subject, detail, ignored))

    def _figures(self, instance: str, now: float) -> InstanceAvailability:
        closed = self._closed[instance]
        current = self._open.get(instance)
        everything = closed + ([current] if current is not None else [])
        durations = [i.duration(now) for i in everything]
        total = math.fsum(durations)
        elapsed = max(0.0, now - self._start)
        # Clamped because float sums may overshoot by an ulp.
        availability = 1.0 if elapsed == 0.0 else min(1.0, max(0.0, 1.0 - total / elapsed))
        closed_durations = durations[: len(closed)]
        return InstanceAvailability(
            instance=instance,
            incidents=len(everything),
            outage_total=total,
            availability=availability,
            longest_outage=max(durations, default=0.0),
            mttr=math.fsum(closed_durations) / len(closed) if closed else None,
            down=current is not None,
        )


def render_table(report: AvailabilityReport) -> str:
    """A fixed-width text table of ``report``, one row per instance plus an overall line.

    A ``*`` after the incident count marks an instance that is down now.
    """
    width = max([len("instance"), *(len(r.instance) for r in report.instances)])
    header = f"{'instance':<{width}}  {'incidents':>9}  {'outage s':>12}  {'avail %':>8}  nines"
    lines = [header, "-" * len(header)]
    for r in report.instances:
        count = f"{r.incidents}{'*' if r.down else ' '}"
        lines.append(
            f"{r.instance:<{width}}  {count:>9}  {r.outage_total:>12.3f}"
            f"  {format_percent(r.availability):>8}  {format_nines(nines(r.availability)):>5}"
        )
    lines.append("-" * len(header))
    worst = (
        f"; worst {report.worst_instance} {format_percent(report.worst)} %"
        if report.worst_instance is not None
        else ""
    )
    lines.append(
        f"overall (mean of {len(report.instances)} instances over"
        f" {max(0.0, report.now - report.start):.0f}s): {format_percent(report.overall)} %,"
        f" {format_nines(nines(report.overall))} nines{worst}"
    )
    return "\n".join(lines)
