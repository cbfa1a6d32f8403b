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
from typing import Any

from haos.errors import ModelError
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

    def duration(self, now: float, start: float | None = None) -> float:
        """Seconds of outage up to ``now`` (an open incident counts until ``now``), and from
        ``start`` on if given."""
        end = now if self.ended is None else min(self.ended, now)
        begin = self.started if start is None else max(self.started, start)
        return max(0.0, end - begin)


@dataclass(frozen=True)
class Folded:
    """The oldest closed incidents of an instance, summed up to bound what is kept: their
    number, total and longest duration, and when the last of them ended."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    until: float = -math.inf

    def add(self, incident: Incident) -> Folded:
        length = incident.duration(math.inf)
        ended = incident.ended if incident.ended is not None else incident.started
        return Folded(
            self.count + 1, self.total + length, max(self.longest, length), max(self.until, ended)
        )


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

    The last ``max_incidents`` closed incidents of each instance are kept (one small record
    per outage), so reports are exact for any ``now``; older ones are summed up
    (:class:`Folded`), still counted in a report over the whole window. The history keeps the
    last ``history_size`` entries. Instances first seen in a notification are added then, and
    measured over the same window as the others.

    :meth:`to_data` / :meth:`from_data` carry the incidents (not the history) through a
    checkpoint: the availability service stores them with its state, so the figures survive
    the master's fail-over.
    """

    def __init__(
        self,
        instances: Iterable[str],
        start: float,
        history_size: int = 1000,
        max_incidents: int = 1000,
    ) -> None:
        if max_incidents < 1:
            raise ValueError("the recorder keeps at least one incident per instance")
        self._start = start
        self._closed: dict[str, list[Incident]] = {name: [] for name in instances}
        self._open: dict[str, Incident] = {}
        self._folded: dict[str, Folded] = {}
        self._max = max_incidents
        self._history: deque[HistoryEntry] = deque(maxlen=history_size)

    @property
    def start(self) -> float:
        return self._start

    def add_instances(self, names: Iterable[str]) -> None:
        """Measure these instances too (from the recorder's start), if not yet known."""
        for name in names:
            self._closed.setdefault(name, [])

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

    def report(self, now: float, since: float | None = None) -> AvailabilityReport:
        """Figures of every instance over ``[start, now]``, or over ``[since, now]``.

        A window from ``since`` starts no earlier than the recorder's start, nor than the end
        of the incidents summed up (their times are no longer known): the report's ``start``
        says where it began.
        """
        start = self._start
        if since is not None:
            folded_until = max((f.until for f in self._folded.values()), default=start)
            start = max(start, since, folded_until)
        rows = tuple(self._figures(name, now, start, since is None) for name in self._closed)
        if not rows:
            return AvailabilityReport(start, now, (), 1.0, 1.0, None)
        worst = min(rows, key=lambda r: r.availability)
        overall = math.fsum(r.availability for r in rows) / len(rows)
        return AvailabilityReport(start, now, rows, overall, worst.availability, worst.instance)

    def to_data(self) -> dict[str, Any]:
        """The incidents as JSON-ready data (see :meth:`from_data`)."""
        instances: dict[str, Any] = {}
        for name, closed in self._closed.items():
            current = self._open.get(name)
            folded = self._folded.get(name)
            instances[name] = {
                "closed": [[i.started, i.ended, i.cause, list(i.restored_by)] for i in closed],
                "open": None if current is None else [current.started, current.cause],
                "folded": None
                if folded is None
                else [folded.count, folded.total, folded.longest, folded.until],
            }
        return {"start": self._start, "max_incidents": self._max, "instances": instances}

    @classmethod
    def from_data(cls, data: object, history_size: int = 1000) -> AvailabilityRecorder:
        """A recorder holding what :meth:`to_data` gave; ModelError naming what is wrong."""
        try:
            assert isinstance(data, dict), "not an object"
            rec = cls((), _number(data["start"]), history_size, int(data["max_incidents"]))
            for name, raw in dict(data["instances"]).items():
                rec._restore(str(name), raw)
        except (AssertionError, KeyError, TypeError, ValueError) as e:
            raise ModelError(f"availability records are malformed: {e!r}") from None
        return rec

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
        self._fold(note.instance)
        by = ", ".join(note.by) if note.by else "unknown"
        detail = f"after {ended - incident.started:.3f}s, by {by}"
        self._log(note.at, "restored", note.instance, detail)

    def _log(self, at: float, kind: str, subject: str, detail: str, ignored: bool = False) -> None:
        self._history.append(HistoryEntry(at, kind, subject, detail, ignored))

    def _fold(self, instance: str) -> None:
        closed = self._closed[instance]
        while len(closed) > self._max:
            self._folded[instance] = self._folded.get(instance, Folded()).add(closed.pop(0))

    def _restore(self, name: str, raw: Any) -> None:
        closed = [
            Incident(name, _number(s), _number(e), str(c), tuple(str(b) for b in by))
            for s, e, c, by in raw["closed"]
        ]
        self._closed[name] = closed
        if raw["open"] is not None:
            started, cause = raw["open"]
            self._open[name] = Incident(name, _number(started), None, str(cause))
        if raw["folded"] is not None:
            count, total, longest, until = raw["folded"]
            self._folded[name] = Folded(
                int(count), _number(total), _number(longest), _number(until)
            )

    def _figures(
        self, instance: str, now: float, start: float, whole: bool
    ) -> InstanceAvailability:
        closed = self._closed[instance]
        current = self._open.get(instance)
        if not whole:  # only what overlaps [start, now]
            closed = [i for i in closed if i.ended is None or i.ended >= start]
        folded = self._folded.get(instance, Folded()) if whole else Folded()
        everything = closed + ([current] if current is not None else [])
        durations = [i.duration(now, start) for i in everything]
        total = math.fsum([folded.total, *durations])
        elapsed = max(0.0, now - start)
        # Clamped because float sums may overshoot by an ulp.
        availability = 1.0 if elapsed == 0.0 else min(1.0, max(0.0, 1.0 - total / elapsed))
        closed_count = len(closed) + folded.count
        closed_total = math.fsum([folded.total, *durations[: len(closed)]])
        return InstanceAvailability(
            instance=instance,
            incidents=len(everything) + folded.count,
            outage_total=total,
            availability=availability,
            longest_outage=max([folded.longest, *durations], default=0.0),
            mttr=closed_total / closed_count if closed_count else None,
            down=current is not None,
        )


def _number(value: object) -> float:
    """A finite number read from stored data; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


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


MAX_LISTED = 100  # incidents per instance that report_json lists (the newest)


def report_json(recorder: AvailabilityRecorder, now: float, since: float | None = None) -> Any:
    """The report over ``[since or start, now]`` as JSON-ready data, times in milliseconds.

    Per instance: its figures (``nines`` is None for a perfect record: infinitely many) and
    its newest incidents in the window (at most :data:`MAX_LISTED`).
    """
    report = recorder.report(now, since)
    rows = []
    for r in report.instances:
        listed = [
            {
                "started": i.started,
                "ended": i.ended,
                "outage_ms": i.duration(now, report.start) * 1000.0,
                "cause": i.cause,
                "restored_by": list(i.restored_by),
            }
            for i in recorder.incidents(r.instance)
            if i.ended is None or i.ended >= report.start
        ][-MAX_LISTED:]
        n = nines(r.availability)
        rows.append(
            {
                "instance": r.instance,
                "incidents": r.incidents,
                "outage_ms": r.outage_total * 1000.0,
                "availability": r.availability,
                "nines": None if math.isinf(n) else n,
                "longest_ms": r.longest_outage * 1000.0,
                "mttr_ms": None if r.mttr is None else r.mttr * 1000.0,
                "down": r.down,
                "recent": listed,
            }
        )
    overall = nines(report.overall)
    return {
        "start": report.start,
        "now": report.now,
        "overall": report.overall,
        "overall_nines": None if math.isinf(overall) else overall,
        "worst_instance": report.worst_instance,
        "instances": rows,
    }
