"""Three cluster nodes with a real systemd each: corosync runs as a systemd service in them.

The harness topology (namespaces ``haos-<id>-nK`` with two links into a switch namespace) is
built from :mod:`haoslab.harness.netns` directly, without the harness's own corosyncs;
each node namespace then holds a systemd-nspawn container booted from ``image/noderoot.sh``'s
cache, with the harness's corosync.conf and ``corosync.service`` enabled. Everything is
checked gone afterwards: containers, overlay mounts, cgroups, namespaces, processes.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from haos.errors import UsageError
from haoslab.harness import netns, nspawn
from haoslab.harness.config import ClusterSpec, render_corosync_conf
from haoslab.harness.errors import HarnessError, HarnessTimeout
from haoslab.harness.nspawn import (
    NspawnNode,
    Topology,
    cgroup_leftovers,
    mounts_under,
    topology,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
NODEROOT_CACHE = Path("/var/cache/haos/noderoot")
DEADLINE = 30.0  # any awaited condition; typical waits are a few seconds at most
LEAVE_BOUND = 2.0  # seconds: a gracefully stopped corosync leaves the ring at once
ALL = {1, 2, 3}


def skip_unless_possible() -> None:
    reason = nspawn.unavailable()
    if reason is not None:
        pytest.skip(reason)


def build_noderoot() -> Path:
    started = time.monotonic()
    root = nspawn.build_noderoot(REPO, NODEROOT_CACHE)
    print(f"node root ready in {time.monotonic() - started:.1f} s")
    return root


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = DEADLINE) -> float:
    """Re-check ``predicate`` (each check is a command in a container) until it holds;
    return the seconds waited, fail at the deadline."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not true after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def assert_nothing_left(topo: Topology, nodes: list[NspawnNode]) -> None:
    assert [f for node in nodes for f in node.leftovers()] == []
    assert mounts_under(topo.workdir) == []
    assert netns.tasks_in(topo.idents) == []
    assert [
        p for p in cgroup_leftovers() if p.name.startswith(f"haos-{topo.names.cluster_id}-")
    ] == []


def boot(topo: Topology, node: int, cache: Path, **kwargs: Any) -> NspawnNode:
    """An NspawnNode (not booted yet) for harness node ``node`` in its namespace."""
    workdir = topo.workdir / f"n{node}"
    workdir.mkdir()
    return NspawnNode(topo.machine(node), cache, topo.netns_path(node), workdir, **kwargs)


@pytest.fixture(scope="module")
def cache() -> Path:
    skip_unless_possible()
    return build_noderoot()


def test_three_nspawn_nodes_form_one_membership_and_drop_a_stopped_corosync(
    cache: Path,
) -> None:
    spec = ClusterSpec(nodes=3)
    nodes: dict[int, NspawnNode] = {}
    with topology(spec.nodes) as topo:
        conf, key = render_corosync_conf(spec, topo.names), secrets.token_bytes(256)
        with contextlib.ExitStack() as stack:
            started = time.monotonic()
            for k in spec.node_ids:
                nodes[k] = stack.enter_context(
                    boot(topo, k, cache, corosync_conf=conf, authkey=key)
                )
                print(f"n{k}: launch to running {nodes[k].running_after:.2f} s")
            all_running = time.monotonic() - started
            wait_for(
                "every node sees all three",
                lambda: all(n.corosync_members() == ALL for n in nodes.values()),
            )
            print(
                f"3 nodes booted one after another: all running {all_running:.2f} s, "
                f"one membership of 3 {time.monotonic() - started:.2f} s after the first launch"
            )
            for node in nodes.values():
                assert node.unit_state("corosync.service") == "active"
                assert node.quorate()

            stopped_at = time.monotonic()
            nodes[3].run(["systemctl", "stop", "corosync.service"])
            stop_took = time.monotonic() - stopped_at
            wait_for(
                "n1 and n2 drop n3",
                lambda: all(nodes[k].corosync_members() == {1, 2} for k in (1, 2)),
            )
            dropped = time.monotonic() - stopped_at
            print(
                f"systemctl stop returned after {stop_took:.2f} s, n3 dropped after {dropped:.2f} s"
            )
            assert dropped < LEAVE_BOUND
            assert nodes[3].unit_state("corosync.service") == "inactive"
            assert nodes[1].quorate() and nodes[2].quorate()
        assert_nothing_left(topo, list(nodes.values()))
    assert not [n for n in netns.present() if n.startswith(f"haos-{topo.names.cluster_id}-")]
    assert not topo.workdir.exists()


def test_a_node_that_misses_its_boot_deadline_is_torn_down(cache: Path) -> None:
    with topology(1) as topo:
        node = boot(topo, 1, cache, boot_timeout=0.05)
        with pytest.raises(HarnessTimeout, match=r"within 0\.05 s"):
            node.__enter__()
        assert_nothing_left(topo, [node])
        assert not (topo.workdir / "n1" / "root" / "etc").exists()  # the overlay is gone


def test_a_node_without_its_namespace_is_refused_before_anything_is_made(
    cache: Path, tmp_path: Path
) -> None:
    node = NspawnNode("haos-nonet", cache, Path("/run/netns/haos-no-such-ns"), tmp_path)
    with pytest.raises(HarnessError, match="no network namespace"):
        node.__enter__()
    assert node.leftovers() == [] and list(tmp_path.iterdir()) == []


def test_a_node_whose_power_is_cut_while_it_boots_fails_its_wait_saying_so(cache: Path) -> None:
    with topology(1) as topo:
        node = boot(topo, 1, cache)

        def booting() -> bool:
            with contextlib.suppress(UsageError):
                return node.leader > 0  # its PID 1 is there: await_running waits for systemd
            return False

        def fence() -> None:  # what a fence device does from its own thread
            wait_for("the container's PID 1", booting)
            node.power_cut()

        try:
            node.launch()
            cutter = threading.Thread(target=fence)
            cutter.start()
            with pytest.raises(HarnessError, match="powered off while waiting for systemd"):
                node.await_running()
            cutter.join()
            with pytest.raises(HarnessError, match="powered off while waiting for the container"):
                node.await_running()  # and at once when asked again
        finally:
            node.close()
        assert_nothing_left(topo, [node])
