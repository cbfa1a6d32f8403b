"""Fencing as cluster.toml's ``[fencing]`` says, on three nodes with a real systemd.

Each test boots the 2N demo counter (:class:`haoslab.demo.run.DemoCluster`: corosync,
haos-clusterd and haos-agentd as services, the units of ``units/`` unchanged), cuts the power
of the node holding the primary and checks that a peer fenced it through the device the
configuration names, that only then the secondary took over, and that the node came back:

* ``command``: the harness's fence bridge, written into cluster.toml by the harness;
* ``agent = "fence_ipmilan"``: Debian's agent, unchanged, in the nodes, talking IPMI over
  the cluster's first link to a simulated BMC per node (``ipmi_sim`` in the switch
  namespace, :mod:`._bmc`) whose chassis power control powers the container off and on.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from _bmc import BASE_PORT, PASSWORD, USER, SimulatedBmcs

from haoslab.demo.cluster import demo_toml
from haoslab.demo.run import DemoCluster
from haoslab.harness.systemd_cluster import CLUSTERD, SystemdCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

TAKEOVER = 60.0  # seconds from the power cut until the secondary is primary
REJOIN = 120.0  # seconds until the fenced node is back and the counter placed in full
PASSWORD_FILE = "/etc/haos/fence/bmc.pass"


class ConfiguredDemo(DemoCluster):
    """The demo cluster with ``fencing`` appended to its cluster.toml and ``files`` in every
    node (the harness's fence bridge runs for whatever the device calls)."""

    def __init__(self, cache: Path, fencing: str, files: Mapping[str, str]) -> None:
        super().__init__(3, cache=cache)
        self.cluster = SystemdCluster(
            self.spec,
            cache=cache,
            agent=True,
            config_toml=demo_toml(self.spec) + fencing,
            fence=True,
            files=files,
        )


def node_file(c: SystemdCluster, node: str, path: str) -> str:
    return Path(f"/proc/{c.node(node).leader}/root{path}").read_text()


def power_cut_primary_and_wait_for_takeover(demo: DemoCluster) -> tuple[str, str]:
    """Cut the primary's power; (old primary, the secondary that took over)."""
    demo.wait_placed()
    primary, secondary = demo.holder("primary"), demo.holder("secondary")
    assert primary is not None and secondary is not None
    demo.power_cut(primary)
    took = demo.cluster.wait_for(
        lambda: demo.holder("primary") == secondary,
        TAKEOVER,
        f"{secondary} primary after {primary} lost power",
    )
    print(f"{primary} lost power; {secondary} primary {took:.2f} s later (fenced first)")
    return primary, secondary


def rejoined(demo: DemoCluster, node: str) -> float:
    """Until ``node`` runs again, its daemon sees all three, and the counter is placed in full
    (``node`` the spare); the seconds waited."""
    c = demo.cluster

    def back() -> bool:
        status = c.status(node) if c.powered(node) else None
        return status is not None and status["members"] == [1, 2, 3] and demo.placed()

    took = c.wait_for(back, REJOIN, f"{node} booted again, a member, the counter placed")
    assert demo.roles()[node] == "spare"
    return took


def fencer_journals(c: SystemdCluster, nodes: list[str]) -> str:
    return "\n".join(c.node(n).journal(CLUSTERD, 400) for n in nodes)


def test_node_powered_off_is_fenced_by_the_configured_command_and_its_2n_work_moves(
    cache: Path,
) -> None:
    with DemoCluster(3, cache=cache) as demo:
        c = demo.cluster
        assert c.bridge is not None
        toml = node_file(c, "n1", "/etc/haos/cluster.toml")
        assert "[fencing]" in toml and "haoslab.harness.systemd_cluster" in toml
        unit = node_file(c, "n1", f"/etc/systemd/system/{CLUSTERD}")
        assert "--fence" not in unit
        primary, _ = power_cut_primary_and_wait_for_takeover(demo)
        assert (primary, "reboot", "ok") in c.bridge.done
        others = [n for n in c.names if n != primary]
        assert f"fenced {primary} (reboot) by command" in fencer_journals(c, others)
        back = rejoined(demo, primary)  # rebooted by its fencing
        print(f"{primary} rebooted by its fencing, back as the spare {back:.2f} s later")


def ipmi_fencing(address: str, names: tuple[str, ...]) -> str:
    """``[fencing]`` through fence_ipmilan: shared parameters, each node's BMC port."""
    lines = [
        "",
        "[fencing]",
        'agent = "fence_ipmilan"',
        f'params = {{ ip = "{address}", username = "{USER}", lanplus = true, cipher = 3, '
        "power_wait = 1 }",
        f'password_file = "{PASSWORD_FILE}"',
        'action = "reboot"',
        'timeout = "60s"',
    ]
    for name in names:
        lines += [f"[fencing.nodes.{name}]", f"params = {{ ipport = {BASE_PORT + int(name[1:])} }}"]
    return "\n".join(lines) + "\n"


def test_node_powered_off_is_fenced_by_fence_ipmilan_through_its_bmc_and_its_2n_work_moves(
    cache: Path, tmp_path: Path
) -> None:
    if shutil.which("ipmi_sim") is None or shutil.which("ipmitool") is None:
        pytest.fail("needs ipmi_sim and ipmitool on the host (scripts/setup.sh installs them)")
    assert (cache / "usr/sbin/fence_ipmilan").exists(), "node root without fence-agents"
    fencing = ipmi_fencing("10.10.0.254", ("n1", "n2", "n3"))
    files = {PASSWORD_FILE: PASSWORD + "\n"}
    with (
        ConfiguredDemo(cache, fencing, files) as demo,
        SimulatedBmcs(demo.cluster, tmp_path) as bmcs,
    ):
        c = demo.cluster
        assert c.bridge is not None
        assert bmcs.address == "10.10.0.254"
        primary, _ = power_cut_primary_and_wait_for_takeover(demo)
        chassis = bmcs.chassis_log(primary)
        print(f"BMC of {primary} was asked:\n{chassis}")
        assert "set power 0" in chassis and "set power 1" in chassis, chassis
        assert (primary, "off", "ok") in c.bridge.done
        others = [n for n in c.names if n != primary]
        journals = fencer_journals(c, others)
        assert f"fenced {primary}: fence_ipmilan reboot succeeded" in journals
        assert PASSWORD not in journals  # read from its file, given on the agent's stdin only
        for node in c.names:
            if node != primary:
                assert bmcs.chassis_log(node) == "" or "set power" not in bmcs.chassis_log(node)
        back = rejoined(demo, primary)
        print(f"{primary} powered on by its BMC, back as the spare {back:.2f} s later")
