"""Power losses that take every holder of the in-memory state down at once.

On nodes with a real systemd (:class:`haoslab.demo.run.DemoCluster`): the 2N demo counter, whose
checkpoint is persistent, and a client that uses it throughout. After the power comes back the
availability service must continue from its stored decisions (not from the initial state), the
counter from the last answered value, and ``crim``'s "served" must mean that the primary runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from haoslab.demo.run import Answer, DemoCluster, ProbeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

SETTLE = 120.0  # seconds for the whole cluster to boot and place the counter again
SERVE = 120.0


def served(demo: DemoCluster) -> bool:
    crim = demo.crim()
    if crim is None:
        return False
    info = crim["instances"]["counter-si"]
    return bool(info["served"])


def the_truth(demo: DemoCluster) -> tuple[str, str]:
    """(the node the CRIM says serves, what that node's agent says its member runs as)."""
    crim = demo.crim()
    assert crim is not None
    info = crim["instances"]["counter-si"]
    assert info["primary"], info
    comp = info["primary"][0]
    node = crim["hosts"][comp]
    said = (crim["running"].get(node) or {}).get(comp) or {}
    return node, str(said.get("state"))


def active_availability(demo: DemoCluster) -> dict[str, object] | None:
    for name in demo.names:
        status = demo.cluster.status(name)
        if status is None:
            continue
        a = status.get("availability") or {}
        if a.get("role") == "active":
            return dict(a)
    return None


def after(probe: ProbeProcess, since: float) -> Answer:
    return probe.wait(lambda answers: next((a for a in answers if a.t > since), None), SERVE)


def check_continued(probe: ProbeProcess, cut_at: float, back: Answer) -> None:
    before = [a.value for a in probe.answers if a.t < cut_at]
    assert before, "the client was never served before the power loss"
    assert back.value > max(before), f"the counter went back: {max(before)} -> {back.value}"
    values = [a.value for a in probe.answers]
    assert values == sorted(set(values)), "an answered value came twice or went back"


def restart_and_check(demo: DemoCluster, probe: ProbeProcess, cut_at: float) -> None:
    """After the last power cut at ``cut_at`` (nothing of the old service can answer after
    it): served again, from the last answered value on, by the node that status names."""
    back = after(probe, cut_at)
    check_continued(probe, cut_at, back)
    demo.cluster.wait_for(lambda: served(demo), SETTLE, "status: the counter served")
    a = active_availability(demo)
    assert a is not None and a["restored_at"] is not None, (
        f"the availability service started from the initial state: {a}"
    )
    print(
        f"served again {back.t - cut_at:.1f} s after the last cut, at {back.value}"
        f" (last answered before: {max(x.value for x in probe.answers if x.t < cut_at)});"
        f" availability service restored at decision {a['restored_at']}, epoch {a['epoch']}"
    )
    node, runs_as = the_truth(demo)
    assert runs_as == "primary", f"status says served by {node}, whose agent says {runs_as}"
    now = time.monotonic()
    assert after(probe, now).target == demo.address(node), "served from elsewhere"


def test_two_nodes_power_cut_one_after_the_other_serve_on_from_the_last_value(
    cache: Path,
) -> None:
    """The secondary's node loses power and is fenced off; the primary serves alone (its
    increments held by no peer, only by the repository); then it loses power too. Both come
    back, the one that missed everything first."""
    with DemoCluster(2, cache=cache, fence_action="off") as demo:
        demo.wait_settled(SETTLE)
        primary, secondary = demo.holder("primary"), demo.holder("secondary")
        assert primary is not None and secondary is not None
        probe = demo.probe_from(secondary)
        try:
            after(probe, 0.0)
            time.sleep(1.0)  # some answered increments to lose, if anything is lost
            demo.power_cut(secondary)
            bridge = demo.cluster.bridge
            assert bridge is not None
            demo.cluster.wait_for(
                lambda: any(n == secondary for n, *_ in bridge.done), SETTLE, "fenced"
            )
            served_alone = time.monotonic()
            after(probe, served_alone)
            time.sleep(0.5)
            cut_at = demo.power_cut(primary)  # the whole cluster is down now
            assert [a for a in probe.answers if a.t > served_alone], "not served alone"
            demo.cluster.start_nodes(secondary, primary)
            restart_and_check(demo, probe, cut_at)
        finally:
            probe.close()


def test_master_and_vice_master_cut_together_serve_on_from_the_last_value(cache: Path) -> None:
    with DemoCluster(3, cache=cache) as demo:
        demo.wait_placed(SETTLE)
        status = demo.cluster.status(demo.names[0])
        assert status is not None
        ids = status["node_names"]
        master, vice = ids[str(status["master"])], ids[str(status["vice_master"])]
        third = next(n for n in demo.names if n not in (master, vice))
        # The primary on the third node, the one left standing: lock the other two, in turn,
        # then unlock them (no failback: the work stays where it is).
        ctl = demo.cluster.control(third)
        for node in (master, vice):
            ctl.request("operator", action="lock", target=node)
            demo.cluster.wait_for(
                lambda n=node: demo.roles()[n] not in ("primary", "secondary"),  # type: ignore[misc]
                SETTLE,
                f"work moved off {node}",
            )
        for node in (master, vice):
            ctl.request("operator", action="unlock", target=node)
        demo.wait_placed(SETTLE)
        assert demo.holder("primary") == third
        probe = demo.probe_from(third)
        try:
            after(probe, 0.0)
            time.sleep(1.0)
            demo.power_cut(master)
            cut_at = demo.power_cut(vice)
            demo.cluster.start_nodes(master, vice)
            restart_and_check(demo, probe, cut_at)
        finally:
            probe.close()
