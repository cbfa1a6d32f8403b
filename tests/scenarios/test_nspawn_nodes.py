"""Three cluster nodes with a real systemd each: corosync runs as a systemd service in them.

The harness topology (namespaces ``haos-<id>-nK`` with two links into a switch namespace) is
built from :mod:`haos.cluster.harness.netns` directly, without the harness's own corosyncs;
each node namespace then holds a systemd-nspawn container booted from ``image/noderoot.sh``'s
cache, with the harness's corosync.conf and ``corosync.service`` enabled. Everything is
checked gone afterwards: containers, overlay mounts, cgroups, namespaces, processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from haos.cluster.harness import netns, owner
from haos.cluster.harness.config import ClusterSpec, render_corosync_conf
from haos.cluster.harness.errors import HarnessError, HarnessTimeout
from haos.cluster.harness.netns import Names, NsIdent
from haos.cluster.harness.nspawn import NspawnNode, cgroup_leftovers

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
NODEROOT_CACHE = Path("/var/cache/haos/noderoot")
TOOLS = ("debootstrap", "systemd-nspawn", "mount", "umount", "nsenter", "ip")
DEADLINE = 30.0  # any awaited condition; typical waits are a few seconds at most
LEAVE_BOUND = 2.0  # seconds: a gracefully stopped corosync leaves the ring at once
ALL = {1, 2, 3}


def skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap, mounts, cgroups, namespaces, systemd-nspawn")
    for tool in TOOLS:
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"needs {tool} (apt-get install debootstrap systemd-container iproute2)")
    if not all(Path(h).is_dir() for h in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")):
        pytest.skip("needs the unified and name=systemd cgroup hierarchies")


def build_noderoot() -> Path:
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "image" / "noderoot.sh"), str(NODEROOT_CACHE)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert proc.returncode == 0, f"image/noderoot.sh failed (mirror unreachable?):\n{proc.stderr}"
    print(f"node root ready in {time.monotonic() - started:.1f} s")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class Topology:
    names: Names
    workdir: Path
    idents: list[NsIdent]
    namespaces: list[str]


@contextlib.contextmanager
def topology(nodes: int) -> Iterator[Topology]:
    """The harness's namespaces and links for ``nodes`` nodes, nothing running in them."""
    workdir = owner.claim_workdir(owner.DEFAULT_BASE)
    topo = Topology(Names(workdir.name), workdir, [], [])
    try:
        assert netns.claim_switch(topo.names), f"namespace {topo.names.switch} exists"
        topo.namespaces.append(topo.names.switch)
        topo.idents.append(netns.ident(topo.names.switch))
        netns.build_switch(topo.names)
        for node in range(1, nodes + 1):
            topo.namespaces.append(topo.names.node(node))
            netns.add_node(topo.names, node)
            topo.idents.append(netns.ident(topo.names.node(node)))
        yield topo
    finally:
        netns.kill_processes(topo.idents)
        for name in reversed(topo.namespaces):
            netns.delete_netns(name)
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            owner.DEFAULT_BASE.rmdir()


def members(node: NspawnNode) -> set[int]:
    """Node ids in the node's current corosync membership; empty while it cannot say."""
    out = node.run(["corosync-quorumtool", "-l", "-p"], timeout=5, check=False)
    found = set()
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            found.add(int(fields[0]))
    return found


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = DEADLINE) -> float:
    """Re-check ``predicate`` (each check is a command in a container) until it holds;
    return the seconds waited, fail at the deadline."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not true after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [m for line in f if (m := line.split()[4]).startswith(prefix)]


def unit_state(node: NspawnNode, unit: str) -> str:
    return node.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def quorate(node: NspawnNode) -> bool:
    out = node.run(["corosync-quorumtool", "-s"], timeout=5, check=False).stdout
    return any(line.split() == ["Quorate:", "Yes"] for line in out.splitlines())


def assert_nothing_left(topo: Topology, nodes: list[NspawnNode]) -> None:
    assert [f for node in nodes for f in node.leftovers()] == []
    assert mounts_under(topo.workdir) == []
    assert netns.tasks_in(topo.idents) == []
    assert cgroup_leftovers() == []


def boot(topo: Topology, node: int, cache: Path, **kwargs: Any) -> NspawnNode:
    """An NspawnNode (not booted yet) for harness node ``node`` in its namespace."""
    workdir = topo.workdir / f"n{node}"
    workdir.mkdir()
    name = f"haos-{topo.names.cluster_id}-n{node}"
    return NspawnNode(name, cache, Names.path(topo.names.node(node)), workdir, **kwargs)


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
                "every node sees all three", lambda: all(members(n) == ALL for n in nodes.values())
            )
            print(
                f"3 nodes booted one after another: all running {all_running:.2f} s, "
                f"one membership of 3 {time.monotonic() - started:.2f} s after the first launch"
            )
            for node in nodes.values():
                assert unit_state(node, "corosync.service") == "active"
                assert quorate(node)

            stopped_at = time.monotonic()
            nodes[3].run(["systemctl", "stop", "corosync.service"])
            stop_took = time.monotonic() - stopped_at
            wait_for("n1 and n2 drop n3", lambda: all(members(nodes[k]) == {1, 2} for k in (1, 2)))
            dropped = time.monotonic() - stopped_at
            print(
                f"systemctl stop returned after {stop_took:.2f} s, n3 dropped after {dropped:.2f} s"
            )
            assert dropped < LEAVE_BOUND
            assert unit_state(nodes[3], "corosync.service") == "inactive"
            assert quorate(nodes[1]) and quorate(nodes[2])
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
