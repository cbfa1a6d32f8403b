"""A board's identity at boot: which node it is, its interconnect addresses, its /etc files.

``python3 -m haos.services.nodesetup`` (``haos-node-setup.service``, before the network comes
up). The same image is flashed onto every board; each finds out which node it is from, in
this order:

1. the kernel command line: ``haos.node=N`` (or ``haos.node=slot``: the board's slot), and
   optionally ``haos.link0=ADDR/PREFIX@MATCH`` / ``haos.link1=...``;
2. the provisioning directory on the data partition (``/var/lib/haos/provision``, written
   by ``haosctl provision`` before the board was flashed or first booted): ``node.env``
   (``HAOS_NODE=nN`` or ``slot``, ``HAOS_LINK0=ADDR/PREFIX@MATCH``, ``HAOS_LINK1=...``) and
   ``etc/...`` (cluster.toml, corosync.conf, authkey), installed under ``/etc``;
3. QEMU's fw_cfg (``opt/haos/node`` and ``opt/haos/etc/PATH``): test guests.

``slot`` takes the node number from the board's geographic address, as its shelf's IPMI
controller reports it (``ipmitool picmg addrinfo``: the site number). ``MATCH`` is a MAC
address or an interface name. A guest given only a node number by fw_cfg gets the test
network's addresses (10.10.0.N/24 and 10.11.0.N/24 on the NICs with MAC 52:54:00:4a:NN:0L).
Without any identity nothing is changed, and the haos units wait for their configuration.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from haos.errors import HaosError, UsageError
from haos.proc import run

log = logging.getLogger(__name__)

PROVISION = Path("/var/lib/haos/provision")
FW_CFG = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/haos")
NETWORK = Path("/run/systemd/network")
SLOT = "slot"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_SECRET = re.compile(r"(authkey|\.key)$")


@dataclass(frozen=True)
class Link:
    index: int
    address: str  # ADDR/PREFIX
    match: str  # a MAC address or an interface name

    def networkd(self) -> str:
        key = "MACAddress" if _MAC.match(self.match) else "Name"
        return (
            f"[Match]\n{key}={self.match}\n\n[Network]\nAddress={self.address}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )


@dataclass(frozen=True)
class Identity:
    node: int
    source: str
    links: tuple[Link, ...]


def parse_link(index: int, text: str) -> Link:
    """``ADDR/PREFIX@MATCH``; UsageError naming what is wrong."""
    address, sep, match = text.partition("@")
    if not sep or not _ADDRESS.match(address):
        raise UsageError(f"link{index}: expected ADDR/PREFIX@MAC-or-interface, not {text!r}")
    octets, prefix = address.split("/")
    if any(int(o) > 255 for o in octets.split(".")) or not 1 <= int(prefix) <= 32:
        raise UsageError(f"link{index}: {address!r} is not an IPv4 address with a prefix")
    match = match.lower() if _MAC.match(match.lower()) else match
    if not (_MAC.match(match) or _IFNAME.match(match)):
        raise UsageError(f"link{index}: {match!r} is neither a MAC address nor an interface name")
    return Link(index, address, match)


def parse_node(text: str, slot: Callable[[], int]) -> int:
    """``N``, ``nN`` or ``slot`` (the board's geographic slot); UsageError when none."""
    text = text.strip()
    if text == SLOT:
        return slot()
    digits = text[1:] if text.startswith("n") else text
    if not digits.isdigit() or not 1 <= int(digits) <= 999:
        raise UsageError(f"node {text!r}: expected a number 1..999, nN, or {SLOT!r}")
    return int(digits)


def kernel_settings(cmdline: str) -> dict[str, str]:
    """The ``haos.*`` parameters of a kernel command line, as ``HAOS_*`` settings."""
    out = {}
    for word in shlex.split(cmdline):
        key, sep, value = word.partition("=")
        if sep and key.startswith("haos."):
            out["HAOS_" + key[len("haos.") :].upper()] = value
    return out


def read_env(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments); an absent file is empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UsageError(f"{path}:{number}: expected KEY=VALUE, not {line!r}")
        out[key.strip()] = value.strip().strip('"')
    return out


def identity(
    cmdline: str, provision: Path, fw_cfg: Path, slot: Callable[[], int]
) -> Identity | None:
    """Which node this board is (see the module docstring); None when nothing says."""
    for source, settings in (
        ("the kernel command line", kernel_settings(cmdline)),
        (f"{provision}/node.env", read_env(provision / "node.env")),
    ):
        if "HAOS_NODE" in settings:
            node = parse_node(settings["HAOS_NODE"], slot)
            links = tuple(
                parse_link(i, settings[f"HAOS_LINK{i}"])
                for i in (0, 1)
                if f"HAOS_LINK{i}" in settings
            )
            return Identity(node, source, links)
    raw = fw_cfg / "node" / "raw"
    if raw.exists():
        node = parse_node("".join(c for c in raw.read_text() if c.isdigit()), slot)
        hexa = f"{node:02x}"
        links = tuple(Link(i, f"10.1{i}.0.{node}/24", f"52:54:00:4a:{hexa}:0{i}") for i in (0, 1))
        return Identity(node, "QEMU fw_cfg", links)
    return None


def etc_files(provision: Path, fw_cfg: Path) -> dict[str, Path]:
    """``/etc`` path (relative) -> the file to install there; the provisioning directory's
    files win over fw_cfg's."""
    out: dict[str, Path] = {}
    # fw_cfg's by_name entries are symlinks to directories, which rglob does not follow.
    walk = os.walk(fw_cfg / "etc", followlinks=True)
    for raw in sorted(Path(d) / "raw" for d, _, names in walk if "raw" in names):
        out[str(raw.parent.relative_to(fw_cfg / "etc"))] = raw
    base = provision / "etc"
    for path in sorted(base.rglob("*")) if base.is_dir() else []:
        if path.is_file():
            out[str(path.relative_to(base))] = path
    return out


def geographic_slot() -> int:
    """The board's slot from its shelf's IPMI controller (the PICMG site number)."""
    text = run(["ipmitool", "picmg", "addrinfo"], timeout=30)
    found = re.search(r"Site Number\s*:\s*(\d+)", text)
    if found is None:
        raise UsageError("ipmitool picmg addrinfo reported no site number")
    return int(found.group(1))


def apply(ident: Identity | None, files: Mapping[str, Path], root: Path, network: Path) -> None:
    if ident is not None:
        (root / "proc/sys/kernel/hostname").write_text(f"n{ident.node}\n")
        log.info("node n%d (from %s)", ident.node, ident.source)
        network.mkdir(parents=True, exist_ok=True)
        for link in ident.links:
            (network / f"10-haos-link{link.index}.network").write_text(link.networkd())
            log.info("link%d: %s on %s", link.index, link.address, link.match)
    for rel, src in files.items():
        dest = root / "etc" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        tmp = dest.with_name(dest.name + ".haos-new")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o400 if _SECRET.search(rel) else 0o644)
        tmp.replace(dest)
        log.info("installed /etc/%s", rel)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="haos-node-setup: %(message)s")
    try:
        cmdline = Path("/proc/cmdline").read_text()
        ident = identity(cmdline, PROVISION, FW_CFG, geographic_slot)
        if ident is None:
            log.info("no node identity (kernel command line, %s, fw_cfg)", PROVISION)
        apply(ident, etc_files(PROVISION, FW_CFG), Path("/"), NETWORK)
    except (HaosError, OSError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
