"""``/metrics``: a Snapshot in the Prometheus text format.

Each scrape renders the snapshot it was given through a registry of its own (nothing global,
nothing kept between scrapes). Names follow Prometheus' conventions: the ``haos_`` prefix,
base units (seconds), ``_total`` for counters, a ``state`` label with one series per state
(1 for the current one) for enumerations.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from haos.mgmt.objects import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("offline", "spare", "secondary", "primary")


class SnapshotCollector(Collector):
    """The metric families of one snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._cluster()
        yield from self._nodes()
        yield from self._components()
        yield from self._instances()

    def _cluster(self) -> Iterator[Metric]:
        c = self.snapshot.cluster
        quorate = GaugeMetricFamily(
            "haos_cluster_quorate",
            "1 when the answering node is in a quorate view",
            labels=["node"],
        )
        quorate.add_metric([c.node], 1.0 if c.quorate else 0.0)
        decision = GaugeMetricFamily(
            "haos_cluster_decision", "the availability service's decision number"
        )
        decision.add_metric([], float(c.decision))
        yield quorate
        yield decision

    def _nodes(self) -> Iterator[Metric]:
        member = GaugeMetricFamily(
            "haos_node_member", "1 when the node is a member of the cluster", labels=["node"]
        )
        master = GaugeMetricFamily("haos_node_master", "1 on the master node", labels=["node"])
        vice = GaugeMetricFamily(
            "haos_node_vice_master", "1 on the vice-master node", labels=["node"]
        )
        locked = GaugeMetricFamily("haos_node_locked", "1 when locked", labels=["node"])
        for n in self.snapshot.nodes:
            member.add_metric([n.name], float(n.member))
            master.add_metric([n.name], float(n.master))
            vice.add_metric([n.name], float(n.vice_master))
            locked.add_metric([n.name], float(n.admin == "locked"))
        yield from (member, master, vice, locked)

    def _components(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "haos_component_state",
            "1 for the component's availability state, 0 for the others",
            labels=["component", "node", "state"],
        )
        restarts = GaugeMetricFamily(
            "haos_component_recent_restarts",
            "restarts of the component within its probation window",
            labels=["component", "node"],
        )
        for comp in self.snapshot.components:
            for s in STATES:
                state.add_metric([comp.name, comp.node, s], float(comp.state == s))
            restarts.add_metric([comp.name, comp.node], float(comp.restarts))
        yield state
        yield restarts

    def _instances(self) -> Iterator[Metric]:
        labels = ["instance", "group"]
        served = GaugeMetricFamily(
            "haos_instance_served",
            "1 when each primary of the instance runs as primary",
            labels=labels,
        )
        outage = CounterMetricFamily(
            "haos_instance_outage_seconds", "time the instance was not served", labels=labels
        )
        failovers = CounterMetricFamily(
            "haos_instance_failovers",
            "outages of the instance that the availability service recovered",
            labels=labels,
        )
        availability = GaugeMetricFamily(
            "haos_instance_availability_ratio", "availability over the time measured", labels=labels
        )
        for si in self.snapshot.instances:
            key = [si.name, si.group]
            served.add_metric(key, float(si.served))
            if si.outage_ms is not None:
                outage.add_metric(key, si.outage_ms / 1000.0)
            if si.failovers is not None:
                failovers.add_metric(key, float(si.failovers))
            if si.availability is not None:
                availability.add_metric(key, si.availability)
        yield from (served, outage, failovers, availability)


def render(snapshot: Snapshot) -> bytes:
    """The text exposition of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
