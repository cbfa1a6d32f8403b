"""One appliance guest through the fail-safe boot: commit, a broken release, a good one, a hang.

The tests share one guest and run in file order, each starting from where the previous one
left the node (every boot-counting round costs a full boot under TCG). The guest tells what
happened through its report port: ``boot`` (which entry and root, written before any haos
Python runs), ``check`` (were the haos units healthy, and the slots as the check saw them) and
``commit`` (what the boot policy decided). Nothing here waits for a guessed time.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haos.errors import UnavailableError
from haoslab.vm.machine import Cluster, Machine
from haoslab.vm.reports import Report

pytestmark = pytest.mark.vm

BOOT = 420.0  # one boot under TCG, UEFI to the commit report, with room for a loaded host
HAOS_UNITS = {"haos-clusterd.service", "haos-agentd.service"}
APPLIANCE = "python3 -m haos.bootctl.appliance"
# The image's own root file system, offered to the guest as a read-only disk: the release.
RELEASE = "/dev/disk/by-id/virtio-haos-release"


@pytest.fixture(scope="module")
def node(image: Path, workdir: Path) -> Iterator[Machine]:
    with Cluster(image, workdir, 1) as cluster:
        cluster.start()
        yield cluster.node(1)


def reports(m: Machine) -> Any:
    assert m.reports is not None
    return m.reports


def boot_status(m: Machine) -> dict[str, Any]:
    out = m.sh("haosctl boot status --json", check=False)
    status: dict[str, Any] = json.loads(out)
    return status


def wait_commit(m: Machine, since: int, timeout: float = BOOT) -> Report:
    report: Report = reports(m).wait_event("commit", timeout, since)
    return report


def reboot(m: Machine) -> None:
    # The guest agent may vanish before it answers (the reboot takes it down): the boot
    # reports, not the agent, say whether the guest rebooted.
    with contextlib.suppress(UnavailableError):
        m.sh("systemctl reboot --no-block", check=False)


@pytest.mark.timeout(BOOT + 1300)
def test_image_boots_with_haos_units_active_and_slot_committed(node: Machine) -> None:
    started = time.monotonic()
    boot = reports(node).wait_event("boot", BOOT)
    commit = wait_commit(node, 0)
    print(f"commit report {time.monotonic() - started:.0f} s after QEMU started")

    assert boot["root"] == "haos-root-a" and boot["entry"] == "haos-a.conf"
    assert set(commit["units"]) >= HAOS_UNITS, commit["units"]
    assert all(state == "active/running" for state in commit["units"].values()), commit
    after = commit["after"]
    assert after["booted"] == "A" and after["committed"] == "A" and after["default"] == "A"
    assert after["slots"]["A"]["state"] == "committed"
    assert after["slots"]["A"]["release"] == commit["running_release"]
    status = boot_status(node)
    assert status["booted"] == "A" and status["committed"] == "A" and not status["problems"]
    assert node.sh("systemctl is-active " + " ".join(sorted(HAOS_UNITS))).split() == [
        "active",
        "active",
    ]


@pytest.mark.timeout(4 * BOOT)
def test_broken_release_falls_back_to_committed_release_by_itself(node: Machine) -> None:
    committed = boot_status(node)["slots"][0]["release"]
    # A release whose haos package cannot even be imported: its units and its boot check die.
    broken = "/tmp/broken/usr/lib/haos/python/haos"
    node.sh(
        f"mkdir -p {broken} && "
        f"echo 'raise ImportError(\"deliberately broken release\")' > {broken}/__init__.py"
    )
    mark = reports(node).mark()
    install = f"{APPLIANCE} install broken-1 --image {RELEASE} --overlay /tmp/broken --tries 2"
    out = node.sh(install, timeout=900)
    assert "broken-1" in out
    status = boot_status(node)
    assert status["trial"] == "B" and status["committed"] == "A"
    assert status["slots"][1]["entry"] == "haos-b+2.conf"
    reboot(node)

    # No operator action from here: two tries of B, then systemd-boot goes back to A.
    fallback = wait_commit(node, mark, timeout=3 * BOOT)
    boots = [r for r in reports(node).reports[mark:] if r["event"] == "boot"]
    assert [(b["entry"], b["root"]) for b in boots] == [
        ("haos-b+2.conf", "haos-root-b"),
        ("haos-b+1-1.conf", "haos-root-b"),
        ("haos-a.conf", "haos-root-a"),
    ]
    assert [b["release"] for b in boots] == ["broken-1", "broken-1", committed]
    assert fallback["slot"] == "A" and fallback["running_release"] == committed
    assert "failed after 2 tries" in fallback["reasons"][0], fallback["reasons"]
    after = fallback["after"]
    assert after["committed"] == "A" and after["default"] == "A" and after["trial"] is None
    assert after["slots"]["B"]["state"] == "bad"
    assert after["slots"]["B"]["release"] == "broken-1"


@pytest.mark.timeout(2 * BOOT)
def test_good_release_is_committed_only_after_it_proved_itself(node: Machine) -> None:
    mark = reports(node).mark()
    node.sh(f"{APPLIANCE} install good-2 --image {RELEASE} --tries 2", timeout=900)
    reboot(node)

    check = reports(node).wait_event("check", BOOT, mark)
    commit = wait_commit(node, mark)
    # While the units proved themselves the release was still on trial, A still the fallback.
    assert check["slot"] == "B" and check["verdict"] == "healthy"
    assert check["boot"]["slots"]["B"]["state"] == "trying"
    assert check["boot"]["committed"] == "A"
    assert commit["before"]["slots"]["B"]["state"] == "trying"
    assert commit["running_release"] == "good-2"
    assert all(state == "active/running" for state in commit["units"].values()), commit
    assert commit["reasons"][-1].startswith("committed release good-2 in slot B")
    after = commit["after"]
    assert after["committed"] == "B" and after["default"] == "B" and after["trial"] is None
    assert after["slots"]["B"]["entry"] == "haos-b.conf"
    status = boot_status(node)
    assert status["booted"] == "B" and status["committed"] == "B" and not status["problems"]


@pytest.mark.timeout(2 * BOOT)
def test_hung_systemd_is_reset_by_the_hardware_watchdog(node: Machine) -> None:
    before = reports(node).reports[-1]["boot_id"]
    mark = reports(node).mark()
    qmp = node.qmp()
    qmp.events.clear()
    # PID 1's crash handler freezes systemd on SIGABRT: it stops petting /dev/watchdog.
    node.sh("kill -ABRT 1", check=False)
    event = qmp.wait_event("WATCHDOG", timeout=120)
    assert event["data"]["action"] == "reset"
    boot = reports(node).wait_event("boot", BOOT, mark)
    assert boot["boot_id"] != before
    assert boot["entry"] == "haos-b.conf"  # the committed release boots again
    commit = wait_commit(node, mark)
    assert all(state == "active/running" for state in commit["units"].values()), commit
