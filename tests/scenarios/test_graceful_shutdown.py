"""A clean shutdown of a node is a switchover, not a failure: no fencing, and it stays off.

Each test boots :class:`haoslab.demo.run.DemoCluster` (three systemd-nspawn nodes running
corosync, haos-clusterd and haos-agentd as services, the fence bridge with the default fence
action ``reboot``, and the 2N demo counter) and shuts nodes down with ``systemctl poweroff``
inside them. A client (:mod:`haoslab.demo.probe`) on a node that stays measures the outage: the
longest gap between two answers around the shutdown.

What a clean stop must give: the client served by another node after a switchover's outage
(well under a second), no fence request for the node (the fence bridge's log), the node still
off long after (a fencing with ``reboot`` would have booted it again), and its peers' view
clean: no fencing pending, the departure announced.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from haoslab.demo.cluster import member
from haoslab.demo.run import Answer, DemoCluster, ProbeProcess, first_from_other, probing

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

SETTLE = 60.0  # seconds for the cluster to place the counter
SERVE = 30.0  # seconds until the client is served by another node
OUTAGE = 1.0  # the longest gap in service a clean stop may cost
STAYS_OFF = 10.0  # seconds after the stop in which a fencing would have shown


@pytest.fixture
def demo(cache: Path) -> Iterator[DemoCluster]:
    with DemoCluster(3, cache=cache) as d:
        d.wait_placed(SETTLE)
        yield d


def master_of(demo: DemoCluster, asking: str) -> str | None:
    status = demo.cluster.status(asking)
    if status is None or status["master"] is None or not status["quorate"]:
        return None
    return str(status["node_names"][str(status["master"])])


def outage(probe: ProbeProcess, since: float, until: float) -> float:
    """The longest gap between two answers from ``since`` to ``until``."""
    times = [a.t for a in probe.answers if since <= a.t <= until]
    before = [a.t for a in probe.answers if a.t < since]
    if before:
        times.insert(0, before[-1])
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def fenced(demo: DemoCluster) -> list[tuple[str, str, str]]:
    bridge = demo.cluster.bridge
    assert bridge is not None
    return [*bridge.done, *((node, action, "waiting") for node, action in bridge.waiting())]


def clean_view(status: dict[str, Any] | None, gone: set[str]) -> bool:
    if status is None or not status["quorate"] or status["fence_pending"]:
        return False
    names = {int(k): v for k, v in status["node_names"].items()}
    return not gone & {names[m] for m in status["members"]}


def served_after(probe: ProbeProcess, at: float, old: str) -> Answer:
    return probe.wait(first_from_other(at, old), SERVE)


def stop_primary_node(
    demo: DemoCluster, node: str, watcher: str, stop: Callable[[str], object] | None = None
) -> None:
    """Shut ``node`` down cleanly (by default ``systemctl poweroff`` inside it) while a
    client on ``watcher`` uses the counter; check the outage, that nobody fenced it and that
    it stays off."""
    old = demo.address(node)
    with probing(demo, watcher) as probe:
        probe.wait(lambda answers: next((a for a in answers if a.target == old), None), SERVE)
        at = time.monotonic()
        (stop or demo.cluster.poweroff)(node)
        took = time.monotonic() - at
        answer = served_after(probe, at, old)
        gap = outage(probe, at, answer.t + 0.5)
        print(f"stop of {node}: client outage {gap * 1000:.0f} ms, shut down in {took:.1f} s")
        assert answer.target != old
        assert gap < OUTAGE, f"the client waited {gap:.3f} s for the counter"
        values = [a.value for a in probe.answers]
        assert values == sorted(set(values)), "an answered value came twice or went back"
    survivors = [n for n in demo.names if n != node]
    demo.cluster.wait_for(
        lambda: all(clean_view(demo.cluster.status(n), {node}) for n in survivors),
        SERVE,
        f"{survivors} quorate without {node}, no fencing pending",
    )
    time.sleep(STAYS_OFF)  # what the peers would have done by now, they would have done
    assert not demo.cluster.powered(node), f"{node} was powered on again"
    assert [f for f in fenced(demo) if f[0] == node] == [], fenced(demo)
    assert demo.holder("primary") in survivors


@pytest.mark.parametrize("how", ["systemctl poweroff", "harness stop"])
def test_poweroff_of_the_primarys_node_is_a_switchover_and_the_node_stays_off(
    demo: DemoCluster, how: str
) -> None:
    primary = demo.holder("primary")
    assert primary is not None
    master = master_of(demo, primary)
    watcher = next(n for n in demo.names if n not in (primary, master)) if master else None
    watcher = watcher or next(n for n in demo.names if n != primary)
    # the harness's stop asks the node's systemd to power off, as a power button would
    stop = demo.cluster.stop_node if how == "harness stop" else None
    stop_primary_node(demo, primary, watcher, stop)


def operator(demo: DemoCluster, action: str, target: str) -> None:
    answer = demo.cluster.control(demo.names[0]).request(
        "operator", action=action, target=target, timeout=10.0
    )
    assert not answer["refused"], answer


def make_primary(demo: DemoCluster, node: str) -> None:
    """Move the counter's primary to ``node``: a spare there is made the secondary first
    (the secondary taken off-line and back), then a switchover promotes it."""
    if demo.roles()[node] == "spare":
        secondary = demo.holder("secondary")
        assert secondary is not None
        operator(demo, "offline", member(int(secondary[1:])))
        demo.cluster.wait_for(lambda: demo.roles()[node] == "secondary", SETTLE, "secondary")
        operator(demo, "online", member(int(secondary[1:])))
        demo.wait_placed(SETTLE)
    if demo.roles()[node] == "secondary":
        operator(demo, "switchover", "counter-si")
        demo.cluster.wait_for(lambda: demo.holder("primary") == node, SETTLE, "primary moved")
        demo.wait_placed(SETTLE)


def test_poweroff_of_the_master_hands_mastership_over_without_fencing(demo: DemoCluster) -> None:
    master = master_of(demo, demo.names[0])
    assert master is not None
    make_primary(demo, master)  # the master's node serves too: the harder case
    assert demo.holder("primary") == master
    watcher = next(n for n in demo.names if n != master)
    stop_primary_node(demo, master, watcher)
    survivors = [n for n in demo.names if n != master]
    new = {master_of(demo, n) for n in survivors}
    assert len(new) == 1 and master not in new, new
    demo.wait_settled(SETTLE)  # the new master places the counter as before


def test_two_nodes_stopped_in_quick_succession_take_the_quorum_but_no_safety(
    demo: DemoCluster,
) -> None:
    """Of three, the primary's and the secondary's nodes powered off at the same moment:
    both leave cleanly (the primary's switchover may pick the other leaver, whose agent has
    already ended: that promotion reaches nobody and the leave stands). The last node is then
    inquorate, so quorum rules apply: it gives its primary up (never two primaries, nobody
    serves) and fences nobody. Both leavers stay off; booted again, the cluster serves."""
    primary = demo.holder("primary")
    assert primary is not None
    first = primary
    second = next(n for n in demo.names if n != first and demo.roles()[n] == "secondary")
    last = next(n for n in demo.names if n not in (first, second))
    for node in (first, second):
        demo.cluster.node(node).run(["systemctl", "poweroff", "--no-block"])
    for node in (first, second):
        demo.cluster.node(node).wait_powered_off(60.0)

    def inquorate_and_demoted() -> bool:
        status = demo.cluster.status(last)
        return status is not None and not status["quorate"] and status["demoted"]

    demo.cluster.wait_for(inquorate_and_demoted, SERVE, f"{last} alone, inquorate, demoted")
    desired = demo.cluster.control(last).request("desired")
    assert "primary" not in desired["roles"].values(), desired  # nothing serves there
    time.sleep(STAYS_OFF)
    assert fenced(demo) == [], fenced(demo)
    assert not demo.cluster.powered(first) and not demo.cluster.powered(second)
    status = demo.cluster.status(last)
    assert status is not None and status["fence_pending"] == []
    demo.cluster.start_nodes(first, second)
    demo.wait_settled(SETTLE)
