"""A virtual IP held by Debian's unchanged ``ocf:heartbeat:IPaddr2`` follows its service.

Three nodes with a real systemd boot the node root as it is (its own ``ip``, ``send_arp`` and
agents; no host directory is shown in them). A 2N group has an ``IPaddr2`` member on each
node, all for one address, :data:`VIP`, in the nodes' shared subnet on their first link. A
small TCP service listens on every node on all addresses and answers with the node's name,
and a client in the switch namespace -- a host on the nodes' LAN -- connects to the virtual IP
every few milliseconds throughout:

* a planned switchover moves the address to the secondary: the client is answered by it within
  :data:`SWITCHOVER_BOUND` of the last answer from the old primary;
* the primary's power is cut: its peers fence it, the address comes up on the secondary, and
  the client is answered again within :data:`POWER_CUT_BOUND`; the fenced node boots again
  without the address.

Throughout, a watcher samples which nodes hold the address: never two at once; and once the
client has been answered by the new holder, the old one never answers again.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

import _ocf as ocf
import pytest
from _ocf import ask, need_agent, two_n_group

from haoslab.harness import netns
from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import SystemdCluster, cluster_toml

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

T = TypeVar("T")
SPEC = ClusterSpec(nodes=3)
AGENT = "ocf:heartbeat:IPaddr2"
VIP = netns.Names.address(100, 0)  # on the nodes' first link, beside 10.10.0.1..N
PORT = 7000
PERIOD = 0.005  # seconds between the client's connections
CONNECT_TIMEOUT = 0.2  # seconds a connection (and its answer) may take
SAMPLE = 0.02  # seconds between the watcher's looks at who holds the address
SETTLE = 60.0
SWITCHOVER_BOUND = 5.0  # seconds without an answer, at most, across a switchover
POWER_CUT_BOUND = 10.0  # ... across the primary's power cut, detection and fencing included

# Each node's service: one line in, the node's name and that line out.
ECHO = """
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(sys.argv[1].encode() + b" " + self.rfile.readline())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[2])), Echo).serve_forever()
"""


def member(n: int) -> str:
    return ocf.member("vip", n)


def config() -> str:
    lines = [cluster_toml(SPEC, "vip")]
    lines += two_n_group(
        SPEC,
        "vip",
        lambda n: (
            '{ kind = "ocf", agent = "ocf:heartbeat:IPaddr2",'
            f' params = {{ ip = "{VIP}", cidr_netmask = "24", nic = "eth0" }} }}'
        ),
    )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Answer:
    t: float  # monotonic time the answer arrived
    node: str


class Waitable:
    """Records appended by a thread, and a wait on them with a deadline."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the next wait
            self._error = e
            self._notify()

    def _run(self) -> None:
        raise NotImplementedError

    def state(self) -> str:
        return ""

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, found: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        with self._changed:
            while (value := found()) is None:
                if self._error is not None:
                    raise AssertionError(f"{what}: the watching thread failed") from self._error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{what}: not within {timeout:g} s ({self.state()})")
                self._changed.wait(remaining)
        return value


class Client(Waitable):
    """Connects to ``VIP:PORT`` every :data:`PERIOD` from the switch namespace; keeps every
    answer (who answered, when) and counts the connections that failed or timed out."""

    def __init__(self, switch: str) -> None:
        super().__init__()
        self.switch = switch
        self.answers: list[Answer] = []
        self.failed = 0

    def _run(self) -> None:
        with netns.entered(self.switch):  # this thread only
            while not self._stopping.wait(PERIOD):
                node = self._ask()
                if node is None:
                    self.failed += 1
                else:
                    self.answers.append(Answer(time.monotonic(), node))
                    self._notify()

    def _ask(self) -> str | None:
        try:
            with socket.create_connection((VIP, PORT), timeout=CONNECT_TIMEOUT) as s:
                s.sendall(b"ping\n")
                reply = s.makefile("rb").readline().split()
        except OSError:
            return None
        return reply[0].decode() if len(reply) == 2 and reply[1] == b"ping" else None

    def state(self) -> str:
        last = self.answers[-1] if self.answers else None
        return f"last answer {last}, {self.failed} connections failed"

    def first(self, since: float, node: str) -> Callable[[], Answer | None]:
        return lambda: next((a for a in self.answers if a.t > since and a.node == node), None)

    def between(self, start: float, end: float) -> set[str]:
        """Who answered from ``start`` (inclusive) to ``end``."""
        return {a.node for a in self.answers if start <= a.t < end}

    def outage(self, answer: Answer) -> float:
        """Seconds from the answer before ``answer`` to it: how long the client went unserved."""
        i = self.answers.index(answer)
        assert i > 0, "no answer before it"
        return answer.t - self.answers[i - 1].t


class Holders(Waitable):
    """Samples which nodes' namespaces hold :data:`VIP`, every :data:`SAMPLE` s."""

    def __init__(self, paths: dict[str, Path]) -> None:
        super().__init__()
        self.paths = paths
        self.now: tuple[str, ...] = ()
        self.doubles: list[tuple[str, ...]] = []  # samples with more than one holder

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE):
            holding = tuple(n for n, p in self.paths.items() if _holds(p))
            if len(holding) > 1:
                self.doubles.append(holding)
            self.now = holding
            self._notify()

    def state(self) -> str:
        return f"held by {', '.join(self.now) or 'nobody'}"

    def only(self, node: str) -> Callable[[], bool | None]:
        return lambda: True if self.now == (node,) else None


def _holds(path: Path) -> bool:
    return ("eth0", f"{VIP}/24") in netns.addresses(path)


def roles(c: SystemdCluster) -> dict[str, str]:
    answer = ask(c, "crim")
    if not answer:
        return {}
    comps = answer["crim"]["components"]
    return {f"n{n}": comps[member(n)]["state"] for n in SPEC.node_ids}


def holder(c: SystemdCluster, role: str) -> str:
    return next(n for n, s in roles(c).items() if s == role)


def settled(c: SystemdCluster) -> None:
    c.wait_for(
        lambda: sorted(roles(c).values()) == ["primary", "secondary", "spare"],
        SETTLE,
        "the address has a primary, a secondary and a spare",
    )


def serve_echo(c: SystemdCluster, name: str) -> None:
    argv = ["systemd-run", "--unit=haos-echo", "--property=Restart=always"]
    c.node(name).run([*argv, "/usr/bin/python3", "-c", ECHO, name, str(PORT)])


@pytest.fixture
def cluster(cache: Path) -> Iterator[SystemdCluster]:
    need_agent(cache, AGENT)
    with SystemdCluster(SPEC, cache=cache, agent=True, config_toml=config(), fence=True) as c:
        settled(c)
        for name in c.names:
            serve_echo(c, name)
        yield c


def host_mounts(c: SystemdCluster, name: str) -> list[str]:
    """Mount points in the node under /usr (where a host's agents or tools would be shown)."""
    out = c.node(name).run(["cat", "/proc/self/mountinfo"]).stdout
    return [m for line in out.splitlines() if (m := line.split()[4]).startswith("/usr")]


def test_virtual_ip_follows_switchover_and_power_cut_and_clients_are_answered_again(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    assert c.topo is not None
    assert all(host_mounts(c, n) == [] for n in c.names)  # the agents are the root's own
    netns.attach_client(c.topo.names)
    paths = {name: c.topo.netns_path(int(name[1:])) for name in c.names}
    started = time.monotonic()
    with Holders(paths) as holders, Client(c.topo.names.switch) as client:
        primary = holder(c, "primary")
        holders.wait(holders.only(primary), 30.0, f"only {primary} holds {VIP}")
        client.wait(client.first(0.0, primary), 30.0, f"{primary} answers at {VIP}")

        secondary = holder(c, "secondary")
        at = time.monotonic()
        answer = c.control(primary).request(
            "operator", action="switchover", target=member(int(primary[1:]))
        )
        assert not answer["refused"], answer
        moved = client.wait(client.first(at, secondary), SETTLE, f"{secondary} answers")
        switchover = client.outage(moved)
        holders.wait(holders.only(secondary), 30.0, f"only {secondary} holds {VIP}")
        settled(c)

        victim, heir = secondary, holder(c, "secondary")
        cut_at = time.monotonic()
        c.power_cut(victim)
        recovered = client.wait(client.first(cut_at, heir), SETTLE, f"{heir} answers after the cut")
        power_cut = client.outage(recovered)
        holders.wait(holders.only(heir), 30.0, f"only {heir} holds {VIP}")
        # fenced (rebooted by the fence bridge) and back as the spare, without the address
        c.wait_for(lambda: c.status(victim) is not None, SETTLE, f"{victim} booted again")
        settled(c)
        assert roles(c)[victim] == "spare"
        client.wait(client.first(time.monotonic(), heir), 10.0, f"{heir} still answers")
        ended = time.monotonic()

    print(
        f"\n{VIP} unanswered: switchover {switchover * 1000:.0f} ms, power cut"
        f" {power_cut * 1000:.0f} ms; {len(client.answers)} answers in {ended - started:.1f} s,"
        f" {client.failed} connections failed"
    )
    assert holders.doubles == [], f"two nodes held {VIP} at once: {holders.doubles[:5]}"
    # once the new holder answered, nobody else did
    assert client.between(moved.t, cut_at) == {secondary}
    assert client.between(recovered.t, ended) == {heir}
    assert switchover < SWITCHOVER_BOUND, f"switchover left the client {switchover:.2f} s"
    assert power_cut < POWER_CUT_BOUND, f"the power cut left the client {power_cut:.2f} s"
