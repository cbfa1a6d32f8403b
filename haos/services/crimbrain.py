"""The availability service's pure core: CRIM state, CEC history and the decision count.

:class:`Brain` runs every event through the CEC and the CRIM's ``decide`` and serialises itself
for the ``crim`` checkpoint; :func:`membership_fixes` reconciles the CRIM's membership with the
CMM's after a take-over. No I/O and no clock reads: ``now`` comes in (see
:mod:`haos.services.crimd` for the service that drives them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from haos.clock import WallTime
from haos.cluster.cec.policy import Correlation, Correlator
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.actions import Publish as CrimPublish
from haos.cluster.crim.policy import decide, next_deadline
from haos.cluster.crim.snapshot import from_data, to_data
from haos.cluster.crim.state import CrimState, initial_state
from haos.cluster.crim.topology import Topology
from haos.config.model import CorrelationPolicy
from haos.errors import ModelError
from haos.model.reports import ErrorReport, RecoveryInitiated

FORMAT = 1  # of the checkpointed state (Brain.to_data)


@dataclass
class Brain:
    """The pure state of the service: CRIM state, CEC history and the decision count.

    ``seq`` is the sequence number of the last decision made; each decision gets the next.
    No I/O, no clock: ``now`` comes in, in wall-clock time (the state outlives this node).
    """

    topo: Topology
    crim: CrimState
    cec: Correlator
    seq: int = 0
    epoch: int = 0  # of the mastership that made the last decision

    @classmethod
    def initial(cls, topo: Topology, policy: CorrelationPolicy) -> Brain:
        return cls(topo, initial_state(topo), Correlator(policy))

    def decide(self, event: ev.Event, now: WallTime) -> Decision:
        """One CRIM decision; recoveries it starts are told to the CEC (staleness)."""
        decision = decide(self.topo, self.crim, event, now)
        self.seq += 1
        self.crim = decision.state
        for action in decision.actions:
            if isinstance(action, CrimPublish) and isinstance(
                action.notification, RecoveryInitiated
            ):
                self.cec.recovery_started(action.notification)
        return decision

    def report(self, report: ErrorReport, now: WallTime) -> tuple[Correlation, list[Decision]]:
        """An error report through the CEC; what it forwards goes to the CRIM."""
        correlation = self.cec.report(report, now)
        return correlation, [self.decide(ev.ErrorReported(r), now) for r in correlation.reports]

    def tick(self, now: WallTime) -> list[Decision]:
        """Release due CEC holds, then let the CRIM escalate overdue recoveries."""
        out = [self.decide(ev.ErrorReported(r), now) for c in self.cec.tick(now) for r in c.reports]
        out.append(self.decide(ev.Tick(), now))
        return out

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
        }

    @classmethod
    def from_data(cls, topo: Topology, policy: CorrelationPolicy, data: Mapping[str, Any]) -> Brain:
        """Restore from :meth:`to_data`; ModelError if malformed or not for ``topo``."""
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
        except (KeyError, TypeError) as e:
            raise ModelError(f"malformed availability checkpoint: {e!r}") from e
        return cls(topo, crim, cec, seq, epoch)

    def encode(self) -> bytes:
        return json.dumps(self.to_data(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, topo: Topology, policy: CorrelationPolicy, raw: bytes) -> Brain:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ModelError(f"availability checkpoint is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ModelError("availability checkpoint is not a JSON object")
        return cls.from_data(topo, policy, data)


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
