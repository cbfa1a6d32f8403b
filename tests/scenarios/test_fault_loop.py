"""A randomized fault loop against the cluster daemons, with CCR writers on every node.

Each round injects one seeded random fault (kill, freeze, link cut, partition, packet loss)
while a writer per node keeps writing; then the cluster is healed (fenced nodes restarted)
and checked: no acknowledged write is lost, every node has the same content (hash), and
every node's watch saw every change in order.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from haos.errors import HaosError
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness import netns as harness_netns
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

ROUNDS = 8
NODES = (1, 2, 3)


@dataclass
class Writer:
    node: int
    daemons: Daemons
    acked: dict[str, int] = field(default_factory=dict)  # key -> commit revision
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)  # cleared: pause
    idle: threading.Event = field(default_factory=threading.Event)  # set while paused
    seq: int = 0

    def run(self) -> None:
        client = self.daemons.control(self.node)
        client.timeout = 5.0
        while not self.stop.is_set():
            if not self.go.is_set():
                self.idle.set()
                self.go.wait(0.1)
                continue
            self.idle.clear()
            self.seq += 1
            key = f"/loop/n{self.node}/{self.seq:06d}"
            try:
                self.acked[key] = client.request("put", key=key, value=str(self.seq))["revision"]
            except HaosError:
                self.failed += 1
                self.stop.wait(0.05)


@dataclass
class Watcher:
    node: int
    daemons: Daemons
    seen: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Follow /loop; after a broken stream, resume after the last revision seen — on this
        node, or on another one while this one is down (as a client library would)."""
        order = [self.node] + [n for n in NODES if n != self.node]
        attempt = 0
        while not self.stop.is_set():
            after = self.seen[-1][0] if self.seen else 0
            source = order[attempt % len(order)]
            attempt += 1
            try:
                for item in self.daemons.control(source).stream(
                    "watch", prefix="/loop", after=after
                ):
                    if self.stop.is_set():
                        return
                    if "revision" in item:
                        self.seen.append((item["revision"], item["key"]))
                        attempt = 0
            except (HaosError, OSError, ValueError):
                pass
            self.stop.wait(0.2)


def alive(cluster: Cluster, node: int) -> bool:
    return bool(harness_netns.pids_in([harness_netns.ident(cluster.names.node(node))]))


def pending_fencing(d: Daemons) -> set[int]:
    out: set[int] = set()
    for n in NODES:
        status = d.status(n)
        if status is not None and status["quorate"]:
            out |= set(status["fence_pending"])
    return out


def fault(rng: random.Random, cluster: Cluster) -> tuple[str, Callable[[], None]]:
    """Inject one fault now; return its name and how to undo what healing does not."""
    kind = rng.choice(["kill", "freeze", "cut", "partition", "loss"])
    node = rng.choice(NODES)
    if kind == "kill":
        cluster.kill(node)
        return f"kill n{node}", lambda: None
    if kind == "freeze":
        cluster.freeze(node)
        return f"freeze n{node}", lambda: cluster.thaw(node)
    if kind == "cut":
        link = rng.choice((0, 1))
        cluster.cut_link(node, link)
        return f"cut link {link} of n{node}", lambda: cluster.restore_link(node, link)
    if kind == "partition":
        others = [n for n in NODES if n != node]
        cluster.partition([others, [node]])
        return f"partition {others}|[{node}]", cluster.heal
    cluster.loss(node, 20)
    return f"20% loss from n{node}", lambda: cluster.loss(node, 0)


def test_random_faults_lose_no_acknowledged_write_and_converge() -> None:
    rng = random.Random(20261127)
    with Cluster(ClusterSpec(nodes=3)) as cluster, Daemons(cluster, {1: 30, 2: 20, 3: 10}) as d:
        writers = [Writer(n, d) for n in NODES]
        watchers = [Watcher(n, d) for n in NODES]
        threads = [threading.Thread(target=x.run, daemon=True) for x in (*writers, *watchers)]
        for w in writers:
            w.go.set()
        for t in threads:
            t.start()
        history = []
        try:
            for _ in range(ROUNDS):
                name, undo = fault(rng, cluster)
                history.append(name)
                cluster.wait_until(lambda: False, rng.uniform(1.0, 2.5))  # hold the fault
                undo()
                # a node the majority decided to fence is restarted only once it was fenced
                d.wait(lambda: not pending_fencing(d), 20, f"fencing done after {history}")
                for n in NODES:
                    if not alive(cluster, n):  # killed, or fenced by the majority
                        cluster.restart(n)
                        d.start(n)
                d.wait_ready(NODES, timeout=60)
                for w in writers:  # quiesce the writers, then every copy must be the same
                    w.go.clear()
                for w in writers:
                    assert w.idle.wait(15), f"writer n{w.node} stuck"
                d.wait(
                    lambda: len({(d.status(n) or {}).get("hash") for n in NODES}) == 1,
                    15,
                    f"all copies equal after {history}",
                )
                for w in writers:
                    w.go.set()
        finally:
            for x in (*writers, *watchers):
                x.stop.set()
            for t in threads:
                t.join(10)
        items = d.control(1).request("range", prefix="/loop")["items"]
        acked = {k: v for w in writers for k, v in w.acked.items()}
        assert acked, "no write was acknowledged at all"
        lost = sorted(k for k in acked if k not in items)
        assert not lost, f"acknowledged writes lost after {history}: {lost[:10]}"
        for w in writers:
            for key in w.acked:
                assert items[key] == str(int(key.rsplit("/", 1)[1])), key
        for n in NODES:
            assert d.control(n).request("range", prefix="/loop")["items"] == items
        for w in watchers:
            revisions = [r for r, _ in w.seen]
            assert revisions == sorted(revisions), f"n{w.node} watch out of order"
            seen_keys = {k for _, k in w.seen}
            missing = [k for k in acked if k not in seen_keys]
            assert not missing, f"n{w.node} watch missed {len(missing)} changes: {missing[:5]}"
        refused = sum(w.failed for w in writers)
        print(f"faults: {history}; acked {len(acked)} writes, refused {refused}")
