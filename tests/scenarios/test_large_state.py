"""Large state through the checkpoint service and the repository on a real corosync cluster.

Every node runs ``haos.services.clusterd``; requests go through the daemons' control sockets.
Checkpoint sections of megabytes and repository values at the repository's limit are written
and read back on every node; larger ones are refused with an error naming the limit. A node is
then replaced (its state directory wiped, the node rejoined): it receives the whole repository
and the checkpoint by state transfer, after which the sending daemons' memory returns to its
level before and the new node's store takes no more disk than the others'.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haos.cluster.dss.ccr.model import MAX_VALUE_BYTES, Item
from haos.limits import MAX_CHECKPOINT_SECTION, MiB
from haos.services.control import ControlClient, ControlError
from haos.services.durable import RepositoryCheckpoints
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

NODES = (1, 2, 3)
PRIORITIES = {1: 30, 2: 20, 3: 10}
VALUES = 80  # repository values of MAX_VALUE_BYTES each: 20 MiB
STEADY = 60  # readings (50 ms apart) without change: longer than the daemon's trimmer waits


@pytest.fixture
def three() -> Iterator[tuple[Cluster, Daemons]]:
    with Cluster(ClusterSpec(nodes=3)) as cluster, Daemons(cluster, PRIORITIES) as daemons:
        yield cluster, daemons


def text(size: int) -> str:
    """``size`` bytes of printable text (what a checkpoint section holds through the socket)."""
    return base64.b64encode(os.urandom(size * 3 // 4 + 3)).decode()[:size]


def rss(d: Daemons, node: int) -> int:
    """The node daemon's resident memory, bytes."""
    status = Path(f"/proc/{d.procs[node].pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def steady_rss(d: Daemons, node: int) -> int:
    """The daemon's resident memory once it no longer falls (a write's buffers released)."""
    readings = [rss(d, node)]

    def steady() -> bool:
        readings.append(rss(d, node))
        return len(readings) > STEADY and abs(readings[-STEADY] - readings[-1]) < MiB

    d.wait(steady, 30, f"node {node}'s memory steady")
    return readings[-1]


def disk(d: Daemons, node: int) -> int:
    """The node's repository store on disk: the SQLite file and its WAL."""
    state = d.dir / f"n{node}-state"
    return sum(f.stat().st_size for f in state.glob("ccr.sqlite*") if f.is_file())


def open_everywhere(d: Daemons, name: str, persistent: bool = False) -> None:
    d.control(1).request("ckpt_open", name=name, role="active", persistent=persistent)
    for n in NODES[1:]:
        d.control(n).request("ckpt_open", name=name, role="standby", persistent=persistent)


def saved(d: Daemons, name: str) -> bytes | None:
    """Section ``s`` of checkpoint ``name`` as its durable copy in the repository holds it."""
    store = RepositoryCheckpoints(Repository(d.control(3)))
    return (asyncio.run(store.load(name)) or {}).get("s")


class Repository:
    """The repository's reads, through a node daemon's control socket."""

    def __init__(self, control: ControlClient) -> None:
        self._control = control

    async def get(self, key: str) -> Item | None:
        answer = self._control.request("get", key=key)
        if answer["value"] is None:
            return None
        return Item(key, answer["value"].encode(), answer["revision"])

    async def txn(self, *args: object, **kwargs: object) -> int:
        raise AssertionError("read only")


def read_back(d: Daemons, name: str, section: str) -> list[str | None]:
    return [d.control(n).request("ckpt_read", name=name, section=section)["data"] for n in NODES]


def test_large_checkpoints_and_values_are_read_back_on_every_node_and_larger_refused(
    three: tuple[Cluster, Daemons],
) -> None:
    _, d = three
    open_everywhere(d, "big")
    for size in (1 * MiB, 8 * MiB, MAX_CHECKPOINT_SECTION):
        data = text(size)
        answer = d.control(1).request(
            "ckpt_write", name="big", section=f"s{size}", data=data, sync=True
        )
        print(f"synchronous write of {size} bytes: {answer['elapsed_ms']:.0f} ms")
        assert read_back(d, "big", f"s{size}") == [data] * 3
    with pytest.raises(ControlError, match=f"over the limit of {MAX_CHECKPOINT_SECTION} bytes"):
        d.control(1).request(
            "ckpt_write", name="big", section="s1", data=text(MAX_CHECKPOINT_SECTION + 1)
        )
    assert read_back(d, "big", f"s{MiB}")[2] is not None  # nothing of it applied
    # A persistent checkpoint's durable copy in the repository holds megabytes too.
    open_everywhere(d, "kept", persistent=True)
    data = text(8 * MiB)
    d.control(1).request("ckpt_write", name="kept", section="s", data=data, sync=True)
    assert read_back(d, "kept", "s") == [data] * 3
    d.wait(lambda: saved(d, "kept") == data.encode(), 20, "the durable copy saved")
    value = text(MAX_VALUE_BYTES)
    d.control(2).request("put", key="/large/value", value=value)
    for n in NODES:
        assert d.control(n).request("get", key="/large/value")["value"] == value
    with pytest.raises(ControlError, match=f"exceeds {MAX_VALUE_BYTES}"):
        d.control(2).request("put", key="/large/over", value=text(MAX_VALUE_BYTES + 1))
    assert d.control(3).request("get", key="/large/over")["value"] is None


def replace_node(cluster: Cluster, d: Daemons, node: int) -> None:
    """The node dies, is fenced, and comes back with an empty state directory."""
    cluster.kill(node)

    def fenced() -> bool:  # the survivors fence it before it may come back
        return any(f"n{node} fenced (" in d.log(n).read_text() for n in NODES if n != node)

    d.wait(fenced, 30, f"node {node} fenced")
    cluster.restart(node)
    shutil.rmtree(d.dir / f"n{node}-state")
    d.start(node)
    d.wait_ready(NODES, timeout=60)


def test_a_replaced_node_gets_everything_and_the_senders_memory_and_its_disk_stay_bounded(
    three: tuple[Cluster, Daemons],
) -> None:
    cluster, d = three
    values = {f"/large/{i}": text(MAX_VALUE_BYTES) for i in range(VALUES)}
    for key, value in values.items():
        d.control(1).request("put", key=key, value=value)
    open_everywhere(d, "big")
    section = text(8 * MiB)
    d.control(1).request("ckpt_write", name="big", section="s", data=section, sync=True)
    before = {n: steady_rss(d, n) for n in (1, 2)}
    replace_node(cluster, d, 3)
    d.control(3).request("ckpt_open", name="big", role="standby")  # a content transfer
    assert d.control(3).request("ckpt_read", name="big", section="s")["data"] == section
    assert d.control(3).request("range", prefix="/large")["items"] == values

    def same_copies() -> bool:  # the daemons write too (status, intents): at the same revision
        return len({(d.status(n) or {}).get("hash") for n in NODES}) == 1

    d.wait(same_copies, 10, "the same repository on every node")

    def settled() -> bool:
        return all(rss(d, n) <= 1.2 * before[n] for n in (1, 2))

    started = time.monotonic()
    try:
        d.wait(settled, 20, "the senders' memory back within 20 % of its level before")
    finally:
        after = {n: rss(d, n) for n in (1, 2)}
        print(f"RSS before {before}, after {after}, {time.monotonic() - started:.1f} s later")
        print(f"disk {[disk(d, n) for n in NODES]}, values {sum(map(len, values.values()))}")
    assert disk(d, 3) <= 1.5 * min(disk(d, 1), disk(d, 2))
    held = sum(map(len, values.values()))
    assert all(disk(d, n) <= 1.5 * held for n in NODES)  # was 4.2 times on the writers
