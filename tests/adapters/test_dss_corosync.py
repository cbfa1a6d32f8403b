"""CES, CNS, CRC, RRPC and AM over a real corosync 3 (one node, CorosyncTestNode).

Two kinds of test:

* Each service on the production adapter, :class:`CpgTransport`, as the group's one member:
  its messages go out through CPG and come back in agreed order.
* Several members as separate processes. Two service instances in *one* process cannot share
  a group: CPG names a group member by (node id, pid) and refuses a second join of the same
  group from the same process (``cpg_join``: CS_ERR_EXIST). And CpgTransport names members by
  node id (one haos process per node), so on a one-node test cluster every process would be
  "node 1". So peer processes run behind :class:`ProcessTransport`, which names members by
  pid; a peer runs one service and is driven over stdin/stdout. These cover what keys on
  members over real CPG: fan-out and order across processes, a unicast to one member, state
  transfer to a joiner, acks from a standby, a call routed to one member, and a member's death
  (SIGKILL → CPG PROCDOWN → view).

The synchronous checkpoint-write latency (median of 200) is measured and printed, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from haos.cluster.dss.checkpoint import CheckpointService, Role
from haos.cluster.dss.checkpoint.service import DROP_AFTER
from haos.cluster.dss.events import EventService
from haos.cluster.dss.messaging.group import GroupService, running
from haos.cluster.dss.messaging.rrpc import Call, RpcService
from haos.cluster.dss.naming import NamingService
from haos.cluster.dss.transport import CpgTransport
from haos.errors import UnavailableError
from haoslab.fakes.pidtransport import ProcessTransport
from haoslab.fakes.testnode import CorosyncTestNode, SingleNodeConfig

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

DEADLINE = 10.0
CONFIG = SingleNodeConfig(cluster_name="haos-dss", token_ms=1000)
WRITES = 200


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


def fresh_group(service: str) -> str:
    return f"haos-{service}-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def started(*services: GroupService) -> AsyncIterator[None]:
    """Start the services one after the other (each sees the ones before it join first)."""
    async with contextlib.AsyncExitStack() as stack:
        for service in services:
            async with asyncio.timeout(DEADLINE):
                await stack.enter_async_context(running(service))
        yield


def report(capsys: pytest.CaptureFixture[str], what: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    with capsys.disabled():
        print(
            f"\n{what}: median {statistics.median(samples) * 1e6:.0f} µs, "
            f"p95 {p95 * 1e6:.0f} µs, max {ordered[-1] * 1e6:.0f} µs over {len(samples)}"
        )


# -- each service on CpgTransport, as the only member ---------------------------------------


def test_ces_a_member_gets_its_own_events_in_order_over_cpg(attached: CorosyncTestNode) -> None:
    async def go() -> None:
        async with CpgTransport.open(fresh_group("ces")) as t:
            ces = EventService(t)
            async with started(ces):
                feed = ces.subscribe("load/", prefix=True)
                other = ces.subscribe("other")
                for i in range(100):
                    await ces.publish("load/x", str(i).encode())
                async with asyncio.timeout(DEADLINE):
                    got = [await feed.get() for _ in range(100)]
                assert [(e.publisher, e.seq, e.payload) for e in got] == [
                    (1, i + 1, str(i).encode()) for i in range(100)
                ]
                assert other.get_nowait() is None and ces.drops.total == 0

    asyncio.run(go())


def test_cns_bind_rebind_unbind_over_cpg(attached: CorosyncTestNode) -> None:
    async def go() -> None:
        async with CpgTransport.open(fresh_group("cns")) as t:
            cns = NamingService(t)
            async with started(cns):
                watch = cns.watch("/svc")
                bound = await cns.bind("/svc/db", b"first")
                taken = await cns.rebind("/svc/db", b"second")
                assert taken.stamp > bound.stamp and cns.resolve("/svc/db") == taken
                async with asyncio.timeout(DEADLINE):
                    assert [(await watch.get()).new for _ in range(2)] == [bound, taken]
                assert await cns.unbind("/svc/db", b"second") is True
                assert cns.resolve("/svc/db") is None and cns.drops.total == 0

    asyncio.run(go())


def test_rrpc_a_member_calls_itself_over_cpg(attached: CorosyncTestNode) -> None:
    async def echo(call: Call) -> bytes:
        return b"echo:" + call.payload

    async def go() -> None:
        async with CpgTransport.open(fresh_group("rrpc")) as t:
            rpc = RpcService(t)
            rpc.register("echo", echo)
            async with started(rpc):
                for i in range(20):
                    assert await rpc.call(1, "echo", bytes([i]), timeout=DEADLINE) == (
                        b"echo:" + bytes([i])
                    )

    asyncio.run(go())


def test_crc_sync_write_latency_with_no_standby(
    attached: CorosyncTestNode, capsys: pytest.CaptureFixture[str]
) -> None:
    async def go() -> list[float]:
        async with CpgTransport.open(fresh_group("crc")) as t:
            crc = CheckpointService(t)
            async with started(crc):
                ckpt = await crc.open("db", Role.ACTIVE)
                samples = []
                for i in range(WRITES):
                    t0 = time.perf_counter()
                    await ckpt.write("state", i.to_bytes(4, "big") * 64)
                    samples.append(time.perf_counter() - t0)
                assert ckpt.read("state") == (WRITES - 1).to_bytes(4, "big") * 64
                return samples

    report(capsys, "CRC sync write, writer alone (delivery back only)", asyncio.run(go()))


# -- members as processes (members by pid) --------------------------------------------------

PEER = r"""
import asyncio, inspect, json, sys
from haoslab.fakes.pidtransport import ProcessTransport

def say(**fields):
    print(json.dumps(fields), flush=True)

async def commands():
    while line := await asyncio.to_thread(sys.stdin.readline):
        yield line.strip()

async def serve(service, setup, answer):
    async with asyncio.TaskGroup() as tg:
        tg.create_task(service.run())
        await service.wait_ready()
        state = await setup()
        say(ready=service.node_id)
        async for command in commands():
            result = answer(state, command)
            say(**(await result if inspect.isawaitable(result) else result))
        await service.close()

async def ces(t):
    from haos.cluster.dss.events import EventService
    events = EventService(t)
    async def setup():
        return events.subscribe("", prefix=True)
    async def answer(feed, command):
        verb, n = command.split()
        if verb == "publish":
            for i in range(int(n)):
                await events.publish(f"load/{t.node_id}", str(i).encode())
            return {}
        got = [await feed.get() for _ in range(int(n))]
        return {"events": [[e.publisher, e.event_type, e.payload.hex()] for e in got]}
    await serve(events, setup, answer)

async def crc_standby(t):
    from haos.cluster.dss.checkpoint import CheckpointService, Role
    crc = CheckpointService(t)
    async def setup():
        return await crc.open("db", Role.STANDBY)
    def answer(ckpt, _):
        return {"sections": {k: v.hex() for k, v in ckpt.sections().items()}}
    await serve(crc, setup, answer)

async def rrpc_server(t):
    from haos.cluster.dss.messaging.rrpc import RpcService
    rpc = RpcService(t)
    async def echo(call):
        return b"echo:" + call.payload
    async def hang(call):
        say(hanging=call.caller)
        await asyncio.Event().wait()
    rpc.register("echo", echo)
    rpc.register("hang", hang)
    async def setup():
        return None
    await serve(rpc, setup, lambda *_: {})

async def cns(t):
    from haos.cluster.dss.naming import NamingService
    names = NamingService(t)
    async def setup():
        return None
    def answer(_, command):
        return {"bindings": [[b.name, b.handle.hex(), b.owner] for b in names.bindings_under()]}
    await serve(names, setup, answer)

async def main():
    role, group = sys.argv[1:3]
    async with ProcessTransport.open(group) as t:
        roles = {"crc-standby": crc_standby, "rrpc-server": rrpc_server, "cns": cns, "ces": ces}
        await roles[role](t)

asyncio.run(main())
"""


class Peer:
    """A member in its own process (started from this thread: it inherits the namespace)."""

    def __init__(self, role: str, group: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PEER, role, group],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line, f"the peer exited with {self.proc.poll()}"
        result: dict[str, Any] = json.loads(line)
        return result

    async def ready(self) -> int:
        return int((await self.read())["ready"])

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await self.read()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def peer(role: str, group: str) -> Iterator[Peer]:
    p = Peer(role, group)
    try:
        yield p
    finally:
        p.finish()


async def members_include(service: Any, *pids: int) -> None:
    """Wait (deadline) until ``service``'s view has the peers in it: their joins reached us."""
    async with asyncio.timeout(DEADLINE):
        while not set(pids) <= set(service._link.members):
            await asyncio.sleep(0.005)


def test_ces_events_from_several_processes_reach_all_in_one_order(
    attached: CorosyncTestNode,
) -> None:
    group = fresh_group("ces")

    async def go() -> None:
        async with ProcessTransport.open(group) as t:
            ces = EventService(t)
            async with started(ces):
                feed = ces.subscribe("", prefix=True)
                with peer("ces", group) as p1, peer("ces", group) as p2:
                    pids = [await p1.ready(), await p2.ready()]
                    await members_include(ces, *pids)

                    async def publish_here() -> None:
                        for i in range(50):
                            await ces.publish(f"load/{t.node_id}", str(i).encode())

                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(publish_here())
                        tg.create_task(p1.ask("publish 50"))
                    async with asyncio.timeout(DEADLINE):
                        mine = [await feed.get() for _ in range(100)]
                    here = [[e.publisher, e.event_type, e.payload.hex()] for e in mine]
                    assert (await p1.ask("take 100"))["events"] == here
                    assert (await p2.ask("take 100"))["events"] == here
                    for publisher in (t.node_id, pids[0]):
                        got = [bytes.fromhex(e[2]) for e in here if e[0] == publisher]
                        assert got == [str(i).encode() for i in range(50)]

    asyncio.run(go())


def test_crc_standby_process_gets_the_content_and_sync_writes_wait_for_its_ack(
    attached: CorosyncTestNode, capsys: pytest.CaptureFixture[str]
) -> None:
    group = fresh_group("crc")

    async def go() -> list[float]:
        async with ProcessTransport.open(group) as t:
            crc = CheckpointService(t)
            async with started(crc):
                active = await crc.open("db", Role.ACTIVE)
                for i in range(5):
                    await active.write(f"s{i}", b"before the standby")
                with peer("crc-standby", group) as standby:
                    pid = await standby.ready()  # it got the directory, then the content
                    assert active.replicas == (pid,)
                    got = await standby.ask("read")
                    assert got["sections"] == {
                        f"s{i}": b"before the standby".hex() for i in range(5)
                    }
                    samples = []
                    for i in range(WRITES):
                        t0 = time.perf_counter()
                        await active.write("state", i.to_bytes(4, "big") * 64)  # waits for the ack
                        samples.append(time.perf_counter() - t0)
                    got = await standby.ask("read")
                    assert got["sections"]["state"] == ((WRITES - 1).to_bytes(4, "big") * 64).hex()

                    standby.kill(signal.SIGSTOP)  # a standby that stops storing
                    t0 = time.perf_counter()
                    write = asyncio.create_task(active.write("state", b"while stopped"))
                    done, _ = await asyncio.wait({write}, timeout=DROP_AFTER / 2)
                    assert not done, "a sync write returned without the standby's ack"
                    async with asyncio.timeout(DEADLINE):
                        await write  # at the bound the stopped standby is dropped
                    waited = time.perf_counter() - t0
                    assert DROP_AFTER <= waited < DROP_AFTER + 0.25, waited
                    assert active.replicas == ()  # stale: writes no longer wait for it
                    async with asyncio.timeout(DROP_AFTER / 2):
                        await active.write("state", b"after the drop")
                    standby.kill(signal.SIGKILL)
                return samples

    report(capsys, "CRC sync write, one standby in another process", asyncio.run(go()))


def test_rrpc_server_process_answers_and_its_death_fails_the_outstanding_call(
    attached: CorosyncTestNode, capsys: pytest.CaptureFixture[str]
) -> None:
    group = fresh_group("rrpc")

    async def go() -> float:
        async with ProcessTransport.open(group) as t:
            rpc = RpcService(t)
            async with started(rpc):
                with peer("rrpc-server", group) as server:
                    pid = await server.ready()
                    await members_include(rpc, pid)
                    assert await rpc.call(pid, "echo", b"hi", timeout=DEADLINE) == b"echo:hi"
                    call = asyncio.create_task(rpc.call(pid, "hang", timeout=60, retries=3))
                    assert (await server.read())["hanging"] == t.node_id
                    t0 = time.perf_counter()
                    server.kill()
                    with pytest.raises(UnavailableError, match="left"):
                        async with asyncio.timeout(DEADLINE):
                            await call
                    return time.perf_counter() - t0

    elapsed = asyncio.run(go())
    with capsys.disabled():
        print(f"\nRRPC: call failed {elapsed * 1e3:.1f} ms after SIGKILL of the server process")


def test_cns_process_joining_later_gets_the_table_by_state_transfer(
    attached: CorosyncTestNode,
) -> None:
    group = fresh_group("cns")

    async def go() -> None:
        async with ProcessTransport.open(group) as t:
            names = NamingService(t)
            async with started(names):
                for i in range(10):
                    await names.bind(f"/svc/{i}", bytes([i]))
                with peer("cns", group) as joiner:
                    pid = await joiner.ready()  # ready = it installed the table
                    got = (await joiner.ask("list"))["bindings"]
                    mine = [[b.name, b.handle.hex(), b.owner] for b in names.bindings_under()]
                    assert got == mine and len(got) == 10
                    await names.rebind("/svc/0", b"after", owner=pid)
                    # The joiner applies it when corosync delivers it there, which may be
                    # after this process saw its own delivery and asked.
                    async with asyncio.timeout(DEADLINE):
                        while ["/svc/0", b"after".hex(), pid] not in got:
                            got = (await joiner.ask("list"))["bindings"]
                    joiner.kill()
                    async with asyncio.timeout(DEADLINE):
                        while names.resolve("/svc/0") is not None:  # owner left: binding gone
                            await asyncio.sleep(0.01)

    asyncio.run(go())
