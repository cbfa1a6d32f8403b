"""Network namespaces of a test cluster: names, the switch, the links, faults on the wire.

Topology (``<id>`` is six hex digits, unique among the namespaces present)::

    haos-<id>-sw   br0 ── n1l0 … nNl0        br1 ── n1l1 … nNl1      (the "switch")
    haos-<id>-nK   eth0 10.10.0.K/24 (peer nKl0)   eth1 10.11.0.K/24 (peer nKl1)

Every interface is created inside these namespaces (a veth pair is made in the switch
namespace with its peer placed straight into the node's), so nothing is ever added to the
host's network namespace. Faults act on the switch side: a port set down cuts a link
(the node sees NO-CARRIER, packets vanish silently); nftables tables in the switch namespace
drop bridged traffic between partition groups, or a share of the frames a node sends.
Deleting the switch namespace removes its bridges and nft tables with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from haoslab.harness import _proc
from haoslab.harness.errors import CommandFailed, HarnessError

NETNS_DIR = Path("/run/netns")
LINKS = (0, 1)
MAX_NODES = 32
CLONE_NEWNET = 0x40000000
NAME_RE = re.compile(r"haos-(?P<id>[0-9a-f]{6})-(?P<role>sw|n(?P<node>[0-9]+))")
_PARTITION_TABLE = "haos_partition"

NsIdent = tuple[int, int]  # (st_dev, st_ino) of a network namespace
Address = tuple[str, str]  # (interface, "address/prefix length")
CLIENT_HOST = 254  # the host part of the switch's own address on a link (attach_client)


@dataclass(frozen=True)
class Names:
    """Every name and address of one cluster, derived from its id."""

    cluster_id: str

    @property
    def switch(self) -> str:
        return f"haos-{self.cluster_id}-sw"

    def node(self, node: int) -> str:
        return f"haos-{self.cluster_id}-n{node}"

    @staticmethod
    def port(node: int, link: int) -> str:
        """The switch-side end of ``node``'s link ``link`` (fits IFNAMSIZ for any node id)."""
        return f"n{node}l{link}"

    @staticmethod
    def address(node: int, link: int) -> str:
        return f"10.{10 + link}.0.{node}"

    @staticmethod
    def path(netns: str) -> Path:
        return NETNS_DIR / netns


# -- namespaces ----------------------------------------------------------------------------


def claim_switch(names: Names) -> bool:
    """Create the cluster's switch namespace; False if a namespace of that name exists.

    ``ip netns add`` creates the name with O_EXCL, so two harnesses can never share an id.
    """
    try:
        _proc.run(["ip", "netns", "add", names.switch])
    except CommandFailed as e:
        if "exists" in e.stderr:
            return False
        raise
    return True


def build_switch(names: Names) -> None:
    """Bridges br0 and br1 (no STP: ports forward at once) in the claimed switch namespace."""
    _disable_ipv6(names.switch)
    script = ["link set lo up"]
    for link in LINKS:
        script += [f"link add br{link} type bridge stp_state 0", f"link set br{link} up"]
    _ip_batch(names.switch, script)


def add_node(names: Names, node: int) -> None:
    """The node's namespace with eth0/eth1 plugged into br0/br1 and addressed."""
    netns = names.node(node)
    _proc.run(["ip", "netns", "add", netns])
    _disable_ipv6(netns)
    switch_side, node_side = [], ["link set lo up"]
    for link in LINKS:
        port = names.port(node, link)
        switch_side += [
            f"link add {port} type veth peer name eth{link} netns {netns}",
            f"link set {port} master br{link} up",
        ]
        node_side += [
            f"addr add {names.address(node, link)}/24 dev eth{link}",
            f"link set eth{link} up",
        ]
    _ip_batch(names.switch, switch_side)
    _ip_batch(netns, node_side)


def attach_client(names: Names, link: int = 0) -> str:
    """Give the switch namespace an address of its own on ``link``'s subnet (host
    :data:`CLIENT_HOST`) and return it: a client run in the switch namespace then reaches the
    nodes, and any address they take on that subnet (a virtual IP), as a host on their LAN."""
    address = Names.address(CLIENT_HOST, link)
    _ip_batch(names.switch, [f"addr add {address}/24 dev br{link}"])
    return address


def addresses(path: Path) -> frozenset[Address]:
    """The IP addresses in the network namespace at ``path``."""
    out = _proc.run(["nsenter", f"--net={path}", "--", "ip", "-j", "addr", "show"]).stdout
    return frozenset(
        (link["ifname"], f"{a['local']}/{a['prefixlen']}")
        for link in json.loads(out)
        for a in link.get("addr_info", ())
    )


def remove_addresses(path: Path, gone: Iterable[Address]) -> None:
    """Delete these addresses from the namespace at ``path`` (one already gone is fine)."""
    script = [f"addr del {address} dev {ifname}" for ifname, address in sorted(gone)]
    if script:
        argv = ["nsenter", f"--net={path}", "--", "ip", "-force", "-batch", "-"]
        _proc.run(argv, input="\n".join(script) + "\n", check=False)


def delete_netns(netns: str) -> None:
    """``ip netns del``; a namespace already gone (or going: a concurrent cleanup) is fine."""
    if Names.path(netns).exists():
        try:
            _proc.run(["ip", "netns", "del", netns])
        except CommandFailed:
            if Names.path(netns).exists():
                raise


def ident(netns: str) -> NsIdent:
    st = os.stat(Names.path(netns))
    return (st.st_dev, st.st_ino)


def exists(netns: str) -> bool:
    return Names.path(netns).exists()


def present() -> list[str]:
    """Names of every haos harness namespace on this machine, sorted."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if NAME_RE.fullmatch(p.name))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the *calling thread* in ``netns`` (setns(2) is per thread), then move it back."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd: int) -> None:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(Names.path(netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


def nsenter(netns: str) -> list[str]:
    """The argv prefix that runs a command in ``netns``."""
    return ["nsenter", f"--net={Names.path(netns)}", "--"]


def _ip_batch(netns: str, commands: Sequence[str]) -> None:
    _proc.run(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")


def _disable_ipv6(netns: str) -> None:
    # Keeps the bridges quiet: no router solicitations, MLD reports or DAD on the test links.
    with entered(netns):
        for scope in ("default", "all"):
            Path(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6").write_text("1\n")


# -- processes -----------------------------------------------------------------------------


def pids_in(idents: Iterable[NsIdent]) -> list[int]:
    """Processes whose (main thread's) network namespace is one of ``idents``."""
    wanted = set(idents)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(entry / "ns" / "net")
                if (st.st_dev, st.st_ino) in wanted:
                    found.append(int(entry.name))
    return found


def tasks_in(idents: Iterable[NsIdent]) -> list[tuple[int, int]]:
    """(pid, tid) of every thread of any process that is in one of ``idents``."""
    wanted = set(idents)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for task in (proc / "task").iterdir():
                with contextlib.suppress(OSError):
                    st = os.stat(task / "ns" / "net")
                    if (st.st_dev, st.st_ino) in wanted:
                        found.append((int(proc.name), int(task.name)))
    return found


def kill_processes(idents: Iterable[NsIdent], timeout: float = 10.0) -> list[int]:
    """SIGKILL every process in these namespaces (never this one) and wait until each is gone.

    Frozen (SIGSTOPped) processes die too. Returns the pids that were killed.
    """
    wanted = list(idents)
    deadline = time.monotonic() + timeout
    killed: list[int] = []
    while pids := [p for p in pids_in(wanted) if p != os.getpid()]:
        pidfds = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                fd = os.pidfd_open(pid)
                pidfds.append(fd)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed.append(pid)
        try:
            _await_exits(pidfds, deadline)
        finally:
            for fd in pidfds:
                os.close(fd)
        if time.monotonic() > deadline:
            raise HarnessError(f"processes {pids} survived SIGKILL for {timeout} s")
    return killed


def signal_processes(idents: Iterable[NsIdent], sig: signal.Signals) -> list[int]:
    """Send ``sig`` to every process in these namespaces (never this one)."""
    sent = []
    for pid in pids_in(idents):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent.append(pid)
    return sent


def _await_exits(pidfds: list[int], deadline: float) -> None:
    waiting = set(pidfds)
    while waiting and (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(list(waiting), [], [], remaining)
        waiting.difference_update(readable)


# -- faults on the wire ----------------------------------------------------------------------


def set_port(names: Names, node: int, link: int, up: bool) -> None:
    """Switch-side port of ``node``'s ``link`` up or down."""
    state = "up" if up else "down"
    _proc.run(["ip", "-n", names.switch, "link", "set", names.port(node, link), state])


def set_partition(names: Names, groups: Sequence[frozenset[int]]) -> None:
    """Drop bridged frames between ports of different groups (replaces any earlier split)."""
    rules = []
    for group in groups:
        ports = ", ".join(f'"{names.port(n, link)}"' for n in sorted(group) for link in LINKS)
        rules.append(f"        iifname {{ {ports} }} oifname != {{ {ports} }} drop")
    body = "\n".join(rules)
    _nft(
        names.switch,
        f"{_replace('bridge', _PARTITION_TABLE)}table bridge {_PARTITION_TABLE} {{\n"
        "    chain forward {\n"
        "        type filter hook forward priority 0; policy accept;\n"
        f"{body}\n    }}\n}}\n",
    )


def clear_partition(names: Names) -> None:
    _nft(names.switch, _replace("bridge", _PARTITION_TABLE))


def set_loss(names: Names, node: int, percent: int) -> None:
    """Drop ``percent`` % of the frames ``node`` sends on each link (0 removes the rule)."""
    table = f"haos_loss_n{node}"
    script = _replace("netdev", table)
    if percent:
        chains = "".join(
            f"    chain l{link} {{\n"
            f'        type filter hook ingress device "{names.port(node, link)}" priority 0;\n'
            f"        numgen random mod 100 < {percent} drop\n    }}\n"
            for link in LINKS
        )
        script += f"table netdev {table} {{\n{chains}}}\n"
    _nft(names.switch, script)


def _replace(family: str, table: str) -> str:
    # Creating then deleting in the same transaction makes "delete if present" atomic.
    return f"table {family} {table}\ndelete table {family} {table}\n"


def _nft(netns: str, script: str) -> None:
    _proc.run([*nsenter(netns), "nft", "-f", "-"], input=script)
