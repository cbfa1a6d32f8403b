"""The CCR over a real corosync 3: CPG transport, votequorum, SQLite on disk.

Most tests use one corosync node in its own namespaces (CorosyncTestNode), with the test thread
attached to its network namespace: they cover the adapters and the service over real CPG and
votequorum. The last one runs three nodes (haoslab.harness) with a CCR agent process in
each, and checks replication, a partition and a restart over real corosync.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haos.cluster.dss.ccr import (
    CcrConfig,
    CcrService,
    Compare,
    Delete,
    Put,
    SqliteStore,
    VoteQuorumSource,
    WatchEvent,
    follow,
)
from haos.cluster.dss.transport import CpgTransport
from haos.errors import ConflictError, UnavailableError
from haoslab.fakes.testnode import CorosyncTestNode, SingleNodeConfig

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

DEADLINE = 10.0
CONFIG = SingleNodeConfig(cluster_name="haos-ccr", token_ms=1000)
ONE_NODE = CcrConfig(nodes=1)


def skip_unless_nodes_can_run() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network and mount namespaces")
    for tool in ("corosync", "unshare", "setpriv", "ip"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"needs {tool}")


@pytest.fixture(scope="module")
def node() -> Iterator[CorosyncTestNode]:
    skip_unless_nodes_can_run()
    with CorosyncTestNode.running(CONFIG) as started:
        yield started


@pytest.fixture
def attached(node: CorosyncTestNode) -> Iterator[CorosyncTestNode]:
    with node.attached():
        yield node


@pytest.fixture
def doomed() -> Iterator[CorosyncTestNode]:
    """A corosync of its own, for a test that kills it."""
    skip_unless_nodes_can_run()
    with CorosyncTestNode.running(CONFIG) as own, own.attached():
        yield own


def fresh_group() -> str:
    return f"haos-ccr-{uuid.uuid4().hex[:12]}"


def test_put_get_watch_txn_and_a_conflict_over_real_cpg(
    attached: CorosyncTestNode, tmp_path: Path
) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "ccr.db")
        async with (
            CpgTransport.open(fresh_group()) as transport,
            VoteQuorumSource.open() as quorum,
            CcrService.open(transport, store, quorum, ONE_NODE) as ccr,
        ):
            assert quorum.quorate()
            status = await ccr.wait_until(lambda s: s.writable, DEADLINE)
            assert (status.node_id, status.members) == (CONFIG.node_id, (CONFIG.node_id,))
            watch = ccr.watch("/cfg")
            first = await ccr.put("/cfg/port", "80")
            second = await ccr.txn(
                [Compare("/cfg/port", first)],
                [Put("/cfg/port", b"8080"), Put("/cfg/tls", b"on"), Put("/elsewhere", b"x")],
            )
            with pytest.raises(ConflictError, match="expected mod_revision 0, found 2"):
                await ccr.put("/cfg/port", "443", expect_revision=0)
            third = await ccr.txn([], [Delete("/cfg/tls")])
            assert (first, second, third) == (1, 2, 3)
            item = await ccr.get("/cfg/port")
            assert item is not None and (item.value, item.mod_revision) == (b"8080", 2)
            async with asyncio.timeout(DEADLINE):
                events = [await anext(watch) for _ in range(4)]
            assert events == [
                WatchEvent(1, "/cfg/port", b"80"),
                WatchEvent(2, "/cfg/port", b"8080"),
                WatchEvent(2, "/cfg/tls", b"on"),
                WatchEvent(3, "/cfg/tls", None),
            ]
            assert ccr.drops.total == 0
        assert store.hash() == SqliteStore(tmp_path / "ccr.db").hash()
        store.close()

    asyncio.run(scenario())


def test_a_restarted_service_reloads_its_copy_and_carries_on(
    attached: CorosyncTestNode, tmp_path: Path
) -> None:
    group = fresh_group()

    async def first_run() -> None:
        store = SqliteStore(tmp_path / "ccr.db")
        async with (
            CpgTransport.open(group) as transport,
            VoteQuorumSource.open() as quorum,
            CcrService.open(transport, store, quorum, ONE_NODE) as ccr,
        ):
            await ccr.wait_until(lambda s: s.writable, DEADLINE)
            for i in range(20):
                await ccr.put(f"/k/{i:02}", f"value {i}")
        store.close()

    async def second_run() -> None:
        store = SqliteStore(tmp_path / "ccr.db")
        async with (
            CpgTransport.open(group) as transport,
            VoteQuorumSource.open() as quorum,
            CcrService.open(transport, store, quorum, ONE_NODE) as ccr,
        ):
            assert ccr.status().revision == 20  # loaded from disk before any sync
            await ccr.wait_until(lambda s: s.writable, DEADLINE)
            revision, items = await ccr.range("/k")
            assert revision == 20 and items[-1].value == b"value 19"
            trees = follow(ccr, "/k/00")
            assert dict(await anext(trees)) == {"/k/00": b"value 0"}
            assert await ccr.put("/k/00", "changed") == 21
            async with asyncio.timeout(DEADLINE):
                assert dict(await anext(trees)) == {"/k/00": b"changed"}
            await trees.aclose()  # type: ignore[attr-defined]
            assert ccr.status().epoch == 2  # a new epoch: the first run promised epoch 1
        store.close()

    asyncio.run(first_run())
    asyncio.run(second_run())


def test_the_service_stops_and_refuses_calls_when_corosync_dies(
    doomed: CorosyncTestNode, tmp_path: Path
) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "ccr.db")
        async with (
            CpgTransport.open(fresh_group()) as transport,
            VoteQuorumSource.open() as quorum,
            CcrService.open(transport, store, quorum, ONE_NODE) as ccr,
        ):
            await ccr.wait_until(lambda s: s.writable, DEADLINE)
            await ccr.put("/k", "v")
            watch = ccr.watch("/")
            assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
            async with asyncio.timeout(DEADLINE):
                with pytest.raises(UnavailableError, match="ccr stopped"):
                    await anext(watch)
            assert ccr.stopped
            with pytest.raises(UnavailableError, match="ccr stopped"):
                await ccr.put("/k", "after")
            with pytest.raises(UnavailableError, match="ccr stopped"):
                await ccr.get("/k")
        reopened = SqliteStore(tmp_path / "ccr.db")
        assert [i.key for i in reopened.load().image.items] == ["/k"]
        reopened.close()
        store.close()

    asyncio.run(scenario())


# -- three real nodes (haoslab.harness) ------------------------------------------------

AGENT = r"""
import asyncio, json, sys
from haos.cluster.dss.ccr import CcrConfig, CcrService, SqliteStore, VoteQuorumSource
from haos.cluster.dss.ccr.actions import Phase
from haos.cluster.dss.transport import CpgTransport
from haos.errors import HaosError


async def handle(ccr, req):
    op = req["op"]
    if op == "put":
        return await ccr.put(req["key"], req["value"])
    if op == "get":
        item = await ccr.get(req["key"])
        return None if item is None else item.value.decode()
    if op == "hash":
        return ccr.content_hash().hex()
    if op == "wait":  # until settled: round over, writable as asked, at least that revision
        def ok(s):
            return (s.phase is Phase.NORMAL and s.writable == req["writable"]
                    and s.revision >= req["revision"]
                    and (not s.writable or s.commit_revision == s.revision))
        s = await ccr.wait_until(ok, req["timeout"])
        return {"revision": s.revision, "members": list(s.members), "epoch": s.epoch}
    raise ValueError(op)


async def main(db, nodes):
    loop = asyncio.get_running_loop()
    store = SqliteStore(db)
    async with (
        CpgTransport.open("haos-ccr") as transport,
        VoteQuorumSource.open() as quorum,
        CcrService.open(transport, store, quorum, CcrConfig(nodes=nodes)) as ccr,
    ):
        print(json.dumps({"ok": "started"}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            req = json.loads(line)
            try:
                reply = {"ok": await handle(ccr, req)}
            except (HaosError, TimeoutError) as e:
                reply = {"error": type(e).__name__, "message": str(e)}
            print(json.dumps(reply), flush=True)
    store.close()


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


class Agent:
    """A CCR service in a node's namespaces, driven over stdin/stdout (one JSON per line)."""

    def __init__(self, cluster: Any, node: int, db: Path) -> None:
        from haoslab.harness.node import node_argv

        argv = node_argv(
            cluster.names.node(node),
            cluster.workdir / f"n{node}",
            [sys.executable, "-c", AGENT, os.fspath(db), str(len(cluster.node_ids))],
        )
        self.node = node
        self._log_path = db.with_suffix(".log")
        self._log = open(self._log_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        )
        assert self._reply(DEADLINE) == {"ok": "started"}

    def call(self, **request: object) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        reply = self._reply(2 * DEADLINE)
        if "error" in reply:
            raise AgentError(reply["error"], reply["message"])
        return reply["ok"]

    def wait(self, writable: bool = True, revision: int = 0) -> Any:
        return self.call(op="wait", writable=writable, revision=revision, timeout=DEADLINE)

    def _reply(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            tail = self._log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"node {self.node}'s agent gave no answer ({timeout} s):\n{tail}")
        return json.loads(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(DEADLINE)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._log.close()


class AgentError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def skip_unless_clusters_can_run() -> None:
    skip_unless_nodes_can_run()
    for tool in ("corosync-cmapctl", "nsenter", "nft"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"needs {tool}")


def test_three_real_nodes_replicate_refuse_minority_writes_and_catch_up(tmp_path: Path) -> None:
    skip_unless_clusters_can_run()
    from haoslab.harness import Cluster, ClusterSpec

    agents: dict[int, Agent] = {}
    with Cluster(ClusterSpec(nodes=3)) as cluster:
        try:
            for n in (1, 2, 3):
                agents[n] = Agent(cluster, n, tmp_path / f"node{n}.db")
            for agent in agents.values():
                assert agent.wait()["members"] == [1, 2, 3]
            revisions = [
                agents[n].call(op="put", key=f"/n{n}", value=f"from {n}") for n in (1, 2, 3)
            ]
            assert sorted(revisions) == [1, 2, 3]
            assert len({a.wait(revision=3) and a.call(op="hash") for a in agents.values()}) == 1

            cluster.partition([[1, 2], [3]])
            agents[3].wait(writable=False)
            with pytest.raises(AgentError, match="not quorate"):
                agents[3].call(op="put", key="/n3", value="from the minority")
            assert agents[1].call(op="put", key="/n3", value="from the majority") == 4
            assert agents[3].call(op="get", key="/n3") == "from 3"  # stale, but served

            cluster.heal()
            for agent in agents.values():
                agent.wait(revision=4)
            assert agents[3].call(op="get", key="/n3") == "from the majority"

            killed = agents.pop(2)
            killed.kill()  # the CCR process dies; corosync on node 2 stays up
            killed.close()
            assert agents[3].call(op="put", key="/n2", value="while 2 was down") == 5
            agents[2] = Agent(cluster, 2, tmp_path / "node2.db")
            agents[2].wait(revision=5)
            assert agents[2].call(op="get", key="/n2") == "while 2 was down"
            assert len({a.wait(revision=5) and a.call(op="hash") for a in agents.values()}) == 1
        finally:
            for agent in agents.values():
                agent.close()
