"""The component error correlator (CEC): decides what each error report means for the CRIM.

The CEC sits between the error reporters (health monitor, component managers) and the CRIM.
For every report it decides one :class:`Verdict`, applying these rules in order:

1. **Stale** → DISCARD. Reports keep arriving for a while after recovery has begun; one whose
   cause was observed at or before the start of a recovery of its component, or of a
   component containing it, is already being dealt with. Acting on it again would escalate
   prematurely.
2. **Redundant** → DISCARD. The same kind of report about the same component was already
   forwarded or held within ``duplicate_window``; or the report is about a child of a
   container that was blamed for its children within ``container_window``.
3. **Re-attribution** → REATTRIBUTE. Reports about at least ``container_threshold`` distinct
   children of one container within ``container_window`` point at the container: one report
   about the container is forwarded instead (kind: the children's common kind, else ERROR;
   recommended: the highest of their minimum levels) and the held children's reports are
   dropped. To give the other children's reports time to arrive, a report whose component
   has a container is first HELD for ``hold_time`` and then forwarded as is (rules 4-5) by
   :meth:`Correlator.tick`.
4. **Escalation** → ESCALATE. When ``escalate_count - 1`` reports about the component were
   already forwarded within ``escalate_window``, the recommendation is raised one level
   above both its own minimum and the previous recommendations (at most REBOOT_NODE).
5. Otherwise → FORWARD unchanged.

A definitive report (a hard error or a misconfiguration: the component would fail the same
way however often it is restarted, see :attr:`ErrorKind.definitive`) passes rules 1-2 and is
then forwarded at once, unchanged: it is a verdict on the component itself, so it is never
held, never blamed on its container (rebooting a node does not install a missing program)
and never escalated.

Latency trade-off: holding delays every report about a contained component by
``hold_time`` (50 ms by default) — a crash included, since the crash of one app may be the
first sign of its node going down. That bounded delay buys one container recovery instead
of a burst of child recoveries racing the container's failure. ``hold_time == 0`` forwards
at once (re-attribution then still catches children reporting after one was forwarded);
``container_threshold <= 1`` turns re-attribution, and with it holding, off.

The correlator is pure: no I/O, no clock reads, no logging. Time comes in as ``now``; the
caller calls :meth:`Correlator.tick` at :meth:`Correlator.next_deadline` and logs each
:attr:`Correlation.reason`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from haos.cluster.cec.history import Held, History, Seen
from haos.config.model import CorrelationPolicy
from haos.model.names import ancestors_of, is_within, parent_of
from haos.model.reports import ErrorKind, ErrorReport, RecoveryInitiated, RecoveryLevel


class Verdict(enum.Enum):
    FORWARD = "forward"  # passed on unchanged
    REATTRIBUTE = "reattribute"  # replaced by one report about the container
    ESCALATE = "escalate"  # passed on with a more radical recommended recovery
    HOLD = "hold"  # kept back for now; a later call decides it
    DISCARD = "discard"  # stale or redundant; never reaches the CRIM


@dataclass(frozen=True)
class Correlation:
    """One decision of the CEC.

    ``reports`` go to the CRIM now (empty for HOLD and DISCARD). ``settles`` are the incoming
    reports this decision finally disposes of — the report itself, or for REATTRIBUTE every
    held child report folded into the container's report; each report given to
    :meth:`Correlator.report` appears in exactly one ``settles``, and never for HOLD.
    ``reason`` names the component and why, for the log and the tests.
    """

    verdict: Verdict
    reports: tuple[ErrorReport, ...]
    reason: str
    settles: tuple[ErrorReport, ...] = ()


def _discard(report: ErrorReport, why: str) -> Correlation:
    return Correlation(Verdict.DISCARD, (), f"discarded: {why}", (report,))


def _about(report: ErrorReport) -> str:
    return f"{report.kind} of {report.component}"


def _children(container: str, evidence: Sequence[ErrorReport]) -> str:
    names = sorted({r.component for r in evidence})
    return f"{len(names)} children of {container} ({', '.join(names)})"


def _blame(container: str, evidence: Sequence[ErrorReport]) -> ErrorReport:
    """The one report about ``container`` that stands for reports about its children.

    Its cause is the earliest child's; its kind is the children's if they agree, else ERROR;
    it recommends the most radical of the children's minimum levels.
    """
    kinds = {r.kind for r in evidence}
    return ErrorReport(
        component=container,
        kind=kinds.pop() if len(kinds) == 1 else ErrorKind.ERROR,
        observed_at=min(r.observed_at for r in evidence),
        source="cec",
        detail=f"re-attributed from {_children(container, evidence)}",
        recommended=max(r.minimum_level() for r in evidence),
    )


class Correlator:
    """The stateful CEC. All state is plain data in a :class:`History`.

    ``container_of`` says which component a component's errors may be re-attributed to, or
    None when there is none (default: its parent in the containment tree). Staleness always
    follows the containment tree by name: recovering a component recovers its subtree.
    """

    def __init__(
        self,
        policy: CorrelationPolicy,
        container_of: Callable[[str], str | None] = parent_of,
    ) -> None:
        self._policy = policy
        self._container_of = container_of
        self._h = History()

    @property
    def policy(self) -> CorrelationPolicy:
        return self._policy

    def held(self) -> tuple[ErrorReport, ...]:
        """Reports held and not yet decided, in release order."""
        return tuple(h.report for h in sorted(self._h.held, key=lambda h: (h.deadline, h.seq)))

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called to release held reports; None if none held."""
        return min((h.deadline for h in self._h.held), default=None)

    # --- events -------------------------------------------------------------------------

    def report(self, report: ErrorReport, now: float) -> Correlation:
        """Decide a new report that arrived at ``now``."""
        self._h.prune(now, self._policy)
        stale = self._stale(report)
        if stale is not None:
            return _discard(report, stale)
        key = (report.component, report.kind)
        seen_at = self._h.last_seen.get(key)
        if seen_at is not None:
            return _discard(
                report,
                f"redundant, {_about(report)} already reported at {seen_at:.3f} "
                f"(within the {self._policy.duplicate_window:.3f} s duplicate window)",
            )
        container = self._container(report.component)
        if report.kind.definitive:
            self._h.last_seen[key] = now
            return Correlation(
                Verdict.FORWARD,
                (report,),
                f"forwarded: {_about(report)} at once, a definitive error (no hold, "
                "re-attribution or escalation)",
                (report,),
            )
        if container is None:
            self._h.last_seen[key] = now
            return self._forward(report, now, None, now, "")
        return self._correlate(report, container, now)

    def recovery_started(self, note: RecoveryInitiated) -> None:
        """The CRIM started recovering ``note.component`` at ``note.at``.

        From now on, reports about that component or its subtree observed at or before
        ``note.at`` are stale — including reports already held.
        """
        recoveries = self._h.recoveries
        for name in (note.component, *ancestors_of(note.component)):
            at = recoveries.get(name)
            if at is not None and at >= note.at:
                return  # an equal or later recovery of it or a container already covers this
        for name, at in list(recoveries.items()):
            if is_within(name, note.component) and at <= note.at:
                del recoveries[name]
        recoveries[note.component] = note.at
        # A report observed after the recovery began is fresh evidence (the recovery may have
        # failed), not a duplicate of the reports that led to it: forget those for dedup.
        if note.level >= RecoveryLevel.FAILOVER:
            # The unit was taken out of service: its past reports no longer call for escalation.
            for name in [c for c in self._h.forwarded if is_within(c, note.component)]:
                del self._h.forwarded[name]
        self._h.last_seen = {
            key: t for key, t in self._h.last_seen.items() if not is_within(key[0], note.component)
        }

    def tick(self, now: float) -> list[Correlation]:
        """Decide the held reports whose hold expired by ``now``, in order; prune history."""
        self._h.prune(now, self._policy)
        due = sorted(
            (h for h in self._h.held if h.deadline <= now), key=lambda h: (h.deadline, h.seq)
        )
        self._h.held = [h for h in self._h.held if h.deadline > now]
        return [self._release(h, now) for h in due]

    # --- snapshot -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-safe data (the policy is config and not included)."""
        return self._h.to_dict()

    @classmethod
    def from_snapshot(
        cls,
        policy: CorrelationPolicy,
        data: Mapping[str, Any],
        container_of: Callable[[str], str | None] = parent_of,
    ) -> Correlator:
        """A correlator continuing from :meth:`snapshot`; ModelError if ``data`` is malformed."""
        correlator = cls(policy, container_of)
        correlator._h = History.from_dict(data)
        return correlator

    # --- rules --------------------------------------------------------------------------

    def _stale(self, report: ErrorReport) -> str | None:
        """Why ``report`` is stale, or None: the latest recovery covering its cause."""
        latest: tuple[str, float] | None = None
        for name in (report.component, *ancestors_of(report.component)):
            at = self._h.recoveries.get(name)
            if at is not None and report.observed_at <= at and (latest is None or at > latest[1]):
                latest = (name, at)
        if latest is None:
            return None
        name, at = latest
        where = name if name == report.component else f"{name} (containing {report.component})"
        return (
            f"stale, recovery of {where} started at {at:.3f} "
            f"after the cause at {report.observed_at:.3f}"
        )

    def _container(self, component: str) -> str | None:
        """The container to correlate ``component`` under, or None when re-attribution is off."""
        if self._policy.container_threshold <= 1:
            return None
        container = self._container_of(component)
        return None if container == component else container

    def _correlate(self, report: ErrorReport, container: str, now: float) -> Correlation:
        """Rule 3 for a report about a child of ``container``: blame the container, or hold."""
        policy = self._policy
        blamed_at = self._h.blamed.get(container)
        if blamed_at is not None:
            return _discard(
                report,
                f"redundant, {container} was blamed at {blamed_at:.3f} for reports about its "
                f"children, {report.component} among them",
            )
        self._h.last_seen[(report.component, report.kind)] = now
        held = [
            h
            for h in self._h.held
            if h.container == container
            and now - h.arrived <= policy.container_window
            and self._stale(h.report) is None
        ]
        seen = [
            s.report for s in self._h.children.get(container, ()) if self._stale(s.report) is None
        ]
        children = {r.component for r in seen} | {h.report.component for h in held}
        children.add(report.component)
        if len(children) >= policy.container_threshold:
            return self._reattribute(container, seen, held, report, now)
        if policy.hold_time <= 0:
            return self._forward(report, now, container, now, "")
        self._h.seq += 1
        self._h.held.append(Held(report, container, now, now + policy.hold_time, self._h.seq))
        return Correlation(
            Verdict.HOLD,
            (),
            f"held: {_about(report)} for {policy.hold_time:.3f} s, waiting for reports about "
            f"other children of {container}",
        )

    def _reattribute(
        self,
        container: str,
        forwarded: Sequence[ErrorReport],
        held: Sequence[Held],
        report: ErrorReport,
        now: float,
    ) -> Correlation:
        """Replace reports about children of ``container`` by one report about it.

        ``forwarded`` children reports already reached the CRIM and only inform the verdict;
        the ``held`` ones and the new ``report`` are settled here.
        """
        folded = [*(h.report for h in held), report]
        folding = {id(h) for h in held}
        self._h.held = [h for h in self._h.held if id(h) not in folding]
        self._h.children.pop(container, None)
        self._h.blamed[container] = now
        evidence = [*forwarded, *folded]
        blame = _blame(container, evidence)
        settled = tuple(folded)
        names = _children(container, evidence)
        key = (container, blame.kind)
        seen_at = self._h.last_seen.get(key)
        if seen_at is not None:
            return Correlation(
                Verdict.DISCARD,
                (),
                f"discarded: redundant, reports about {names} blame {container}, but "
                f"{blame.kind} of {container} was already reported at {seen_at:.3f}",
                settled,
            )
        self._h.last_seen[key] = now
        stale = self._stale(blame)  # only when container_of is not an ancestor
        if stale is not None:
            return Correlation(Verdict.DISCARD, (), f"discarded: {container} is {stale}", settled)
        out, level, why = self._escalated(blame, now)
        return Correlation(
            Verdict.REATTRIBUTE,
            (out,),
            f"re-attributed: reports about {names} within {self._policy.container_window:.3f} s "
            f"blame {container}; forwarding {blame.kind}, recommending {level}{why}",
            settled,
        )

    def _release(self, held: Held, now: float) -> Correlation:
        """Decide a report whose hold expired: stale, redundant, or forwarded as is."""
        report = held.report
        stale = self._stale(report)
        if stale is not None:
            return _discard(report, stale)
        blamed_at = self._h.blamed.get(held.container)
        if blamed_at is not None and blamed_at >= held.arrived:
            return _discard(
                report, f"redundant, {held.container} was blamed at {blamed_at:.3f} meanwhile"
            )
        return self._forward(
            report,
            now,
            held.container,
            held.arrived,
            f" after a {now - held.arrived:.3f} s hold (no other child of {held.container} "
            "reported)",
        )

    def _forward(
        self,
        report: ErrorReport,
        now: float,
        container: str | None,
        arrived: float,
        note: str,
    ) -> Correlation:
        """Rules 4 and 5: forward ``report``, escalated if it keeps coming back."""
        out, level, why = self._escalated(report, now)
        if container is not None:
            self._h.children.setdefault(container, []).append(Seen(report, arrived))
        if out is report:
            return Correlation(
                Verdict.FORWARD,
                (report,),
                f"forwarded: {_about(report)}{note}, recommending {level}",
                (report,),
            )
        return Correlation(
            Verdict.ESCALATE,
            (out,),
            f"escalated: {_about(report)}{note}, recommending {level}{why}",
            (report,),
        )

    def _escalated(self, report: ErrorReport, now: float) -> tuple[ErrorReport, RecoveryLevel, str]:
        """Record ``report`` as forwarded; return it (raised if rule 4 applies), its level, why.

        ``escalate_count < 1`` turns escalation off.
        """
        policy = self._policy
        previous = self._h.forwarded.setdefault(report.component, [])
        base = report.minimum_level()
        if policy.escalate_count < 1 or len(previous) < policy.escalate_count - 1:
            previous.append((now, base))
            return report, base, ""
        # One level above what the reports themselves need; the history keeps the reports'
        # own levels so repeated escalations do not compound (the CRIM's ladder climbs too).
        before = max([base, *(level for _, level in previous)])
        level = RecoveryLevel(min(before + 1, RecoveryLevel.REBOOT_NODE))
        previous.append((now, base))
        why = (
            f" instead of {before}: {len(previous) - 1} earlier reports about "
            f"{report.component} forwarded within {policy.escalate_window:.3f} s"
        )
        return replace(report, recommended=level), level, why
