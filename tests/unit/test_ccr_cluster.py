"""Three CCR services on the in-memory bus, with SQLite stores in tmp_path: convergence,
watches, partitions, crashes, restarts, and a randomized run of all of them.

Waits are conditions with deadlines (:meth:`Cluster.until`); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haos.cluster.dss.ccr import (
    CcrConfig,
    CcrService,
    Compare,
    Delete,
    Item,
    ManualQuorum,
    MemoryStore,
    OutcomeUnknownError,
    Phase,
    Put,
    SqliteStore,
    Store,
    WatchEvent,
    WatchLostError,
    follow,
)
from haos.cluster.dss.ccr.model import Entry
from haos.cluster.dss.ccr.protocol import Replica
from haos.errors import ConflictError, UnavailableError
from haoslab.testing.bus import LocalBus

DEADLINE = 5.0
ALL = (1, 2, 3)


@dataclass
class Node:
    store: Store
    quorum: ManualQuorum
    service: CcrService
    task: asyncio.Task[None]

    @property
    def replica(self) -> Replica:
        core = self.service._core  # the tests check the copy's log, which the API hides
        assert core is not None
        return core


@dataclass
class Cluster:
    """Nodes 1..3 on one LocalBus; the quorum fakes follow the partitions like votequorum."""

    tg: asyncio.TaskGroup
    make_store: Callable[[int], Store]
    config: CcrConfig = field(default_factory=lambda: CcrConfig(nodes=3))
    bus: LocalBus = field(default_factory=LocalBus)
    nodes: dict[int, Node] = field(default_factory=dict)
    sides: list[set[int]] = field(default_factory=lambda: [set(ALL)])

    async def start(self, *ids: int) -> None:
        for n in ids:
            quorum = ManualQuorum(self._quorate(n, with_self=True))
            store = self.make_store(n)
            service = CcrService(self.bus.join(n), store, quorum, self.config)
            await service.load()
            self.nodes[n] = Node(store, quorum, service, self.tg.create_task(service.run()))
            self._follow_quorum()

    async def crash(self, *ids: int) -> None:
        """Kill the nodes abruptly: whatever their stores hold is what they restart with."""
        for n in ids:
            node = self.nodes.pop(n)
            self.bus.crash(n)
            node.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node.task
            node.store.close()
        self._follow_quorum()

    def lose_last_messages_of(self, n: int) -> None:
        """Drop node ``n``'s messages that no other member has delivered yet, everywhere.

        What CPG's agreed order allows when ``n`` fails (or is cut off) before the others
        received them: ``n`` delivered its own messages, the survivors none of them (all the
        same ones, by virtual synchrony). Call right before crashing or isolating ``n``.
        """
        from haos.cluster.dss.transport import Message

        others = [m for m in self.nodes if m != n]
        queues = {m: self.bus.endpoints[m].queue for m in others}
        contents = {m: [q.get_nowait() for _ in range(q.qsize())] for m, q in queues.items()}
        pending = [
            sum(isinstance(e, Message) and e.sender == n for e in c) for c in contents.values()
        ]
        lose = min(pending, default=0)  # the suffix of n's messages no survivor has seen
        for m, events in contents.items():
            skip = sum(isinstance(e, Message) and e.sender == n for e in events) - lose
            for event in events:
                if isinstance(event, Message) and event.sender == n:
                    skip -= 1
                    if skip < 0:
                        continue
                queues[m].put_nowait(event)

    def partition(self, groups: list[list[int]], *, stale_quorum: bool = False) -> None:
        self.bus.partition(groups)
        self.sides = [set(g) for g in groups]
        if not stale_quorum:
            self._follow_quorum()

    def heal(self) -> None:
        self.bus.heal()
        self.sides = [set(ALL)]
        self._follow_quorum()

    def _quorate(self, n: int, with_self: bool = False) -> bool:
        side = next(s for s in self.sides if n in s)
        live = {m for m in side if m in self.nodes} | ({n} if with_self else set())
        return len(live) >= self.config.majority

    def _follow_quorum(self) -> None:
        for n, node in self.nodes.items():
            node.quorum.set(self._quorate(n))

    def __getitem__(self, n: int) -> CcrService:
        return self.nodes[n].service

    async def until(self, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
        """Wait until ``predicate`` holds, re-checking whenever any node made progress."""
        async with asyncio.timeout(timeout):
            while True:
                seen = {n: node.service.progress for n, node in self.nodes.items()}
                if predicate():
                    return
                waits = [
                    asyncio.ensure_future(self.nodes[n].service.wait_progress(p))
                    for n, p in seen.items()
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()

    def settled(self, ids: Iterable[int]) -> bool:
        """The nodes finished syncing, hold one version, and know it is all committed."""
        statuses = [self[n].status() for n in ids]
        return (
            all(s.phase is Phase.NORMAL for s in statuses)
            and len({s.version for s in statuses}) == 1
            and all(s.commit_revision == s.revision for s in statuses if s.writable)
            and all(self.bus.endpoints[n].queue.empty() for n in ids)
        )

    def all_sides_settled(self) -> bool:
        sides = [[n for n in side if n in self.nodes] for side in self.sides]
        return all(self.settled(live) for live in sides if live)

    async def converged(self, ids: Iterable[int] = ALL) -> bytes:
        chosen = tuple(ids)
        await self.until(
            lambda: self.settled(chosen) and all(self[n].status().synced for n in chosen)
        )
        hashes = {self[n].content_hash() for n in chosen}
        stored = {await asyncio.to_thread(self.nodes[n].store.hash) for n in chosen}
        assert len(hashes) == 1 and stored == hashes, "copies differ"
        return hashes.pop()


@contextlib.asynccontextmanager
async def cluster(
    make_store: Callable[[int], Store], config: CcrConfig | None = None, start: bool = True
) -> AsyncIterator[Cluster]:
    async with asyncio.TaskGroup() as tg:
        c = Cluster(tg, make_store, config or CcrConfig(nodes=3))
        try:
            if start:
                await c.start(*ALL)
                await c.until(lambda: all(c[n].status().writable for n in ALL))
            yield c
        finally:
            for node in c.nodes.values():
                node.task.cancel()


def sqlite(tmp_path: Path) -> Callable[[int], Store]:
    return lambda n: SqliteStore(tmp_path / f"node{n}.db")


def run(scenario: Callable[[], object]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


async def collect(watch: AsyncIterator[WatchEvent], until_revision: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(DEADLINE):
        async for event in watch:
            events.append(event)
            if event.revision >= until_revision:
                return events
    return events


# -- directed scenarios ----------------------------------------------------------------------


def test_writes_from_every_node_converge_on_every_copy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            writes = [c[n].put(f"/n{n}/k{i}", f"{n}.{i}") for n in ALL for i in range(10)]
            revisions = await asyncio.gather(*writes)
            assert sorted(revisions) == list(range(1, 31))
            await c.converged()
            for n in ALL:
                revision, items = await c[n].range("/")
                assert revision == 30 and len(items) == 30
                assert await c[n].get("/n2/k9") == await c[1].get("/n2/k9")

    run(scenario)


def test_watchers_on_every_node_see_every_change_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            watches = {n: c[n].watch("/cfg") for n in ALL}
            await c[1].put("/cfg/a", "1")
            await c[2].txn([], [Put("/cfg/b", b"2"), Put("/other", b"x"), Put("/cfg/c", b"3")])
            await c[3].delete("/cfg/a", expect_revision=1)
            last = await c[1].put("/cfg/b", "4")
            streams = {n: await collect(w, last) for n, w in watches.items()}
            expected = [
                WatchEvent(1, "/cfg/a", b"1"),
                WatchEvent(2, "/cfg/b", b"2"),
                WatchEvent(2, "/cfg/c", b"3"),
                WatchEvent(3, "/cfg/a", None),
                WatchEvent(4, "/cfg/b", b"4"),
            ]
            assert streams == {n: expected for n in ALL}
            replay = c[2].watch("/cfg", after=2)  # from the change log
            assert await collect(replay, last) == expected[3:]

    run(scenario)


def test_a_partitioned_minority_cannot_write_and_catches_up_after_the_heal(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            await c[3].put("/k", "before")
            watch = c[3].watch("/")
            c.partition([[1, 2], [3]])
            await c.until(lambda: c.settled([1, 2]) and c.settled([3]))
            with pytest.raises(UnavailableError, match="not quorate"):
                await c[3].put("/k", "from the minority")
            assert (await c[3].get("/k")).value == b"before"  # type: ignore[union-attr]
            await c[1].put("/k", "from 1")
            last = await c[2].put("/j", "from 2")
            assert (await c[3].get("/k")).value == b"before"  # type: ignore[union-attr]
            c.heal()
            await c.converged()
            assert (await c[3].get("/k")).value == b"from 1"  # type: ignore[union-attr]
            events = await collect(watch, last)  # caught up by a delta: no gap, no reset
            assert [(e.revision, e.key) for e in events] == [(2, "/k"), (3, "/j")]
            assert await c[3].put("/k", "from 3 again") == 4

    run(scenario)


def test_a_crashed_node_restarts_from_its_disk_and_catches_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            for i in range(5):
                await c[1 + i % 3].put(f"/k{i}", str(i))
            await c.converged()
            await c.crash(2)
            await c[1].put("/k0", "changed while 2 was down")
            await c[3].delete("/k1")
            await c.start(2)
            assert c[2].status().revision == 5  # its own copy, loaded from disk
            with pytest.raises(UnavailableError, match="not synced"):
                await c[2].get("/k0")
            await c.converged()
            assert (await c[2].get("/k0")).value == b"changed while 2 was down"  # type: ignore[union-attr]
            assert await c[2].get("/k1") is None

    run(scenario)


def test_a_whole_cluster_restart_loses_no_acknowledged_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        acked: dict[str, tuple[int, bytes]] = {}
        async with cluster(sqlite(tmp_path)) as c:
            for i in range(12):
                key, value = f"/k{i % 5}", f"v{i}".encode()
                acked[key] = (await c[1 + i % 3].put(key, value), value)
            await c.crash(1, 2, 3)
            await c.start(3, 2)  # two of three are a majority: they may go on alone
            await c.converged([2, 3])
            for key, (revision, value) in acked.items():
                item = await c[3].get(key)
                assert item is not None and (item.mod_revision, item.value) == (revision, value)
            await c[2].put("/after", "restart")
            await c.start(1)
            await c.converged()
            assert (await c[1].get("/k4")).value == acked["/k4"][1]  # type: ignore[union-attr]

    run(scenario)


def test_a_component_following_a_subtree_sees_each_new_configuration(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            await c[1].put("/svc/web/port", "80")
            trees = follow(c[3], "/svc/web")
            assert dict(await anext(trees)) == {"/svc/web/port": b"80"}
            await c[2].txn([], [Put("/svc/web/port", b"8080"), Put("/svc/web/tls", b"on")])
            assert dict(await anext(trees)) == {"/svc/web/port": b"8080", "/svc/web/tls": b"on"}
            await c[1].put("/svc/db/port", "5432")  # outside the subtree: nothing
            await c[1].delete("/svc/web/tls")
            assert dict(await anext(trees)) == {"/svc/web/port": b"8080"}
            await trees.aclose()  # type: ignore[attr-defined]

    run(scenario)


def test_a_follower_whose_watch_is_lost_reads_again_and_misses_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = CcrConfig(nodes=3, watch_queue=1)
        async with cluster(sqlite(tmp_path), config) as c:
            trees = follow(c[2], "/svc")
            assert dict(await anext(trees)) == {}
            await c[1].txn([], [Put("/svc/a", b"1"), Put("/svc/b", b"2")])  # 2 events > 1
            assert dict(await anext(trees)) == {"/svc/a": b"1", "/svc/b": b"2"}
            await c[1].put("/svc/a", "3")
            assert dict(await anext(trees)) == {"/svc/a": b"3", "/svc/b": b"2"}
            await trees.aclose()  # type: ignore[attr-defined]

    run(scenario)


def test_a_service_opened_as_a_context_raises_errors_of_its_block_unwrapped() -> None:
    async def scenario() -> None:
        bus = LocalBus()
        with pytest.raises(KeyError):
            async with CcrService.open(bus.join(1), MemoryStore(), ManualQuorum(), CcrConfig(1)):
                raise KeyError("from the block")

    run(scenario)


def test_a_watcher_that_falls_behind_gets_an_error_not_a_gap(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = CcrConfig(nodes=3, watch_queue=3)
        async with cluster(sqlite(tmp_path), config) as c:
            watch = c[2].watch("/")
            for i in range(5):
                last = await c[1].put(f"/k{i}", "v")
            await c.until(lambda: c[2].status().commit_revision == last)
            got = [await anext(watch) for _ in range(3)]
            assert [e.revision for e in got] == [1, 2, 3]
            with pytest.raises(WatchLostError, match="fell more than 3 events behind"):
                await anext(watch)
            with pytest.raises(WatchLostError, match="no longer in the change log"):
                CcrService.watch(c[2], "/", after=-1)

    run(scenario)


def test_a_lone_node_of_three_serves_no_reads_and_takes_no_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path), start=False) as c:
            await c.start(1)
            await c.until(lambda: c.settled([1]))
            with pytest.raises(UnavailableError, match="not synced"):
                await c[1].get("/k")
            with pytest.raises(UnavailableError, match="not quorate"):
                await c[1].put("/k", "v")
            await c.start(2)
            await c.until(lambda: c[1].status().writable)
            assert await c[2].put("/k", "v") == 1

    run(scenario)


def test_compares_on_revision_and_a_minority_that_thinks_it_is_quorate(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            first = await c[1].put("/k", "1", expect_revision=0)
            with pytest.raises(ConflictError, match="expected mod_revision 0, found 1"):
                await c[2].put("/k", "2", expect_revision=0)
            assert await c[2].txn([Compare("/k", first)], [Delete("/k")]) == 2
            c.partition([[1, 2], [3]], stale_quorum=True)  # node 3's votequorum lags
            assert c.nodes[3].quorum.quorate()
            with pytest.raises(UnavailableError, match="not quorate"):
                await c[3].put("/k", "3")  # refused as soon as its round ends, or at once
            await c.until(lambda: c.settled([3]))
            assert not c[3].status().writable

    run(scenario)


def test_a_write_without_an_outcome_in_time_is_reported_as_unknown(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path)) as c:
            c.nodes[1].task.cancel()  # the sequencer stops answering, still in the group
            with pytest.raises(OutcomeUnknownError, match=r"no outcome within 0\.05 s"):
                await c[2].put("/k", "v", timeout=0.05)

    run(scenario)


def test_two_node_survivor_writes_alone_once_its_peer_is_fenced_and_resyncs_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with cluster(sqlite(tmp_path), CcrConfig(nodes=2), start=False) as c:
            await c.start(1, 2)
            await c.until(lambda: all(c[n].status().writable for n in (1, 2)))
            before = await c[2].put("/two/before", "on both disks")
            watch = c[1].watch("/two", after=before)
            await c.crash(2)  # the split: node 2 is off (fenced)
            c.nodes[1].quorum.set(True)  # votequorum's two_node: the survivor stays quorate
            await c.until(lambda: c.settled([1]))
            with pytest.raises(UnavailableError, match="not quorate"):
                await c[1].put("/two/alone", "x")  # no fencing confirmed yet
            await c[1].peer_fenced(2)
            await c.until(lambda: c[1].status().writable)
            alone = await c[1].put("/two/alone", "x")
            assert [(e.revision, e.key) for e in await collect(watch, alone)] == [
                (alone, "/two/alone")
            ]
            await c.start(2)  # rebooted from its disk: it syncs from the survivor
            await c.until(lambda: all(c[n].status().writable for n in (1, 2)))
            await c.converged((1, 2))
            assert (await c[2].get("/two/alone")) == Item("/two/alone", b"x", alone)
            assert (await c[2].get("/two/before")) == Item("/two/before", b"on both disks", before)
            watch.close()

    run(scenario)


# -- randomized ------------------------------------------------------------------------------

KEYS = [f"/r/k{i}" for i in range(4)]
SEQUENCER_MORE_OFTEN = st.sampled_from([1, 1, 2, 3])  # node 1 orders whenever it is up
WRITE = st.tuples(st.just("write"), st.sampled_from(ALL), st.sampled_from(KEYS), st.integers(1, 4))
STEP = st.one_of(
    WRITE,
    WRITE,
    WRITE,
    st.tuples(st.just("partition"), SEQUENCER_MORE_OFTEN, st.booleans(), st.booleans()),
    st.tuples(st.just("heal")),
    st.tuples(st.just("crash"), SEQUENCER_MORE_OFTEN, st.booleans()),
    st.tuples(st.just("restart"), st.sampled_from(ALL)),
    st.tuples(st.just("settle")),
)


@dataclass
class Stream:
    node: int
    start: int
    batches: list[tuple[WatchEvent, ...]] = field(default_factory=list)
    lost: bool = False


async def _watch_forever(c: Cluster, n: int, service: CcrService, out: list[Stream]) -> None:
    """Watch "/" on ``service``; after a WatchLostError start again (a new stream)."""
    with contextlib.suppress(UnavailableError):
        await service.wait_ready(timeout=60)
        while True:
            watch = service.watch("/")
            stream = Stream(n, watch.start_revision)
            out.append(stream)
            try:
                while True:
                    stream.batches.append(await watch.next_batch())
            except WatchLostError:
                stream.lost = True


async def _random_run(steps: list[tuple[Any, ...]], seed: int) -> None:
    rng = random.Random(seed)
    stores = {n: MemoryStore(log_limit=10_000) for n in ALL}
    acked: list[tuple[str, bytes, int]] = []
    streams: list[Stream] = []
    writes: list[asyncio.Task[None]] = []
    async with cluster(lambda n: stores[n], CcrConfig(nodes=3, log_limit=10_000)) as c:
        watchers = [c.tg.create_task(_watch_forever(c, n, c[n], streams)) for n in ALL]

        async def write(service: CcrService, key: str, value: bytes) -> None:
            with contextlib.suppress(UnavailableError, ConflictError):
                acked.append((key, value, await service.put(key, value, timeout=30)))

        for i, step in enumerate(steps):
            kind = step[0]
            if kind == "write" and step[1] in c.nodes:
                for j in range(step[3]):
                    value = f"{i}.{j}".encode()
                    writes.append(c.tg.create_task(write(c[step[1]], step[2], value)))
            elif kind == "partition":
                alone = step[1]
                if step[3] and alone in c.nodes:
                    c.lose_last_messages_of(alone)
                c.partition([[n for n in ALL if n != alone], [alone]], stale_quorum=bool(step[2]))
            elif kind == "heal":
                c.heal()
            elif kind == "crash" and step[1] in c.nodes:
                if step[2]:
                    c.lose_last_messages_of(step[1])
                await c.crash(step[1])
            elif kind == "restart" and step[1] not in c.nodes:
                await c.start(step[1])
                watchers.append(c.tg.create_task(_watch_forever(c, step[1], c[step[1]], streams)))
            elif kind == "settle":
                await c.until(c.all_sides_settled)
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)  # not a wait: lets a random number of events through

        c.heal()
        for n in ALL:
            if n not in c.nodes:
                await c.start(n)
                watchers.append(c.tg.create_task(_watch_forever(c, n, c[n], streams)))
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*writes)
        await c.until(lambda: all(c[n].status().writable for n in ALL))
        await c.converged()
        history = _history(c)
        _check_acked(c, acked, history)
        _check_streams(streams, history)
        for w in watchers:
            w.cancel()


def _history(c: Cluster) -> dict[int, Entry]:
    """Every committed entry any node still has in its log (they must agree)."""
    history: dict[int, Entry] = {}
    for n in ALL:
        state = c.nodes[n].replica.state
        for revision in range(state.base.revision + 1, state.revision + 1):
            entry = state.entry_at(revision)
            assert entry is not None
            assert history.setdefault(revision, entry) == entry, f"logs differ at {revision}"
    return history


def _check_acked(
    c: Cluster, acked: list[tuple[str, bytes, int]], history: dict[int, Entry]
) -> None:
    state = c.nodes[1].replica.state
    for key, value, revision in acked:
        if revision in history:
            assert (key, value) in [(ch.key, ch.value) for ch in history[revision].changes]
    for key in KEYS:
        mine = [(r, v) for k, v, r in acked if k == key]
        if not mine:
            continue
        last_revision, last_value = max(mine)
        item = state.get(key)
        latest = 0 if item is None else item.mod_revision
        assert latest >= last_revision, f"acknowledged write of {key} at {last_revision} lost"
        if latest == last_revision:
            assert item is not None and item.value == last_value


def _check_streams(streams: list[Stream], history: dict[int, Entry]) -> None:
    for stream in streams:
        previous = stream.start
        for batch in stream.batches:
            revision = batch[0].revision
            assert revision > previous and {e.revision for e in batch} == {revision}
            if revision in history:
                expected = tuple(
                    WatchEvent(revision, ch.key, ch.value) for ch in history[revision].changes
                )
                assert batch == expected, f"node {stream.node} saw {batch}, not {expected}"
            skipped = [r for r in range(previous + 1, revision) if r in history]
            assert all(not history[r].changes for r in skipped), f"node {stream.node}: gap"
            previous = revision


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(STEP, min_size=20, max_size=60), st.integers(0, 2**32))
def test_random_writes_partitions_crashes_and_restarts_lose_no_acknowledged_write(
    steps: list[tuple[Any, ...]], seed: int
) -> None:
    asyncio.run(_random_run(steps, seed))
