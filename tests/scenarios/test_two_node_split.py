"""Two nodes, both links cut and healed again and again: one survivor, and it keeps serving.

A :class:`~haoslab.demo.run.DemoCluster` of two systemd-nspawn nodes (corosync ``two_node``)
runs the 2N counter; a client in n1's network namespace uses it throughout. Each cycle cuts
every frame between the nodes for a few seconds (the switch's nftables partition), then
heals. Both sides stay quorate (``two_node``) and race to fence each other; the priority
fencing delay lets n1 shoot first, and n2 is rebooted by the fence device while still cut
off. After the heal n2 rejoins; the checks per cycle:

* exactly one node was fenced, n2, and n1 survived (its container was never restarted);
* the service answers again within ``SERVE`` seconds of the heal, and still answers once the
  cluster has settled with n2 back (a node booted alone must not take over with its stale
  view and order the real primary off-line);
* the rebooted node never became master: its cluster daemon's notices since its boot have no
  MasterChanged naming it (n1 outranks it in every view that holds both).

``HAOS_SPLIT_CYCLES`` sets the number of cycles (default 5: under a minute; 20 take about three).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from haos.errors import HaosError
from haoslab.demo.run import Answer, DemoCluster, ProbeProcess, probing
from haoslab.harness import netns
from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import CLUSTERD

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

CYCLES = int(os.environ.get("HAOS_SPLIT_CYCLES", "5"))
CUT = 5.0  # seconds both links stay cut
SERVE = 15.0  # seconds from the heal until the client is served
SETTLE = 60.0  # seconds from the heal until the fenced node is back and the counter placed
STILL = 2.0  # seconds after settling when the client must still be served


@dataclass(frozen=True)
class Cycle:
    fenced: list[tuple[str, str, str]]
    served_after: float  # heal to the first answer
    settled_after: float  # heal to both nodes members of one view, the counter placed
    served_settled_after: float  # settled to the first answer ``STILL`` seconds after it
    held_back: bool  # n2 was told "quorate" while alone, and waited for its peer


@pytest.fixture
def demo(cache: Path) -> Iterator[DemoCluster]:
    with DemoCluster(spec=ClusterSpec(nodes=2), cache=cache, restart_max=0) as d:
        d.wait_placed(SETTLE)
        yield d


def answer_after(probe: ProbeProcess, since: float) -> Answer:
    return probe.wait(lambda answers: next((a for a in answers if a.t > since), None), SERVE)


def notices(demo: DemoCluster, node: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = demo.cluster.control(node).request("notices")["notices"]
    return found


def masters_named(demo: DemoCluster, node: str) -> list[dict[str, Any]]:
    """The MasterChanged notices of ``node``'s daemon (since it started) that name it."""
    node_id = int(node[1:])
    events = [item["notice"].get("event") or {} for item in notices(demo, node)]
    return [e for e in events if e.get("type") == "MasterChanged" and e.get("new") == node_id]


def held_back(demo: DemoCluster, node: str) -> bool:
    """Whether ``node``'s cluster daemon, since the node booted, counted a view of itself
    alone as inquorate because it had not synchronised with a peer yet (for the report: how
    often the race between votequorum's verdict and the CMM group's view happened)."""
    argv = ["journalctl", "-b", "--no-pager", "-o", "cat", "-u", CLUSTERD]
    journal = demo.cluster.node(node).run(argv, check=False).stdout
    return "not synchronised with a peer" in journal


def rejoined(demo: DemoCluster) -> bool:
    """Both daemons in one view with master n1, and the counter placed."""
    try:
        views = [demo.cluster.status(n) or {} for n in demo.names]
        together = all(v.get("members") == [1, 2] and v.get("master") == 1 for v in views)
        return together and demo.placed()
    except HaosError:
        return False


def split_and_heal(demo: DemoCluster, probe: ProbeProcess) -> Cycle:
    assert demo.cluster.topo is not None and demo.cluster.bridge is not None
    names = demo.cluster.topo.names
    fenced_before = len(demo.cluster.bridge.done)
    n1 = demo.cluster.node("n1").leader
    netns.set_partition(names, [frozenset({1}), frozenset({2})])
    time.sleep(CUT)  # the fault's duration, not a wait for a condition
    netns.clear_partition(names)
    healed = time.monotonic()
    served = answer_after(probe, healed)
    demo.cluster.wait_for(lambda: rejoined(demo), SETTLE, "n2 back beside n1, counter placed")
    settled = time.monotonic()
    # still served a while later: orders from a stale master would have landed by then
    again = answer_after(probe, settled + STILL)
    fenced = demo.cluster.bridge.done[fenced_before:]
    assert fenced == [("n2", "reboot", "ok")], f"fenced: {fenced}"
    assert demo.cluster.node("n1").leader == n1, "the preferred node n1 was restarted"
    assert masters_named(demo, "n2") == [], "the rebooted n2 made itself master"
    return Cycle(
        fenced=fenced,
        served_after=served.t - healed,
        settled_after=settled - healed,
        served_settled_after=again.t - settled,
        held_back=held_back(demo, "n2"),
    )


def test_two_node_split_and_heal_cycles_keep_one_survivor_and_the_service(
    demo: DemoCluster,
) -> None:
    with probing(demo, "n1") as probe:
        answer_after(probe, 0.0)
        cycles = []
        for k in range(CYCLES):
            cycle = split_and_heal(demo, probe)
            print(
                f"cycle {k + 1}/{CYCLES}: fenced {cycle.fenced}; served "
                f"{cycle.served_after:.2f} s after the heal; settled after "
                f"{cycle.settled_after:.2f} s, served {cycle.served_settled_after:.2f} s later; "
                f"n2 {'waited for its peer' if cycle.held_back else 'saw its peer first'}",
                flush=True,
            )
            cycles.append(cycle)
        values = [a.value for a in probe.answers]
        assert values == sorted(set(values)), "an answered value came twice or went back"
    worst = max(c.settled_after for c in cycles)
    raced = sum(c.held_back for c in cycles)
    print(
        f"{CYCLES} cycles: one survivor each; settled at worst {worst:.2f} s after a heal; "
        f"n2 told quorate while alone in {raced}"
    )
