"""Count membership changes over a stretch of time: the basis of stability benchmarks.

Two independent counts per node, which must agree for an idle healthy cluster (both zero):

* ``rings``: new rings the node's corosync reported to the watcher (CPG totem callback);
* ``gathers``: the increase of totem's ``stats.srp.gather_entered`` counter, read with
  ``corosync-cmapctl`` before and after — every run of the membership protocol counts, even
  one that ends with the same members, so it also catches what a callback could coalesce.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from haoslab.harness.cluster import Cluster
from haoslab.harness.watch import Observation


@dataclass(frozen=True)
class SoakReport:
    """Membership changes seen during one soak."""

    duration: float  # seconds observed
    rings: dict[int, int]  # node -> new rings installed
    gathers: dict[int, int]  # node -> membership protocol runs (stats.srp.gather_entered)
    changes: tuple[Observation, ...]  # the new rings, in arrival order

    @property
    def total(self) -> int:
        """Membership changes by either count, summed over the nodes."""
        return sum(max(self.rings[n], self.gathers[n]) for n in self.rings)

    @property
    def per_hour(self) -> float:
        return self.total * 3600.0 / self.duration if self.duration > 0 else 0.0


def soak(cluster: Cluster, duration: float, nodes: Iterable[int] | None = None) -> SoakReport:
    """Watch ``nodes`` (default: every node whose corosync is connected) for ``duration`` s.

    Injects nothing: start faults before calling it (e.g. :meth:`Cluster.loss`) to measure
    their effect. The nodes must not be frozen (their counters could not be read).
    """
    watched = sorted(
        nodes if nodes is not None else (n for n in cluster.node_ids if cluster.view(n).connected)
    )
    before = {n: cluster.srp_stats(n).get("gather_entered", 0) for n in watched}
    start = time.monotonic()
    time.sleep(duration)  # the observation window itself, not a wait for a condition
    end = time.monotonic()
    after = {n: cluster.srp_stats(n).get("gather_entered", 0) for n in watched}
    changes = tuple(o for o in cluster.membership_changes(start, watched) if o.at <= end)
    return SoakReport(
        duration=end - start,
        rings={n: sum(1 for o in changes if o.node == n) for n in watched},
        gathers={n: after[n] - before[n] for n in watched},
        changes=changes,
    )
