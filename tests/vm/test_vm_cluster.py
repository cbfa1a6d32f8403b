"""Three appliance guests on two virtual links: every link carries traffic between all nodes,
one cut link leaves the other working, and PCI hot-plug reaches the guest's udev.

The links are hubs over unix datagram sockets on the host (no host interface is involved);
a link is cut with QMP ``set_link`` on one guest's NIC, as a pulled cable would be.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haoslab.vm.machine import LINKS, Cluster, Machine

pytestmark = pytest.mark.vm

N = 3
BOOT_ALL = 600.0  # three TCG guests at once on two cores


@pytest.fixture(scope="module")
def cluster(image: Path, workdir: Path) -> Iterator[Cluster]:
    # No hardware watchdog here: three TCG guests share two host cores, and a guest whose
    # vCPUs are starved for RuntimeWatchdogSec would be reset although nothing hung. The
    # watchdog has its own test on a single guest (test_vm_boot.py).
    with Cluster(image, workdir, N, memory_mb=768, watchdog=False) as c:
        c.start()
        yield c


def address(node: int, link: int) -> str:
    return f"10.{10 + link}.0.{node}"


def reachable(m: Machine, node: int, link: int) -> bool:
    """One ping from ``m`` to ``node`` on ``link`` (the subnet picks the interface)."""
    out = m.sh(f"ping -n -q -c 1 -W 3 {address(node, link)} >/dev/null && echo ok", check=False)
    return out.strip() == "ok"


def members(m: Machine) -> int:
    out = m.sh("corosync-quorumtool -s | sed -n 's/^Total votes: *//p'", check=False)
    return int(out.strip() or 0)


@pytest.mark.timeout(BOOT_ALL + 1500)
def test_both_links_carry_traffic_between_all_nodes(cluster: Cluster) -> None:
    started = time.monotonic()
    for m in cluster.machines:
        assert m.reports is not None
        commit = m.reports.wait_event("commit", BOOT_ALL)
        assert all(s == "active/running" for s in commit["units"].values()), commit
    print(f"{N} guests committed, haos units active, {time.monotonic() - started:.0f} s")
    for m in cluster.machines:
        for link in range(LINKS):
            for peer in range(1, N + 1):
                if peer != m.spec.node:
                    assert reachable(m, peer, link), f"n{m.spec.node} -> n{peer} on link {link}"
    assert all(hub.frames > 0 for hub in cluster.hubs)
    assert members(cluster.node(1)) == N


@pytest.mark.timeout(300)
def test_cutting_one_link_leaves_the_other_working(cluster: Cluster) -> None:
    n1, n2 = cluster.node(1), cluster.node(2)
    n1.qmp().set_link("link0", up=False)
    try:
        assert not reachable(n1, 2, 0) and not reachable(n2, 1, 0)
        for peer in (2, 3):
            assert reachable(n1, peer, 1), f"n1 -> n{peer} on link 1 with link 0 cut"
        assert reachable(n2, 3, 0), "the cut is n1's cable only"
        assert members(n2) == N  # corosync keeps n1 over the remaining link
    finally:
        n1.qmp().set_link("link0", up=True)
    deadline = time.monotonic() + 30
    while not reachable(n1, 2, 0):
        assert time.monotonic() < deadline, "link 0 did not come back after set_link up"


@pytest.mark.timeout(300)
def test_hot_plugged_nic_reaches_the_guests_udev_and_leaves_again(cluster: Cluster) -> None:
    n3 = cluster.node(3)
    mac = "52:54:00:4a:03:09"
    find = f"grep -l {mac} /sys/class/net/*/address | cut -d/ -f5"
    qmp = n3.qmp()
    qmp.device_add("virtio-net-pci", "hotnic", bus="hp0", mac=mac)
    deadline = time.monotonic() + 60
    while not n3.sh(find, check=False).strip():
        assert time.monotonic() < deadline, "the guest never saw the hot-plugged NIC"
    # The kernel names it eth0 and udev renames it (enp1s0): ask for its
    # properties once udev has handled the queued events, by the final name.
    query = "udevadm info --query=property --path=/sys/class/net"
    while True:
        res = n3.sh(f"udevadm settle -t 30; {query}/$({find})", check=False)
        if "ID_NET_NAME_PATH=" in res or time.monotonic() > deadline:
            break
    iface = n3.sh(find).strip()
    props = n3.sh(f"udevadm info --query=property --path=/sys/class/net/{iface}")
    assert "ID_NET_NAME_PATH=" in props and f"INTERFACE={iface}" in props
    qmp.device_del("hotnic")
    assert n3.sh(find, check=False).strip() == ""
