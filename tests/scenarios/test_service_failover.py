"""The end-to-end fail-over on nodes with a real systemd, one real fault per scenario.

Each test boots :class:`haoslab.demo.run.DemoCluster`: three systemd-nspawn nodes running
corosync, haos-clusterd and haos-agentd as services, and the 2N demo counter (an HA-aware
application started by the agents as transient units). A client (:mod:`haoslab.demo.probe`) in a
node's network namespace uses the service throughout; every test checks that the counter went
on from where it was (no answered increment lost) and who serves it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from haoslab.demo.cluster import member
from haoslab.demo.run import Answer, DemoCluster, ProbeProcess, first_from_other, probing
from haoslab.harness.systemd_cluster import AGENTD, CLUSTERD

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SETTLE = 60.0  # seconds for the cluster to place the counter again after a fault
SERVE = 30.0  # seconds until the client is served again


def settled(demo: DemoCluster) -> None:
    demo.cluster.wait_for(
        lambda: sorted(demo.roles().values()) == ["primary", "secondary", "spare"],
        SETTLE,
        "the counter has a primary, a secondary and a spare",
    )


def serving(probe: ProbeProcess, address: str, since: float = 0.0) -> Answer:
    def found(answers: list[Answer]) -> Answer | None:
        return next((a for a in answers if a.t > since and a.target == address), None)

    return probe.wait(found, SERVE)


def continued(probe: ProbeProcess, old: str, new: Answer) -> None:
    """No answered increment was lost: the counter went on above the last value ``old``
    answered. (It may skip values: an increment stored but not answered in time, because
    the server died or the client gave up waiting, still counts.)"""
    last = max(a.value for a in probe.answers if a.target == old and a.t < new.t)
    assert new.value > last, f"counter went from {last} back to {new.value}"
    values = [a.value for a in probe.answers]
    assert values == sorted(set(values)), "an answered value came twice or went back"


@pytest.fixture
def demo(cache: Path) -> Iterator[DemoCluster]:
    with DemoCluster(3, cache=cache, restart_max=1) as d:
        settled(d)
        yield d


@pytest.fixture
def probe(demo: DemoCluster) -> Iterator[ProbeProcess]:
    watcher = demo.holder("spare")
    assert watcher is not None
    with probing(demo, watcher) as p:
        primary = demo.holder("primary")
        assert primary is not None
        serving(p, demo.address(primary))
        yield p


def fail_over(
    demo: DemoCluster, probe: ProbeProcess, inject: Callable[[str], float]
) -> tuple[str, str, float]:
    """Inject a fault into the primary; (old primary, new primary, seconds to served)."""
    old = demo.holder("primary")
    assert old is not None
    serving(probe, demo.address(old))
    at = inject(old)
    answer = probe.wait(first_from_other(at, demo.address(old)), SERVE)
    continued(probe, demo.address(old), answer)
    new = next(n for n in demo.names if demo.address(n) == answer.target)
    return old, new, answer.t - at


def test_sigkilled_component_is_restarted_then_failed_over_when_the_ladder_escalates(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    primary = demo.holder("primary")
    assert primary is not None
    address = demo.address(primary)
    before = serving(probe, address)
    at = demo.kill_component(primary)  # first crash: restart in place (restart_max = 1)
    again = recovered(probe, at)
    assert again.target == address
    continued(probe, address, again)
    assert demo.holder("primary") == primary
    history = demo.cluster.control(primary).request("history", limit=50)["history"]
    assert any("restart" in str(e.get("reason", "")) for e in history), history
    # second crash within the probation: the ladder escalates to a fail-over
    old, new, took = fail_over(demo, probe, demo.kill_component)
    assert old == primary and new != primary
    assert took < 5.0
    settled(demo)  # the failed one is repaired and comes back as the spare
    assert demo.roles()[primary] == "spare"
    assert before.value < probe.answers[-1].value


def test_hung_component_is_detected_by_its_audit_and_recovered(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    primary = demo.holder("primary")
    assert primary is not None
    address = demo.address(primary)
    serving(probe, address)
    started = time.time()
    at = demo.kill_component(primary, signal.SIGSTOP)  # alive, but no longer answering
    answer = recovered(probe, at)
    continued(probe, address, answer)
    assert answer.t - at < 10.0
    history = demo.cluster.control(primary).request("history", limit=50)["history"]
    audit = [e for e in history if e["at"] >= started and "audit" in str(e.get("reason", ""))]
    assert audit, history  # detected by its audit, not by anything else
    settled(demo)  # the hung process was replaced: restarted in place (restart_max = 1)


def recovered(probe: ProbeProcess, at: float) -> Answer:
    """The first answer after the client lost the service (which happened after ``at``)."""

    def lost_since() -> float | None:
        return next((t for t, _, _ in probe.lost if t > at), None)

    def found(answers: list[Answer]) -> Answer | None:
        lost = lost_since()  # a hung server is noticed by the client's timeout
        return None if lost is None else next((a for a in answers if a.t > lost), None)

    return probe.wait(found, SERVE)


def test_killed_agent_is_restarted_and_its_components_keep_serving(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    primary = demo.holder("primary")
    assert primary is not None
    address = demo.address(primary)
    for node in demo.names:
        restarts = demo.cluster.restarts(node, AGENTD)
        before = serving(probe, address, since=time.monotonic())
        demo.cluster.kill_daemon(node, AGENTD)
        demo.cluster.wait_for(
            lambda n=node, r=restarts: (
                demo.cluster.restarts(n, AGENTD) > r
                and demo.cluster.node(n).unit_state(AGENTD) == "active"
            ),
            30.0,
            f"the agent on {node} restarted by systemd",
        )
        settled(demo)
        # the components run in units of their own: the service never moved; while the
        # agent is away its checkpoint writes fail (answered ERR, not counted), so no
        # answered increment is lost
        after = serving(probe, address, since=time.monotonic())
        continued(probe, address, after)
        assert after.value > before.value
        assert demo.holder("primary") == primary
    assert {target for _, target, _ in probe.lost} <= {address}


def test_killed_cluster_daemon_gets_its_node_fenced_and_nothing_is_lost(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    # A node whose cluster daemon died is no longer supervised: its peers fence it (the
    # harness power-cycles it), its services move, and it comes back as a member.
    for node in demo.names:
        before = probe.last()
        assert before is not None
        demo.cluster.kill_daemon(node, CLUSTERD)
        demo.cluster.wait_for(
            lambda n=node: _clusterd_back(demo, n), 60.0, f"{node} fenced, rebooted, rejoined"
        )
        settled(demo)
        primary = demo.holder("primary")
        assert primary is not None
        after = serving(probe, demo.address(primary), since=time.monotonic())
        continued(probe, before.target, after)


def _clusterd_back(demo: DemoCluster, node: str) -> bool:
    status = demo.cluster.status(node)
    return status is not None and len(status["members"]) == 3 and status["ccr"]["synced"]


def test_stopped_node_loses_its_service_to_another_and_rejoins_as_spare(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    old, new, took = fail_over(demo, probe, lambda n: _stop(demo, n))
    assert new != old and took < 10.0
    demo.cluster.start_node(old)
    settled(demo)
    assert demo.roles()[old] == "spare"


def _active(demo: DemoCluster) -> tuple[str, int, int | None] | None:
    """(the master's name, its availability service's decision sequence number, the decision
    its activation continued from) once the master's availability service is active."""
    for name in demo.names:
        status = demo.cluster.status(name)
        if status is None or status["master"] is None:
            continue
        master = status["node_names"][str(status["master"])]
        active = demo.cluster.status(master)
        if active is not None and active["availability"]["role"] == "active":
            a = active["availability"]
            return master, int(a["seq"]), a["restored_at"]
    return None


def _availability(demo: DemoCluster) -> tuple[str, int, int | None]:
    """:func:`_active`, waited for: a new master may still be taking over."""
    found: list[tuple[str, int, int | None]] = []

    def active() -> bool:
        now = _active(demo)
        found[:] = [now] if now is not None else []
        return bool(found)

    demo.cluster.wait_for(active, SETTLE, "the master's availability service active")
    return found[0]


def test_master_node_cut_and_booted_again_at_once_keeps_the_decisions(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    """The master's node comes back before its peers finished fencing it and, with the
    highest priority, is master again at once: it must continue from the checkpoint its
    successor wrote, not start the service from the initial state beside it."""
    master, seq, _ = _availability(demo)
    primary = demo.holder("primary")
    demo.power_cut(master)
    demo.cluster.start_node(master)
    settled(demo)
    demo.cluster.wait_for(
        lambda: _clusterd_back(demo, master), SETTLE, f"{master}'s daemon back in the cluster"
    )
    settled(demo)
    now_master, now_seq, restored_at = _availability(demo)
    # It continued from the checkpoint (not from the initial state), at or after the last
    # decision made before the cut; whether the cut node's departure was decided before it
    # was back depends on how quickly its peers fenced it.
    assert restored_at is not None, f"{now_master} started the service from the initial state"
    assert now_seq >= restored_at >= seq, f"decisions on {now_master}: {restored_at}, {now_seq}"
    serving_now = demo.holder("primary")
    assert serving_now is not None
    answer = serving(probe, demo.address(serving_now), time.monotonic())
    if primary is not None and primary != serving_now:
        continued(probe, demo.address(primary), answer)


def _stop(demo: DemoCluster, node: str) -> float:
    at = time.monotonic()
    demo.cluster.stop_node(node)
    return at


def test_locked_node_moves_its_services_away_until_unlocked(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    def lock(node: str) -> float:
        at = time.monotonic()
        answer = demo.cluster.control(node).request("operator", action="lock", target=node)
        assert not answer["refused"], answer
        return at

    old, new, _ = fail_over(demo, probe, lock)
    assert new != old
    assert demo.roles()[old] in ("spare", "offline")  # locked: takes no work
    answer = demo.cluster.control(new).request("operator", action="unlock", target=old)
    assert not answer["refused"], answer
    settled(demo)
    assert demo.holder("primary") == new  # no fail-back: the service stays where it is


def test_switchover_quiesces_the_primary_then_promotes_the_secondary(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    """A planned switchover (haosctl switchover): the old primary quiesces (stops serving
    once its last increment is checkpointed), then the secondary is promoted; the client
    loses no answered increment and the old primary stays on as the new secondary."""
    secondary = demo.holder("secondary")
    assert secondary is not None

    def switch(node: str) -> float:
        at = time.monotonic()
        target = member(int(node[1:]))
        answer = demo.cluster.control(node).request("operator", action="switchover", target=target)
        assert not answer["refused"], answer
        return at

    old, new, took = fail_over(demo, probe, switch)
    assert new == secondary and took < 10.0
    settled(demo)
    assert demo.roles()[old] in ("secondary", "spare")
    history = demo.cluster.control(new).request("history", limit=50)["history"]
    assert any("switchover" in str(e.get("reason", "")) for e in history), history


def test_all_nodes_started_at_once_place_the_service(
    demo: DemoCluster, probe: ProbeProcess
) -> None:
    # the fixture launched the three nodes together: one primary, one secondary, one spare
    assert sorted(demo.roles().values()) == ["primary", "secondary", "spare"]
    assert serving(probe, demo.address(demo.holder("primary") or "")).value >= 1


def test_nodes_stopped_one_by_one_then_started_one_by_one(cache: Path) -> None:
    # Fencing powers a departed node off here (not the default reboot), so it stays down.
    with DemoCluster(3, cache=cache, restart_max=1, fence_action="off") as demo:
        settled(demo)
        watcher = demo.names[-1]  # its namespace outlives its node's container
        with probing(demo, watcher) as probe:
            first, second, _ = demo.names
            demo.cluster.stop_node(first)
            demo.cluster.wait_for(
                lambda: _served_since(probe, time.monotonic() - 1.0), SETTLE, "served by two"
            )
            demo.cluster.stop_node(second)  # the last node alone has no quorum: it stops
            demo.cluster.wait_for(
                lambda: _nobody_serves(probe), 15.0, "the node without quorum stopped serving"
            )
            demo.cluster.start_node(second)
            demo.cluster.wait_for(
                lambda: _served_since(probe, time.monotonic() - 1.0), SETTLE, "served again"
            )
            demo.cluster.start_node(first)
            settled(demo)


def _nobody_serves(probe: ProbeProcess) -> bool:
    last = probe.last()
    return last is not None and time.monotonic() - last.t > 3.0


def _served_since(probe: ProbeProcess, since: float) -> bool:
    last = probe.last()
    return last is not None and last.t > since
