"""A board's identity at boot (haos.services.nodesetup): the kernel command line first, then
the provisioning directory, then QEMU's fw_cfg; what it writes, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from haos.errors import UsageError
from haos.services.nodesetup import Link, apply, etc_files, identity, parse_link


def no_slot() -> int:
    raise AssertionError("the slot was not asked for")


def fw_cfg(tmp: Path, node: str = "3") -> Path:
    base = tmp / "fw_cfg"
    (base / "node").mkdir(parents=True)
    (base / "node" / "raw").write_text(node)
    (base / "etc" / "haos" / "cluster.toml").mkdir(parents=True)
    (base / "etc" / "haos" / "cluster.toml" / "raw").write_text("from fw_cfg\n")
    (base / "etc" / "corosync" / "authkey").mkdir(parents=True)
    (base / "etc" / "corosync" / "authkey" / "raw").write_bytes(b"\x00k" * 64)
    return base


def provision(tmp: Path, env: str) -> Path:
    base = tmp / "provision"
    (base / "etc" / "haos").mkdir(parents=True)
    (base / "node.env").write_text(env)
    (base / "etc" / "haos" / "cluster.toml").write_text("from the data partition\n")
    return base


def test_a_guest_with_only_fw_cfg_gets_the_test_networks_addresses(tmp_path: Path) -> None:
    ident = identity("quiet", tmp_path / "none", fw_cfg(tmp_path, "12"), no_slot)
    assert ident is not None and ident.node == 12 and ident.source == "QEMU fw_cfg"
    assert ident.links == (
        Link(0, "10.10.0.12/24", "52:54:00:4a:0c:00"),
        Link(1, "10.11.0.12/24", "52:54:00:4a:0c:01"),
    )


def test_a_provisioned_board_takes_its_identity_from_the_data_partition(tmp_path: Path) -> None:
    env = "# written by haosctl provision\nHAOS_NODE=n4\nHAOS_LINK0=192.168.7.4/24@eno1\n"
    ident = identity("ro quiet", provision(tmp_path, env), tmp_path / "none", no_slot)
    assert ident is not None and (ident.node, ident.links) == (
        4,
        (Link(0, "192.168.7.4/24", "eno1"),),
    )
    assert "node.env" in ident.source


def test_the_kernel_command_line_wins_and_slot_asks_the_shelf(tmp_path: Path) -> None:
    base = provision(tmp_path, "HAOS_NODE=n4\n")
    ident = identity(
        "quiet haos.node=slot haos.link1=10.11.0.9/24@52:54:00:AA:00:01",
        base,
        fw_cfg(tmp_path),
        lambda: 9,
    )
    assert ident is not None and ident.node == 9 and ident.source == "the kernel command line"
    assert ident.links == (Link(1, "10.11.0.9/24", "52:54:00:aa:00:01"),)


def test_nothing_says_which_node_and_nothing_is_changed(tmp_path: Path) -> None:
    assert identity("quiet", tmp_path / "p", tmp_path / "f", no_slot) is None
    apply(None, {}, tmp_path, tmp_path / "network")
    assert not (tmp_path / "network").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("10.10.0.1/24", "expected ADDR/PREFIX@"),
        ("10.10.0.300/24@eth0", "not an IPv4 address"),
        ("10.10.0.1/33@eth0", "not an IPv4 address"),
        ("10.10.0.1/24@eth0;reboot", "neither a MAC address nor an interface name"),
        ("10.10.0.1/24@" + "x" * 16, "neither a MAC"),
    ],
)
def test_a_bad_link_setting_is_refused_with_its_reason(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_link(0, text)


def test_a_bad_node_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected a number"):
        identity("haos.node=n1x", tmp_path / "p", tmp_path / "f", no_slot)
    with pytest.raises(UsageError, match="KEY=VALUE"):
        identity("", provision(tmp_path, "HAOS_NODE\n"), tmp_path / "f", no_slot)


def test_setup_writes_hostname_networks_and_etc_files_the_data_partition_winning(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "proc/sys/kernel").mkdir(parents=True)
    network = root / "run/systemd/network"
    cfg = fw_cfg(tmp_path, "2")
    base = provision(tmp_path, "HAOS_NODE=n2\n")
    ident = identity("", tmp_path / "absent", cfg, no_slot)
    apply(ident, etc_files(base, cfg), root, network)
    assert (root / "proc/sys/kernel/hostname").read_text() == "n2\n"
    link0 = (network / "10-haos-link0.network").read_text()
    assert "MACAddress=52:54:00:4a:02:00" in link0 and "Address=10.10.0.2/24" in link0
    assert (root / "etc/haos/cluster.toml").read_text() == "from the data partition\n"
    key = root / "etc/corosync/authkey"
    assert key.read_bytes() == b"\x00k" * 64 and key.stat().st_mode & 0o777 == 0o400
