"""The corosync binding against a real corosync 3 (knet, crypto, votequorum) on one node.

Corosync runs in its own network and mount namespaces (CorosyncTestNode); each test body runs
with the test thread moved into that network namespace (the ``attached`` fixture), because
corosync's IPC sockets are abstract unix sockets, private to a network namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from haos.cluster.dss.corosync import _lib
from haos.cluster.dss.corosync.cmap import Cmap, CmapType, NodelistEntry
from haos.cluster.dss.corosync.cpg import (
    CpgGroup,
    CpgMember,
    CpgReason,
    Delivered,
    MembershipChanged,
    TotemRing,
)
from haos.cluster.dss.corosync.errors import CorosyncError, CorosyncUnavailableError, CsError
from haos.cluster.dss.corosync.quorum import (
    NodeState,
    NodeVotes,
    QuorumChanged,
    QuorumFlags,
    QuorumNode,
    VoteQuorum,
)
from haos.errors import UnavailableError, UsageError
from haoslab.fakes.testnode import CorosyncTestNode, SingleNodeConfig

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

E = TypeVar("E")
T = TypeVar("T")
DEADLINE = 10.0  # seconds for any one awaited condition; typical waits are milliseconds
CONFIG = SingleNodeConfig(cluster_name="haos-binding", token_ms=1000)


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


def fresh_group() -> str:
    return f"haos-test-{uuid.uuid4().hex[:12]}"


async def next_of(events: Any, kind: type[E], timeout: float = DEADLINE) -> E:
    """The next event of type ``kind``, dropping other kinds before it."""
    async with asyncio.timeout(timeout):
        while True:
            event = await events.get()
            if isinstance(event, kind):
                return event


def shm_leftovers(pid: int) -> list[str]:
    return sorted(
        p.name
        for p in Path("/dev/shm").iterdir()
        if p.name.startswith((f"qb-{pid}-", f"qb-corosync-{pid}-"))
    )


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
    """A node of its own, for tests that kill corosync; checks nothing is left behind."""
    skip_unless_nodes_can_run()
    with CorosyncTestNode.running(CONFIG) as own, own.attached():
        yield own
    assert shm_leftovers(own.pid) == []
    assert own.workdir is None


# -- CPG ------------------------------------------------------------------------------------


def test_a_joining_member_sees_itself_join_and_the_current_ring(attached: CorosyncTestNode) -> None:
    async def scenario() -> None:
        async with CpgGroup.open(fresh_group()) as group:
            async with asyncio.timeout(DEADLINE):
                first_two = [await group.events.get() for _ in range(2)]
            (changed,) = [e for e in first_two if isinstance(e, MembershipChanged)]
            (ring,) = [e for e in first_two if isinstance(e, TotemRing)]
            assert changed.joined == (CpgMember(1, os.getpid(), CpgReason.JOIN),)
            assert [(m.node_id, m.pid) for m in changed.members] == [(1, os.getpid())]
            assert changed.left == ()
            assert ring.members == (1,)
            assert ring.ring_id.seq > 0
            assert await group.local_get() == 1
            assert await group.membership_get() == (CpgMember(1, os.getpid()),)

    run(scenario())


def test_200_multicasts_come_back_to_the_sender_all_in_agreed_order(
    attached: CorosyncTestNode,
) -> None:
    sent = [f"message {i:03d}".encode() for i in range(200)]

    async def scenario() -> list[Delivered]:
        async with CpgGroup.open(fresh_group()) as group:
            await next_of(group.events, MembershipChanged)
            for payload in sent:
                await group.mcast(payload)
            return [await next_of(group.events, Delivered) for _ in sent]

    delivered = run(scenario())
    assert [d.payload for d in delivered] == sent
    assert {(d.node_id, d.pid) for d in delivered} == {(1, os.getpid())}


def test_posted_multicasts_leave_in_order_without_waiting_and_mix_with_awaited_ones(
    attached: CorosyncTestNode,
) -> None:
    sent = [f"message {i:03d}".encode() for i in range(300)]

    async def scenario() -> list[Delivered]:
        async with CpgGroup.open(fresh_group()) as group:
            await next_of(group.events, MembershipChanged)
            for i, payload in enumerate(sent):
                if i % 50 == 49:
                    await group.mcast(payload)  # returns once corosync took it: in order too
                else:
                    group.post(payload)
            return [await next_of(group.events, Delivered) for _ in sent]

    delivered = run(scenario())
    assert [d.payload for d in delivered] == sent


def test_an_empty_and_a_large_message_are_delivered_intact(attached: CorosyncTestNode) -> None:
    big = os.urandom(256 * 1024)  # larger than one totem frame: libcpg fragments it

    async def scenario() -> list[bytes]:
        async with CpgGroup.open(fresh_group()) as group:
            await group.mcast(b"")
            await group.mcast(big)
            return [(await next_of(group.events, Delivered)).payload for _ in range(2)]

    assert run(scenario()) == [b"", big]


PEER = """
import asyncio, sys
from haos.cluster.dss.corosync.cpg import CpgGroup

async def main() -> None:
    async with CpgGroup.open(sys.argv[1]):
        print("joined", flush=True)
        sys.stdin.read()  # until the test closes our stdin

asyncio.run(main())
"""


def test_a_second_client_on_the_node_is_seen_joining_and_leaving(
    attached: CorosyncTestNode,
) -> None:
    group_name = fresh_group()

    async def scenario() -> None:
        async with CpgGroup.open(group_name) as group:
            await next_of(group.events, MembershipChanged)
            # Started from this thread, the peer inherits corosync's network namespace.
            peer = subprocess.Popen(
                [sys.executable, "-c", PEER, group_name],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
            try:
                peer_joined = CpgMember(1, peer.pid, CpgReason.JOIN)
                changed = await next_of(group.events, MembershipChanged)
                assert changed.joined == (peer_joined,)
                assert {m.pid for m in changed.members} == {os.getpid(), peer.pid}
                assert len(await group.membership_get()) == 2

                assert peer.stdin is not None
                peer.stdin.close()  # the peer leaves the group and exits
                changed = await next_of(group.events, MembershipChanged)
                assert changed.left == (CpgMember(1, peer.pid, CpgReason.LEAVE),)
                assert [m.pid for m in changed.members] == [os.getpid()]
                assert peer.wait(DEADLINE) == 0
            finally:
                if peer.poll() is None:
                    peer.kill()
                    peer.wait()
                if peer.stdin is not None:
                    peer.stdin.close()

    run(scenario())


def test_self_delivery_latency(attached: CorosyncTestNode) -> None:
    """One message at a time, mcast to own delivery; printed (-rP), with a very loose bound."""

    async def scenario() -> list[float]:
        async with CpgGroup.open(fresh_group()) as group:
            await next_of(group.events, MembershipChanged)
            latencies = []
            for i in range(300):
                started = time.perf_counter()
                await group.mcast(b"%d" % i)
                await next_of(group.events, Delivered)
                latencies.append(time.perf_counter() - started)
            return latencies

    median_ms = statistics.median(run(scenario())) * 1000
    print(f"CPG self-delivery over 300 messages: median {median_ms:.3f} ms")
    assert median_ms < 20


# -- votequorum -----------------------------------------------------------------------------


def test_a_single_node_cluster_is_quorate_with_one_expected_vote(
    attached: CorosyncTestNode,
) -> None:
    async def scenario() -> None:
        async with VoteQuorum.open() as quorum:
            info = await quorum.info()
            assert info.quorate
            assert (info.node_id, info.state) == (1, NodeState.MEMBER)
            assert (info.votes, info.expected_votes, info.total_votes, info.quorum) == (1, 1, 1, 1)
            assert not info.two_node and not info.wait_for_all
            assert QuorumFlags.QUORATE in info.flags

            changed = await next_of(quorum.events, QuorumChanged)
            assert changed == QuorumChanged(True, (QuorumNode(1, NodeState.MEMBER),))
            assert await quorum.nodes() == (NodeVotes(1, NodeState.MEMBER, 1, 1),)

            with pytest.raises(CorosyncError) as unknown:
                await quorum.info(99)
            assert unknown.value.cs_name == "CS_ERR_NOT_EXIST"
            assert not isinstance(unknown.value, UnavailableError)

    run(scenario())


# -- cmap -----------------------------------------------------------------------------------


def test_cmap_reads_totem_timing_and_the_nodelist(attached: CorosyncTestNode) -> None:
    with Cmap.connect() as cmap:
        assert cmap.get_int("totem.token") == CONFIG.token_ms
        assert cmap.get_int("runtime.config.totem.token") == CONFIG.token_ms  # one node
        assert cmap.get_int("runtime.config.totem.consensus") == CONFIG.token_ms * 12 // 10
        assert cmap.get_str("totem.cluster_name") == CONFIG.cluster_name
        assert cmap.get_str("totem.transport") == "knet"
        assert cmap.nodelist() == (NodelistEntry(0, 1, "node1", ((0, "127.0.0.1"),)),)
        assert cmap.items("nodelist.node.0.") == {
            "nodelist.node.0.name": "node1",
            "nodelist.node.0.nodeid": 1,
            "nodelist.node.0.ring0_addr": "127.0.0.1",
        }
        assert cmap.find("totem.no_such_key") is None
        with pytest.raises(CorosyncError) as missing:
            cmap.get("totem.no_such_key")
        assert missing.value.cs_name == "CS_ERR_NOT_EXIST"
        with pytest.raises(TypeError):
            cmap.get_str("totem.token")


# -- corosync absent or gone ----------------------------------------------------------------


def test_every_service_is_unavailable_where_corosync_is_not_running(
    doomed: CorosyncTestNode,
) -> None:
    doomed.stop(signal.SIGKILL)

    async def scenario() -> None:
        with pytest.raises(CorosyncUnavailableError, match="not running"):
            async with CpgGroup.open(fresh_group()):
                pass
        with pytest.raises(UnavailableError, match="votequorum_initialize: CS_ERR_LIBRARY"):
            async with VoteQuorum.open():
                pass

    run(scenario())
    with pytest.raises(UnavailableError, match="cmap_initialize: CS_ERR_LIBRARY"):
        Cmap.connect()


def test_an_open_group_reports_unavailable_when_corosync_is_killed(
    doomed: CorosyncTestNode,
) -> None:
    async def scenario() -> None:
        async with CpgGroup.open(fresh_group()) as group:
            await next_of(group.events, MembershipChanged)
            assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
            with pytest.raises(CorosyncUnavailableError, match="cpg_dispatch: CS_ERR_LIBRARY"):
                await next_of(group.events, Delivered)
            with pytest.raises(UnavailableError):
                await group.mcast(b"after the crash")
        with pytest.raises(CorosyncUnavailableError):  # the end stays visible after close
            await group.events.get()

    run(scenario())


STOPPED_DEADLINE = 0.5  # call_timeout for the handles of the SIGSTOP test


async def ticking(ticks: list[float], period: float = 0.01) -> None:
    """Appends the loop time every ``period`` s: gaps show when the loop was blocked."""
    loop = asyncio.get_running_loop()
    while True:
        ticks.append(loop.time())
        await asyncio.sleep(period)


def longest_gap(ticks: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(ticks)), default=0.0)


def test_calls_to_a_stopped_corosync_fail_in_time_while_the_loop_keeps_running(
    doomed: CorosyncTestNode,
) -> None:
    """SIGSTOP corosync: mcast and votequorum_getinfo raise UnavailableError within the
    deadline of the call that blocks, another task keeps ticking meanwhile, and the broken
    handles fail fast after. After SIGCONT a new handle works."""

    async def scenario() -> None:
        ticks: list[float] = []
        async with asyncio.TaskGroup() as tasks:
            ticker = tasks.create_task(ticking(ticks))
            timeout = STOPPED_DEADLINE
            async with (
                CpgGroup.open(fresh_group(), call_timeout=timeout) as group,
                VoteQuorum.open(call_timeout=timeout) as quorum,
            ):
                await next_of(group.events, MembershipChanged)
                assert (await quorum.info()).quorate
                os.kill(doomed.pid, signal.SIGSTOP)
                try:
                    ticks.clear()
                    started = time.monotonic()
                    # libcpg queues a multicast in libqb's request ring without waiting
                    # for corosync; once the ring is full the call blocks in the library.
                    with pytest.raises(UnavailableError, match="cpg_mcast_joined: CS_ERR_TIMEOUT"):
                        for _ in range(100_000):
                            await group.mcast(b"m" * 1024)
                    assert timeout <= time.monotonic() - started < timeout + 1.0
                    started = time.monotonic()
                    with pytest.raises(CorosyncUnavailableError, match="votequorum_getinfo"):
                        await quorum.info()  # a round trip: blocks in the library at once
                    assert timeout <= time.monotonic() - started < timeout + 0.5
                    assert len(ticks) >= 40 and longest_gap(ticks) < 0.2  # never blocked

                    started = time.monotonic()  # broken now: later calls fail at once
                    with pytest.raises(UnavailableError, match="broke earlier"):
                        await group.mcast(b"again")
                    with pytest.raises(UnavailableError, match="broke earlier"):
                        await group.local_get()
                    assert time.monotonic() - started < 0.1
                    with pytest.raises(CorosyncUnavailableError, match="CS_ERR_TIMEOUT"):
                        async with asyncio.timeout(1):
                            while True:  # the stream ends with the break, after queued events
                                await group.events.get()
                finally:
                    os.kill(doomed.pid, signal.SIGCONT)
            # Closing the broken handles did not wait for the stuck calls either.
            assert longest_gap(ticks) < 0.2

            async with CpgGroup.open(fresh_group()) as fresh, VoteQuorum.open() as quorum:
                await fresh.mcast(b"back")
                assert (await next_of(fresh.events, Delivered)).payload == b"back"
                assert (await quorum.info()).quorate
            ticker.cancel()

    run(scenario())


def test_posts_to_a_stopped_corosync_break_the_handle_in_time_while_the_loop_runs(
    doomed: CorosyncTestNode,
) -> None:
    """SIGSTOP corosync and keep posting: the handle breaks within its deadline (the stream
    ends with CS_ERR_TIMEOUT, later posts raise at once) and the loop is never blocked."""

    async def scenario() -> None:
        ticks: list[float] = []
        async with asyncio.TaskGroup() as tasks:
            ticker = tasks.create_task(ticking(ticks))
            async with CpgGroup.open(fresh_group(), call_timeout=STOPPED_DEADLINE) as group:
                await next_of(group.events, MembershipChanged)
                os.kill(doomed.pid, signal.SIGSTOP)
                try:
                    ticks.clear()
                    started = time.monotonic()
                    with pytest.raises(UnavailableError, match=r"CS_ERR_TIMEOUT|broke earlier"):
                        while time.monotonic() - started < STOPPED_DEADLINE + 1.0:
                            group.post(b"m" * 1024)
                            await asyncio.sleep(0)  # others run between posts
                    assert time.monotonic() - started < STOPPED_DEADLINE + 1.0
                    with pytest.raises(CorosyncUnavailableError, match="CS_ERR_TIMEOUT"):
                        async with asyncio.timeout(1):
                            while True:
                                await group.events.get()
                    assert longest_gap(ticks) < 0.2  # never blocked
                finally:
                    os.kill(doomed.pid, signal.SIGCONT)
            ticker.cancel()

    run(scenario())


def test_opening_a_handle_on_a_stopped_corosync_fails_in_time(doomed: CorosyncTestNode) -> None:
    os.kill(doomed.pid, signal.SIGSTOP)

    async def scenario() -> None:
        started = time.monotonic()
        try:
            with pytest.raises(UnavailableError, match="CS_ERR_TIMEOUT"):
                async with CpgGroup.open(fresh_group(), call_timeout=STOPPED_DEADLINE):
                    pass
            with pytest.raises(UnavailableError, match="CS_ERR_TIMEOUT"):
                async with VoteQuorum.open(call_timeout=STOPPED_DEADLINE):
                    pass
        finally:
            os.kill(doomed.pid, signal.SIGCONT)
        assert time.monotonic() - started < 4 * STOPPED_DEADLINE
        async with CpgGroup.open(fresh_group()) as group:
            assert await group.local_get() == 1

    run(scenario())


# -- the ctypes declarations match the C headers --------------------------------------------

STRUCTS: list[tuple[str, type[Any]]] = [
    ("struct cpg_name", _lib.CpgName),
    ("struct cpg_address", _lib.CpgAddress),
    ("struct cpg_ring_id", _lib.CpgRingId),
    ("cpg_model_v1_data_t", _lib.CpgModelV1Data),
    ("struct iovec", _lib.IoVec),
    ("struct votequorum_info", _lib.VotequorumInfo),
    ("votequorum_node_t", _lib.VotequorumNode),
    ("votequorum_ring_id_t", _lib.VotequorumRingId),
    ("votequorum_callbacks_t", _lib.VotequorumCallbacks),
]
CONSTANTS: dict[str, int] = {
    **{m.name: m.value for m in CsError},
    **{f"CPG_REASON_{m.name}": m.value for m in CpgReason},
    **{f"VOTEQUORUM_INFO_{m.name}": m.value for m in QuorumFlags},
    **{f"VOTEQUORUM_NODESTATE_{m.name}": m.value for m in NodeState if m.value},
    **{f"CMAP_VALUETYPE_{m.name}": m.value for m in CmapType},
    "CPG_TYPE_AGREED": _lib.CPG_TYPE_AGREED,
    "CPG_MODEL_V1": _lib.CPG_MODEL_V1,
    "CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF": _lib.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    "CPG_MAX_NAME_LENGTH": _lib.CPG_MAX_NAME_LENGTH,
    "CPG_MEMBERS_MAX": _lib.CPG_MEMBERS_MAX,
    "CS_DISPATCH_ALL": _lib.CS_DISPATCH_ALL,
    "CS_TRACK_CURRENT": _lib.CS_TRACK_CURRENT,
    "CS_TRACK_CHANGES": _lib.CS_TRACK_CHANGES,
    "CMAP_KEYNAME_MAXLEN": _lib.CMAP_KEYNAME_MAXLEN,
}


def test_ctypes_layouts_and_constants_match_the_corosync_headers(tmp_path: Path) -> None:
    compiler = shutil.which("cc")
    if compiler is None or not Path("/usr/include/corosync/cpg.h").exists():
        pytest.skip("needs a C compiler and the corosync -dev headers")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <sys/uio.h>"]
    lines += [f"#include <corosync/{h}.h>" for h in ("cpg", "votequorum", "cmap")]
    lines.append("int main(void) {")
    for c_type, struct in STRUCTS:
        lines.append(f'printf("{c_type} size %zu\\n", sizeof({c_type}));')
        for field, *_ in struct._fields_:
            lines.append(f'printf("{c_type} {field} %zu\\n", offsetof({c_type}, {field}));')
    for name in CONSTANTS:
        lines.append(f'printf("const {name} %lld\\n", (long long)({name}));')
    lines.append("return 0; }")
    source = tmp_path / "layout.c"
    source.write_text("\n".join(lines))
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-o", binary, source], check=True, stdin=subprocess.DEVNULL)
    output = subprocess.run([binary], check=True, capture_output=True, text=True).stdout

    from_c = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in output.splitlines()}
    from_py: dict[str, int] = {f"const {k}": v for k, v in CONSTANTS.items()}
    for c_type, struct in STRUCTS:
        from_py[f"{c_type} size"] = ctypes.sizeof(struct)
        for field, *_ in struct._fields_:
            from_py[f"{c_type} {field}"] = getattr(struct, field).offset
    assert from_py == from_c


# -- error translation and retries (no corosync needed) -------------------------------------

NO_WAIT = _lib.Backoff(first=0.0, cap=0.0, attempts=3)


def answers(*codes: int) -> Callable[..., int]:
    """A stand-in for a libcpg function that answers ``codes`` in turn."""
    pending = list(codes)

    def cpg_join(*_args: object) -> int:
        return pending.pop(0)

    return cpg_join


def test_try_again_is_retried_until_corosync_accepts() -> None:
    try_again, ok = CsError.CS_ERR_TRY_AGAIN, CsError.CS_OK
    _lib.call(answers(try_again, try_again, ok), backoff=NO_WAIT)
    run(_lib.acall(answers(try_again, try_again, ok), backoff=NO_WAIT))


def test_try_again_beyond_the_retry_budget_is_unavailable() -> None:
    busy = [CsError.CS_ERR_TRY_AGAIN] * 3
    with pytest.raises(CorosyncUnavailableError, match=r"cpg_join: CS_ERR_TRY_AGAIN.*3 attempts"):
        _lib.call(answers(*busy), backoff=NO_WAIT)
    with pytest.raises(CorosyncUnavailableError, match="still busy after 3 attempts"):
        run(_lib.acall(answers(*busy), backoff=NO_WAIT))


def test_other_errors_are_raised_at_once_with_their_code_name() -> None:
    with pytest.raises(CorosyncError) as exists:
        _lib.call(answers(CsError.CS_ERR_EXIST, CsError.CS_OK), backoff=NO_WAIT)
    assert (exists.value.operation, exists.value.cs_name) == ("cpg_join", "CS_ERR_EXIST")
    assert not isinstance(exists.value, UnavailableError)
    assert exists.value.code == "corosync"
    unknown = _lib.error_for("cpg_join", 42)
    assert unknown.cs_name == "CS_ERR_UNKNOWN_42"
    gone = _lib.error_for("cpg_join", CsError.CS_ERR_LIBRARY)
    assert isinstance(gone, UnavailableError) and gone.code == "corosync-unavailable"


def test_the_default_backoff_gives_up_within_a_second() -> None:
    delays = list(_lib.DEFAULT_BACKOFF.delays())
    assert len(delays) == _lib.DEFAULT_BACKOFF.attempts - 1
    assert 0.3 < sum(delays) < 1.0


def test_a_group_name_must_fit_struct_cpg_name() -> None:
    assert _lib.cpg_name("x" * 128).length == 128
    for bad in ("", "x" * 129):
        with pytest.raises(UsageError):
            _lib.cpg_name(bad)
