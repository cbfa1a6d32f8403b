"""What the CEC remembers between reports, as plain data, and its JSON-safe snapshot form.

The correlator in :mod:`haos.cluster.cec.policy` reads and updates a :class:`History`; this
module only stores, prunes and (de)serialises it, so the whole state can be checkpointed to a
hot standby and restored there without any of the policy's code running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from haos.config.model import CorrelationPolicy
from haos.errors import ModelError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel

SNAPSHOT_VERSION = 1


@dataclass
class Held:
    """A report waiting until ``deadline`` for reports about other children of ``container``.

    ``seq`` orders reports held with the same deadline by arrival.
    """

    report: ErrorReport
    container: str
    arrived: float
    deadline: float
    seq: int


@dataclass(frozen=True)
class Seen:
    """A report about a child of a container that was forwarded; it arrived at ``at``."""

    report: ErrorReport
    at: float


@dataclass
class History:
    """The correlator's state. Times are the ``now`` of the call that recorded them.

    ``recoveries``: latest recovery start per component (one entry per recovered component, a
    container's later recovery replaces those of its subtree). ``held``: reports not yet
    decided. ``last_seen``: when a (component, kind) was last forwarded or held.
    ``children``: forwarded reports per container. ``blamed``: when a container was last
    blamed for its children. ``forwarded``: (time, recommended level) of each report forwarded
    per component, for escalation.
    """

    recoveries: dict[str, float] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)
    seq: int = 0
    last_seen: dict[tuple[str, ErrorKind], float] = field(default_factory=dict)
    children: dict[str, list[Seen]] = field(default_factory=dict)
    blamed: dict[str, float] = field(default_factory=dict)
    forwarded: dict[str, list[tuple[float, RecoveryLevel]]] = field(default_factory=dict)

    def prune(self, now: float, policy: CorrelationPolicy) -> None:
        """Forget every entry older than the window it is judged by.

        What remains is bounded by the reports of the last window (plus one recovery time per
        recovered component, which a late stale report may still need); held reports are
        bounded by the hold time because ``tick`` releases them.
        """
        dup, cont, esc = policy.duplicate_window, policy.container_window, policy.escalate_window
        self.last_seen = {k: t for k, t in self.last_seen.items() if now - t <= dup}
        self.blamed = {k: t for k, t in self.blamed.items() if now - t <= cont}
        children: dict[str, list[Seen]] = {}
        for container, seen in self.children.items():
            kept = [s for s in seen if now - s.at <= cont]
            if kept:
                children[container] = kept
        self.children = children
        forwarded: dict[str, list[tuple[float, RecoveryLevel]]] = {}
        for component, entries in self.forwarded.items():
            recent = [e for e in entries if now - e[0] <= esc]
            if recent:
                forwarded[component] = recent
        self.forwarded = forwarded

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy: only dicts with string keys, lists, strings, numbers and None."""
        return {
            "version": SNAPSHOT_VERSION,
            "seq": self.seq,
            "recoveries": dict(self.recoveries),
            "held": [
                {
                    "report": report_to_dict(h.report),
                    "container": h.container,
                    "arrived": h.arrived,
                    "deadline": h.deadline,
                    "seq": h.seq,
                }
                for h in self.held
            ],
            "last_seen": [[c, k.value, t] for (c, k), t in self.last_seen.items()],
            "children": {
                c: [{"report": report_to_dict(s.report), "at": s.at} for s in seen]
                for c, seen in self.children.items()
            },
            "blamed": dict(self.blamed),
            "forwarded": {
                c: [[t, int(level)] for t, level in entries]
                for c, entries in self.forwarded.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuild from :meth:`to_dict` output; raise ModelError when ``data`` is malformed."""
        try:
            if data["version"] != SNAPSHOT_VERSION:
                raise ModelError(
                    f"CEC snapshot version {data['version']!r} is not {SNAPSHOT_VERSION}"
                )
            return cls(
                recoveries={str(c): float(t) for c, t in data["recoveries"].items()},
                held=[
                    Held(
                        report=report_from_dict(h["report"]),
                        container=str(h["container"]),
                        arrived=float(h["arrived"]),
                        deadline=float(h["deadline"]),
                        seq=int(h["seq"]),
                    )
                    for h in data["held"]
                ],
                seq=int(data["seq"]),
                last_seen={(str(c), ErrorKind(k)): float(t) for c, k, t in data["last_seen"]},
                children={
                    str(c): [Seen(report_from_dict(s["report"]), float(s["at"])) for s in seen]
                    for c, seen in data["children"].items()
                },
                blamed={str(c): float(t) for c, t in data["blamed"].items()},
                forwarded={
                    str(c): [(float(t), RecoveryLevel(level)) for t, level in entries]
                    for c, entries in data["forwarded"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"malformed CEC snapshot: {e!r}") from e


def report_to_dict(report: ErrorReport) -> dict[str, Any]:
    return {
        "component": report.component,
        "kind": report.kind.value,
        "observed_at": report.observed_at,
        "source": report.source,
        "detail": report.detail,
        "recommended": None if report.recommended is None else int(report.recommended),
    }


def report_from_dict(data: Mapping[str, Any]) -> ErrorReport:
    recommended = data["recommended"]
    return ErrorReport(
        component=str(data["component"]),
        kind=ErrorKind(data["kind"]),
        observed_at=float(data["observed_at"]),
        source=str(data["source"]),
        detail=str(data["detail"]),
        recommended=None if recommended is None else RecoveryLevel(recommended),
    )
