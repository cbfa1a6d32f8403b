"""Three appliance guests on two virtual links: every link carries traffic between all nodes,
one cut link leaves the other working, and PCI hot-plug reaches the guest's udev. Node 3 is
a board flashed with a provisioned image: no fw_cfg at all. Node 1 tries a release that
cannot rejoin and falls back. Node 2, cut off from both links, resets itself by its watchdog.

The links are hubs over unix datagram sockets on the host (no host interface is involved);
a link is cut with QMP ``set_link`` on one guest's NIC, as a pulled cable would be. The tests
run in file order on one cluster; the last one leaves node 2 unadmitted (see there).

No guest has a fence device: nothing on the host powers a guest off when it departs (a
daemon restarted on a starved guest must not cost the rest of the module its guest).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from haos.errors import UnavailableError
from haoslab.harness.config import ClusterSpec
from haoslab.vm.guestconfig import GuestOptions, guest_cluster_toml
from haoslab.vm.machine import GUEST_TIMING, LINKS, Cluster, Machine, qemu_argv
from haoslab.vm.reports import Report

pytestmark = pytest.mark.vm

N = 3
BOOT_ALL = 600.0  # three TCG guests at once on two cores
BOOT = 420.0  # one guest's boot while the others run
PROVISIONED = 3  # no fw_cfg: boots its own image, provisioned with haosctl provision
SELF_FENCING = 2  # the one guest whose softdog is free: it self-fences
TRIAL = 1  # tries a release that cannot rejoin
PROVING = 60.0  # [boot] proving_timeout: how long the trial may take to rejoin
# [fencing] without self_fence: the appliance's default, /dev/watchdog-haos (softdog) where
# it is free -- inquorate for 5 s, the daemon stops petting it, 10 s later it resets the node.
OPTIONS = GuestOptions(
    self_fence="default",
    no_device=frozenset(range(1, N + 1)),
    proving_timeout=f"{PROVING:.0f}s",
)
APPLIANCE = "python3 -m haos.bootctl.appliance"
RELEASE = "/dev/disk/by-id/virtio-haos-release"
GATES = (
    "python3 -c 'import json; from haos.services.control import ControlClient; "
    'print(json.dumps(ControlClient("/run/haos/control.sock").request("boot_gates")))\''
)
T = TypeVar("T")
STARTED: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(image: Path, workdir: Path) -> Iterator[Cluster]:
    # Only node 2 has an i6300esb: systemd holds it (RuntimeWatchdogSec), as on a board, so
    # softdog is free for haos-clusterd to self-fence through. Elsewhere systemd holds softdog
    # and the daemons go without self-fencing: three TCG guests share two host cores, and a
    # daemon starved past its WatchdogSec would reset its guest. The i6300esb's expiry only
    # reports here (action none): a guest whose vCPUs starve for RuntimeWatchdogSec (15 s) is
    # no hang. Its reset has its own test on a single guest (test_vm_boot.py).
    toml = guest_cluster_toml(ClusterSpec(nodes=N, **GUEST_TIMING), "vm", OPTIONS)
    with Cluster(
        image,
        workdir,
        N,
        memory_mb=768,
        watchdog=frozenset({SELF_FENCING}),
        watchdog_action="none",
        config_toml=toml,
        no_fw_cfg=frozenset({PROVISIONED}),
    ) as c:
        STARTED["wall"] = time.time()
        c.start()
        yield c


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """The first true value of ``probe`` (each call a guest-agent round trip)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(2.0)


def reports(m: Machine) -> Any:
    assert m.reports is not None
    return m.reports


def boot_gates(m: Machine) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = json.loads(m.sh(GATES, check=False) or "{}")
    except (UnavailableError, ValueError):
        return {}
    return answer


def boot_status(m: Machine) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(m.sh("haosctl boot status --json"))
    return status


def reboot(m: Machine) -> None:
    # The agent may vanish before it answers: the boot reports say whether it rebooted.
    with contextlib.suppress(UnavailableError):
        m.sh("systemctl reboot --no-block", check=False)


def self_fencing(m: Machine) -> str | None:
    """The daemon's line saying it fired its self-fencer this boot, if it has."""
    script = "journalctl -b -u haos-clusterd -o cat --no-pager | grep 'self-fencing: '"
    try:
        return m.sh(script, timeout=10, check=False).strip() or None
    except UnavailableError:
        return None


def boot_id(m: Machine) -> str:
    return m.sh("cat /proc/sys/kernel/random/boot_id").strip()


def address(node: int, link: int) -> str:
    return f"10.{10 + link}.0.{node}"


def reachable(m: Machine, node: int, link: int) -> bool:
    """One ping from ``m`` to ``node`` on ``link`` (the subnet picks the interface)."""
    out = m.sh(f"ping -n -q -c 1 -W 3 {address(node, link)} >/dev/null && echo ok", check=False)
    return out.strip() == "ok"


def members(m: Machine) -> int:
    try:
        out = m.sh("corosync-quorumtool -s | sed -n 's/^Total votes: *//p'", check=False)
    except UnavailableError:
        return 0
    return int(out.strip() or 0)


def member_names(m: Machine) -> dict[int, str]:
    """node id -> name, as ``m``'s corosync lists its members."""
    out = m.sh("corosync-quorumtool -l", check=False)
    rows = [line.split() for line in out.splitlines()]
    # "    3          1 n3 (local)"
    return {int(r[0]): r[2] for r in rows if len(r) >= 3 and r[0].isdigit()}


@pytest.mark.timeout(BOOT_ALL + 1500)
def test_both_links_carry_traffic_between_all_nodes(cluster: Cluster) -> None:
    started = time.monotonic()
    for m in cluster.machines:
        assert m.reports is not None
        commit = m.reports.wait_event("commit", BOOT_ALL)
        assert all(s == "active/running" for s in commit["units"].values()), commit
    print(f"{N} guests committed, haos units active, {time.monotonic() - started:.0f} s")
    commit = reports(cluster.node(PROVISIONED)).wait_event("commit", 1)
    took = commit["received"] - STARTED["wall"]
    print(f"n{PROVISIONED} (no fw_cfg, provisioned image): committed {took:.0f} s after start")
    for m in cluster.machines:
        for link in range(LINKS):
            for peer in range(1, N + 1):
                if peer != m.spec.node:
                    assert reachable(m, peer, link), f"n{m.spec.node} -> n{peer} on link {link}"
    assert all(hub.frames > 0 for hub in cluster.hubs)
    assert members(cluster.node(1)) == N


@pytest.mark.timeout(300)
def test_guest_without_fw_cfg_joins_as_the_node_its_provisioned_image_names(
    cluster: Cluster,
) -> None:
    node = cluster.node(PROVISIONED)
    assert "-fw_cfg" not in qemu_argv(node.spec)
    fw_cfg = "/sys/firmware/qemu_fw_cfg/by_name"
    # The fw_cfg driver is there (QEMU's own entries), but nothing of haos' is.
    assert node.sh(f"test -d {fw_cfg}/etc && echo yes").strip() == "yes"
    assert node.sh(f"test -e {fw_cfg}/opt/haos || echo absent").strip() == "absent"
    assert node.sh("hostname").strip() == f"n{PROVISIONED}"
    setup = node.sh("journalctl -b -u haos-node-setup -o cat --no-pager")
    assert f"node n{PROVISIONED} (from /var/lib/haos/provision/node.env)" in setup, setup
    assert "installed /etc/corosync/authkey" in setup
    names = member_names(cluster.node(1))
    assert names == {n: f"n{n}" for n in range(1, N + 1)}, names
    gates = wait_for(lambda: boot_gates(node).get("rejoined") and boot_gates(node), 120, "n3")
    assert gates["rejoined"], gates
    took = time.time() - STARTED["wall"]
    print(f"n{PROVISIONED} (no fw_cfg) an admitted member, checked {took:.0f} s after start")


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


def trial_overlay(node: Machine) -> str:
    """A tree whose corosync starts with a key of its own: the node boots, but never rejoins."""
    overlay = "/tmp/norejoin"
    dropin = f"{overlay}/etc/systemd/system/corosync.service.d"
    node.sh(
        f"mkdir -p {dropin} && cat > {dropin}/50-other-key.conf <<'EOF'\n"
        "[Unit]\nAfter=haos-node-setup.service\n[Service]\n"
        "ExecStartPre=/bin/sh -c 'head -c 256 /dev/urandom > /etc/corosync/authkey'\nEOF\n"
    )
    return overlay


def boots_since(node: Machine, mark: int) -> list[Report]:
    return [r for r in reports(node).reports[mark:] if r["event"] == "boot"]


@pytest.mark.timeout(4 * BOOT)
def test_release_that_never_rejoins_falls_back_and_every_node_keeps_its_committed_release(
    cluster: Cluster,
) -> None:
    node = cluster.node(TRIAL)
    before = {m.spec.node: boot_status(m) for m in cluster.machines}
    assert all(st["committed"] == "A" and st["trial"] is None for st in before.values()), before
    committed = before[TRIAL]["slots"][0]["release"]
    overlay = trial_overlay(node)
    mark = reports(node).mark()
    # Niced: copying the release under TCG starves the guest's daemons otherwise.
    install = f"nice -n 19 {APPLIANCE} install norejoin-1 --image {RELEASE} --tries 1"
    install += f" --overlay {overlay}"
    assert "norejoin-1" in node.sh(install, timeout=900)
    assert boot_status(node)["trial"] == "B"
    reboot(node)

    check = reports(node).wait(
        lambda r: r["event"] == "check" and r.get("slot") == "B", BOOT, mark, "trial check"
    )
    trial = boots_since(node, mark)[0]
    commit = reports(node).wait_event("commit", 2 * BOOT, mark)
    fallback = boots_since(node, mark)[-1]
    took = fallback["received"] - trial["received"]
    print(f"trial boot -> booted the committed release again: {took:.0f} s")
    assert [(b["entry"], b["root"], b["release"]) for b in boots_since(node, mark)] == [
        ("haos-b+1.conf", "haos-root-b", "norejoin-1"),
        ("haos-a.conf", "haos-root-a", committed),
    ]
    # The trial waited its proving time for a cluster daemon that never got ready.
    assert check["verdict"] == "fail-boot" and check["timeout"] == PROVING, check
    assert check["units"]["haos-clusterd.service"] != "active/running", check["units"]
    assert took > PROVING
    assert commit["slot"] == "A" and commit["running_release"] == committed
    assert "failed after 1 tries" in commit["reasons"][0], commit["reasons"]
    after = commit["after"]
    assert after["committed"] == "A" and after["default"] == "A" and after["trial"] is None
    assert after["slots"]["B"]["state"] == "bad" and after["slots"]["B"]["release"] == "norejoin-1"
    for m in cluster.machines:
        status = boot_status(m)
        assert status["committed"] == "A" and status["booted"] == "A", (m.spec.node, status)
        assert status["slots"][0]["release"] == before[m.spec.node]["slots"][0]["release"]
    gates = wait_for(lambda: boot_gates(node).get("rejoined") and boot_gates(node), 180, "rejoin")
    assert gates["rejoined"] and members(cluster.node(1)) == N


@pytest.mark.timeout(3 * BOOT)
def test_guest_cut_off_from_both_links_resets_itself_by_its_watchdog(cluster: Cluster) -> None:
    node = cluster.node(SELF_FENCING)
    survivors = [m for m in cluster.machines if m is not node]
    wait_for(lambda: members(node) == N, 180, f"n{SELF_FENCING} in a quorate view of {N}")
    # haos-clusterd self-fences through softdog; systemd holds the i6300esb.
    devices = node.sh(
        "for d in /sys/class/watchdog/*; do echo ${d##*/}=$(cat $d/identity); done; "
        "echo haos=$(basename $(readlink -f /dev/watchdog-haos))"
    )
    ids = dict(line.split("=", 1) for line in devices.splitlines() if "=" in line)
    assert ids["watchdog0"] == "i6300ESB timer" and ids[ids["haos"]] == "Software Watchdog", ids
    armed = node.sh("journalctl -b -u haos-clusterd -o cat --no-pager | grep 'self-fencing on'")
    assert "/dev/watchdog-haos (timeout 10 s)" in armed, armed
    others = {m.spec.node: boot_id(m) for m in survivors}
    before = boot_id(node)
    console = node.spec.file("console.log").stat().st_size
    mark = reports(node).mark()
    qmp = node.qmp()
    qmp.events.clear()
    cut = time.monotonic()
    for link in range(LINKS):
        qmp.set_link(f"link{link}", up=False)
    try:
        # The daemon says why between firing and the reset (the watchdog's timeout): read it
        # through the guest agent, which needs no link (a sudden reset may lose the journal's
        # last lines on disk).
        fired = wait_for(lambda: self_fencing(node), 60, f"n{SELF_FENCING} self-fencing")
        reset = qmp.wait_event("RESET", 120)
        took = time.monotonic() - cut
        print(f"n{SELF_FENCING} cut off from both links -> reset by its watchdog: {took:.0f} s")
        assert reset["data"]["guest"], reset  # the guest's own kernel, not the host
        boot = reports(node).wait_event("boot", BOOT, mark)
        assert boot["boot_id"] != before
    finally:
        for link in range(LINKS):
            qmp.set_link(f"link{link}", up=True)
    with node.spec.file("console.log").open("rb") as f:
        f.seek(console)
        text = f.read().decode("utf-8", errors="replace")
    assert "softdog: Initiating system reboot" in text, text[-3000:]
    assert not [e for e in qmp.events if e["event"] == "WATCHDOG"]  # not the i6300esb
    assert "self-fencing: inquorate for" in fired, fired
    assert {m.spec.node: boot_id(m) for m in survivors} == others  # nobody else reset
    # Back on its links it rejoins the membership. Its peers could not confirm it fenced (it
    # has no fence device), so they do not admit it again (the CMM's rule): it holds no work.
    # (Its peers cannot self-fence: systemd holds their softdog; nor were they reset.)
    wait_for(lambda: members(cluster.node(1)) == N, BOOT, f"n{SELF_FENCING} back in corosync")
    assert members(node) == N
