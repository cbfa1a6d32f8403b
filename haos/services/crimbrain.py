"""The availability service's pure core: CRIM state, CEC history, the decision count, the
availability records and the news of the last decisions.

:class:`Brain` runs every event through the CEC and the CRIM's ``decide``, feeds the CRIM's
notifications to the ASR (:class:`~haos.cluster.asr.report.AvailabilityRecorder`: incidents per
service instance), turns each decision into event records for the cluster
(:func:`haos.services.crimnews.news_of`, kept in ``news`` until published) and serialises all
of it for the ``crim`` checkpoint, so the figures and the unpublished news survive the master's
fail-over. :func:`membership_fixes` reconciles the CRIM's membership with the CMM's after a
take-over. No I/O and no clock reads: ``now`` comes in. Two drivers run it: the availability
service of every node daemon (:mod:`haos.services.crimd`) and the simulator
(:mod:`haos.sim.engine`, on its simulated clock), so what the simulator checks is the glue the
daemon runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from haos.clock import WallTime
from haos.cluster.asr.report import AvailabilityRecorder
from haos.cluster.cec.policy import Correlation, Correlator
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.actions import Publish as CrimPublish
from haos.cluster.crim.policy import decide, next_deadline
from haos.cluster.crim.snapshot import from_data, to_data
from haos.cluster.crim.state import CrimState, initial_state
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.events.record import Record, record_from_json
from haos.config.model import CorrelationPolicy
from haos.errors import HaosError, ModelError
from haos.model.reports import (
    ErrorReport,
    RecoveryInitiated,
    ServiceOutage,
    ServiceRestored,
    StateChanged,
)
from haos.services.crimnews import news_of

FORMAT = 1  # of the checkpointed state (Brain.to_data)
# Incidents the ASR keeps one by one per instance; older ones are summed up. The state is
# written on every decision, so this bounds what each write carries (some 80 bytes each).
INCIDENTS_KEPT = 100


@dataclass
class Brain:
    """The pure state of the service: CRIM state, CEC history and the decision count.

    ``seq`` is the sequence number of the last decision made; each decision gets the next.
    ``asr``: the availability records, measured from the cluster's first decision (or from
    when a state without them was restored). ``news``: the event records of the decisions
    made since the service last published (it takes them with :meth:`take_news`).
    No I/O, no clock: ``now`` comes in, in wall-clock time (the state outlives this node).
    """

    topo: Topology
    crim: CrimState
    cec: Correlator
    seq: int = 0
    epoch: int = 0  # of the mastership that made the last decision
    asr: AvailabilityRecorder = field(default_factory=lambda: AvailabilityRecorder((), 0.0))
    news: list[Record] = field(default_factory=list)

    @classmethod
    def initial(cls, topo: Topology, policy: CorrelationPolicy, now: float = 0.0) -> Brain:
        """The cluster's first state; availability is measured from ``now``."""
        asr = AvailabilityRecorder(sorted(topo.instances), now, max_incidents=INCIDENTS_KEPT)
        return cls(topo, initial_state(topo), Correlator(policy), asr=asr)

    def decide(self, event: ev.Event, now: WallTime) -> Decision:
        """One CRIM decision; recoveries it starts are told to the CEC (staleness), its
        notifications to the ASR, and its event records queued in ``news``."""
        decision = decide(self.topo, self.crim, event, now)
        self.seq += 1
        self.crim = decision.state
        for action in decision.actions:
            if not isinstance(action, CrimPublish):
                continue
            note = action.notification
            if isinstance(note, RecoveryInitiated):
                self.cec.recovery_started(note)
            if isinstance(note, ServiceOutage | ServiceRestored | RecoveryInitiated | StateChanged):
                self.asr.record(note)
        self.news += news_of(
            self.topo, event, decision, seq=self.seq, epoch=self.epoch, at=float(now)
        )
        return decision

    def take_news(self) -> list[Record]:
        """The queued event records, oldest first; the queue is empty afterwards."""
        news, self.news = self.news, []
        return news

    def report(self, report: ErrorReport, now: WallTime) -> tuple[Correlation, list[Decision]]:
        """An error report through the CEC; what it forwards goes to the CRIM."""
        correlation = self.cec.report(report, now)
        return correlation, [self.decide(ev.ErrorReported(r), now) for r in correlation.reports]

    def tick(self, now: WallTime) -> list[Decision]:
        """Release due CEC holds, then let the CRIM escalate overdue recoveries."""
        return [self.decide(event, now) for event in self.due(now)]

    def due(self, now: WallTime) -> list[ev.Event]:
        """What :meth:`tick` decides, in order: the reports whose CEC holds end by ``now``
        (released here: each is handed out once), then a Tick. For a driver that follows
        each event to its decision (the simulator); a daemon calls :meth:`tick`."""
        released = [ev.ErrorReported(r) for c in self.cec.tick(now) for r in c.reports]
        return [*released, ev.Tick()]

    def next_deadline(self) -> float | None:
        deadlines = [
            d for d in (next_deadline(self.crim, self.topo), self.cec.next_deadline()) if d
        ]
        return min(deadlines) if deadlines else None

    def to_data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "seq": self.seq,
            "epoch": self.epoch,
            "crim": to_data(self.crim),
            "cec": self.cec.snapshot(),
            "asr": self.asr.to_data(),
            "news": [r.to_json() for r in self.news],
        }

    @classmethod
    def from_data(
        cls, topo: Topology, policy: CorrelationPolicy, data: Mapping[str, Any], now: float = 0.0
    ) -> Brain:
        """Restore from :meth:`to_data`; ModelError if malformed or not for ``topo``. A state
        stored before availability records were kept starts them at ``now``."""
        try:
            if data["format"] != FORMAT:
                raise ModelError(f"availability checkpoint format {data['format']!r} unknown")
            seq = data["seq"]
            if not isinstance(seq, int) or seq < 0:
                raise ModelError(f"availability checkpoint has a bad sequence number {seq!r}")
            epoch = data.get("epoch", 0)
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise ModelError(f"availability checkpoint has a bad epoch {epoch!r}")
            crim = from_data(topo, data["crim"])
            cec = Correlator.from_snapshot(policy, data["cec"])
            asr = _records(topo, data.get("asr"), now)
            news = [record_from_json(r) for r in data.get("news", [])]
        except (KeyError, TypeError) as e:
            raise ModelError(f"malformed availability checkpoint: {e!r}") from e
        except HaosError as e:
            raise ModelError(f"malformed availability checkpoint: {e}") from e
        return cls(topo, crim, cec, seq, epoch, asr, news)

    def encode(self) -> bytes:
        return json.dumps(self.to_data(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(
        cls, topo: Topology, policy: CorrelationPolicy, raw: bytes, now: float = 0.0
    ) -> Brain:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ModelError(f"availability checkpoint is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ModelError("availability checkpoint is not a JSON object")
        return cls.from_data(topo, policy, data, now)


def _records(topo: Topology, data: object, now: float) -> AvailabilityRecorder:
    """The stored availability records, with every instance of ``topo`` (a state stored
    before they were kept: empty ones, measured from ``now``)."""
    if data is None:
        return AvailabilityRecorder(sorted(topo.instances), now, max_incidents=INCIDENTS_KEPT)
    asr = AvailabilityRecorder.from_data(data)
    asr.add_instances(topo.instances)
    return asr


def membership_fixes(crim: CrimState, members: Iterable[str]) -> list[ev.Event]:
    """NodeJoined/NodeLeft that bring the CRIM's membership to ``members`` (the CMM's)."""
    want = set(members)
    out: list[ev.Event] = []
    for node in sorted(crim.nodes):
        if crim.nodes[node].member and node not in want:
            out.append(ev.NodeLeft(node))
        elif not crim.nodes[node].member and node in want:
            out.append(ev.NodeJoined(node))
    return out
