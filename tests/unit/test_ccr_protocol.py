"""The CCR replication state machine, pure: replicas on a LocalBus pumped by hand.

No event loop and no service: :class:`Sim` hands each replica its next transport event, one
at a time in an order the test chooses, and carries out the actions (multicast through the
bus, store writes on MemoryStores). Every test ends by checking the copies agree.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

import pytest

from haos.cluster.dss.ccr.actions import (
    Action,
    CcrConfig,
    Install,
    Persist,
    Phase,
    Promise,
    Release,
    Reset,
    Resolve,
    Send,
)
from haos.cluster.dss.ccr.errors import OutcomeUnknownError
from haos.cluster.dss.ccr.model import (
    MAX_TXN_BYTES,
    Change,
    Compare,
    Entry,
    Item,
    Op,
    Put,
    RequestId,
    Version,
)
from haos.cluster.dss.ccr.protocol import Replica
from haos.cluster.dss.ccr.store import MemoryStore
from haos.cluster.dss.ccr.wire import Applied, Data, Nonce, Order, Sync, Txn, encode_message
from haos.cluster.dss.transport import Message, View
from haos.errors import ConflictError, UnavailableError
from haoslab.testing.bus import LocalBus, LocalEndpoint

ALL = (1, 2, 3)


class Sim:
    """Replicas over one LocalBus; see the module docstring."""

    def __init__(self, nodes: int = 3, **config: int) -> None:
        self.config = CcrConfig(nodes=nodes, **config)
        self.bus = LocalBus()
        self.stores = {n: MemoryStore() for n in range(1, nodes + 1)}
        self.replicas: dict[int, Replica] = {}
        self.endpoints: dict[int, LocalEndpoint] = {}
        self.actions: dict[int, list[Action]] = defaultdict(list)
        self.outcomes: dict[RequestId, Resolve] = {}
        self.released: dict[int, list[Entry]] = defaultdict(list)
        self._incarnations = itertools.count(1)
        self.garble_next_data = False

    def start(self, *nodes: int, quorate: bool = True) -> None:
        for n in nodes:
            self.replicas[n] = Replica(
                n,
                self.config,
                self.stores[n].load(),
                incarnation=next(self._incarnations),
                quorate=quorate,
            )
            self.endpoints[n] = self.bus.join(n)

    def crash(self, *nodes: int) -> None:
        for n in nodes:
            self.bus.crash(n)
            del self.replicas[n], self.endpoints[n]

    def step(self, n: int) -> bool:
        """Hand node ``n`` its next event; False if it had none."""
        queue = self.endpoints[n].queue
        if queue.empty():
            return False
        event = queue.get_nowait()
        assert event is not None
        replica = self.replicas[n]
        if isinstance(event, View):
            self.execute(n, replica.on_view(event))
        else:
            assert isinstance(event, Message)
            self.execute(n, replica.on_message(event.sender, event.payload))
        return True

    def lose(self, n: int, sender: int) -> None:
        """Drop every message from ``sender`` still queued for ``n``: lost with its sender.

        (CPG's agreed order can deliver a message to its sender and to no one else when the
        sender fails before others received it; the bus never loses anything by itself.)
        """
        queue = self.endpoints[n].queue
        kept = [queue.get_nowait() for _ in range(queue.qsize())]
        for event in kept:
            if not (isinstance(event, Message) and event.sender == sender):
                queue.put_nowait(event)

    def settle(self, nodes: Iterable[int] | None = None, limit: int = 100_000) -> None:
        """Round-robin over ``nodes`` (default: all) until no event is left."""
        chosen = sorted(self.replicas if nodes is None else nodes)
        for _ in range(limit):
            if not any([self.step(n) for n in chosen]):
                return
        raise AssertionError("the replicas did not settle")

    def execute(self, n: int, actions: Sequence[Action]) -> None:
        for a in actions:
            self.actions[n].append(a)
            if isinstance(a, Send):
                payload = a.payload
                if self.garble_next_data and isinstance(a.message, Data):
                    self.garble_next_data = False
                    payload = encode_message(replace(a.message, chunk=a.message.chunk[:-1]))
                self.bus.deliver(n, payload)
            elif isinstance(a, Persist):
                self.stores[n].append(a.entries)
            elif isinstance(a, Install):
                self.stores[n].install(a.image)
            elif isinstance(a, Promise):
                self.stores[n].promise(a.epoch)
            elif isinstance(a, Resolve):
                self.outcomes[a.request] = a
            elif isinstance(a, Release):
                self.released[n].extend(a.entries)

    def write(self, n: int, ops: Sequence[Op], compares: Sequence[Compare] = ()) -> RequestId:
        request, actions = self.replicas[n].request(compares, ops)
        self.execute(n, actions)
        return request

    def quorum(self, n: int, quorate: bool) -> None:
        self.execute(n, self.replicas[n].on_quorum(quorate))

    def of(self, n: int, kind: type[Action]) -> list[Action]:
        return [a for a in self.actions[n] if isinstance(a, kind)]

    def assert_converged(self, nodes: Iterable[int] | None = None) -> None:
        chosen = sorted(self.replicas if nodes is None else nodes)
        hashes = {self.replicas[n].state.hash() for n in chosen}
        stored = {self.stores[n].hash() for n in chosen}
        assert len(hashes) == 1 and stored == hashes, "copies differ"
        assert len({self.replicas[n].state.version for n in chosen}) == 1


def running(nodes: int = 3, **config: int) -> Sim:
    sim = Sim(nodes, **config)
    sim.start(*range(1, nodes + 1))
    sim.settle()
    assert all(r.writable for r in sim.replicas.values())
    return sim


def preload(store: MemoryStore, epoch: int, *values: tuple[str, bytes]) -> None:
    base = store.load().image.version.revision
    store.promise(epoch)
    store.append(
        [
            Entry(base + i + 1, epoch, RequestId(9, 9, base + i + 1), (Change(k, v),))
            for i, (k, v) in enumerate(values)
        ]
    )


# -- writes ----------------------------------------------------------------------------------


def test_of_two_concurrent_creates_of_one_key_exactly_one_wins_everywhere() -> None:
    sim = running()
    first = sim.write(1, [Put("/lock", b"node1")], [Compare("/lock", 0)])
    second = sim.write(3, [Put("/lock", b"node3")], [Compare("/lock", 0)])
    sim.settle()
    assert sim.outcomes[first] == Resolve(first, revision=1)
    conflict = sim.outcomes[second].error
    assert isinstance(conflict, ConflictError)
    assert str(conflict) == "/lock: expected mod_revision 0, found 1"
    assert sim.replicas[2].get("/lock") == Item("/lock", b"node1", 1)
    sim.assert_converged()


def test_a_write_is_acknowledged_only_once_durable_on_a_majority() -> None:
    sim = running()
    request = sim.write(1, [Put("/a", b"1")])
    while sim.step(1):  # node 1, the sequencer, orders its write
        pass
    assert sim.replicas[1].get("/a") is not None  # applied and persisted on the origin ...
    assert sim.stores[1].load().image.version.revision == 1
    assert request not in sim.outcomes  # ... but not yet acknowledged
    assert sim.released[1] == []  # nor shown to watchers
    while sim.step(2):  # node 2 applies the ORDER and multicasts APPLIED
        pass
    sim.settle([1])
    assert sim.outcomes[request] == Resolve(request, revision=1)
    assert [e.revision for e in sim.released[1]] == [1]
    persisted = sim.actions[1].index(sim.of(1, Persist)[-1])
    assert sim.actions[1].index(sim.outcomes[request]) > persisted
    sim.settle()
    sim.assert_converged()


def test_writes_are_ordered_by_the_lowest_member_and_applied_in_its_order() -> None:
    sim = running()
    second = sim.write(3, [Put("/k", b"3")])
    sim.step(2), sim.step(2)  # node 2 delivers the TXN: only the sequencer acts on it
    assert sim.replicas[2].get("/k") is None
    sim.settle()
    assert sim.outcomes[second].revision == 1
    orders = [a for a in sim.of(1, Send) if isinstance(a, Send) and isinstance(a.message, Order)]
    assert len(orders) == 1 and not any(
        isinstance(a, Send) and isinstance(a.message, Order)
        for n in (2, 3)
        for a in sim.of(n, Send)
    )
    sim.assert_converged()


def test_writes_delivered_during_a_sync_are_applied_in_one_order_where_it_ends() -> None:
    sim = running()
    sim.crash(3)  # a view change: the others sync again
    first = sim.write(1, [Put("/k", b"1")])
    second = sim.write(2, [Put("/k", b"2")], [Compare("/k", 0)])
    sim.settle()
    assert sim.outcomes[first].revision == 1
    assert isinstance(sim.outcomes[second].error, ConflictError)
    assert sim.replicas[2].get("/k") == Item("/k", b"1", 1)
    sim.assert_converged()


def test_writes_queued_during_a_sync_are_ordered_in_messages_of_bounded_size() -> None:
    sim = running()
    sim.crash(3)
    requests = [sim.write(2, [Put(f"/big/{i}", bytes(200_000))]) for i in range(5)]
    sim.settle()
    assert [sim.outcomes[r].revision for r in requests] == [1, 2, 3, 4, 5]
    orders = [a.message for a in sim.of(1, Send) if isinstance(a, Send)]
    sizes = [len(encode_message(m)) for m in orders if isinstance(m, Order)]
    assert len(sizes) >= 2 and max(sizes) <= MAX_TXN_BYTES
    sim.assert_converged()


def test_writes_queued_when_the_group_changes_again_have_an_unknown_outcome() -> None:
    sim = running()
    sim.bus.partition([[1, 2], [3]])
    request = sim.write(2, [Put("/k", b"1")])  # queued behind the view change
    sim.step(1), sim.step(1)  # the view, then the write (START is still to come)
    sim.step(2), sim.step(2)  # node 2 saw its TXN delivered in that view
    sim.bus.heal()
    sim.settle()
    assert isinstance(sim.outcomes[request].error, OutcomeUnknownError)
    assert sim.replicas[1].get("/k") is None
    sim.assert_converged()


def test_a_write_made_on_the_sequencer_is_ordered_without_a_txn() -> None:
    sim = running()
    before = len(sim.of(1, Send))
    request = sim.write(1, [Put("/k", b"1")])
    sent = [a.message for a in sim.of(1, Send)[before:] if isinstance(a, Send)]
    assert [type(m) for m in sent] == [Order, Applied]  # no TXN; APPLIED after its append
    assert sim.stores[1].load().image.version.revision == 1
    conflict = sim.write(1, [Put("/k", b"2")], [Compare("/k", 0)])  # answered at once
    assert isinstance(sim.outcomes[conflict].error, ConflictError)
    assert request not in sim.outcomes
    sim.settle()
    assert sim.outcomes[request] == Resolve(request, revision=1)
    assert not any(isinstance(a.message, Txn) for n in ALL for a in sim.of(n, Send))
    sim.assert_converged()


def test_a_follower_does_not_count_the_sequencer_durable_on_its_order() -> None:
    """The ORDER leaves before the sequencer's append: only its APPLIED says it is durable."""
    sim = running()
    request = sim.write(1, [Put("/k", b"1")])
    sim.lose(2, 1), sim.lose(3, 1)  # the ORDER, then the APPLIED: take the APPLIED back out
    sim.bus.deliver(1, encode_message(Order(sim.replicas[1].state.entries_after(0))))
    while sim.step(2):  # node 2 applies the ORDER; its own APPLIED goes out
        pass
    assert sim.released[2] == []  # durable on node 2 alone, as far as node 2 knows
    sim.settle()
    assert sim.outcomes[request] == Resolve(request, revision=1)
    assert all([e.revision for e in sim.released[n]] == [1] for n in ALL)
    sim.assert_converged()


# -- quorum ----------------------------------------------------------------------------------


def test_the_minority_partition_refuses_writes_and_the_majority_accepts_them() -> None:
    sim = running()
    sim.bus.partition([[1, 2], [3]])
    late = sim.write(3, [Put("/from3", b"x")])  # sent before node 3 saw the partition
    sim.settle()
    assert isinstance(sim.outcomes[late].error, UnavailableError)
    assert "not quorate" in str(sim.outcomes[late].error)
    with pytest.raises(UnavailableError, match="not quorate"):
        sim.write(3, [Put("/from3", b"y")])
    accepted = sim.write(2, [Put("/from2", b"z")])
    sim.settle()
    assert sim.outcomes[accepted].revision == 1
    assert sim.replicas[3].writable is False and sim.replicas[3].get("/from3") is None
    assert sim.replicas[3].get("/from2") is None  # the minority still reads its old copy
    sim.bus.heal()
    sim.settle()
    assert sim.replicas[3].get("/from2") == Item("/from2", b"z", 1)
    sim.assert_converged()


def test_a_minority_whose_quorum_source_still_says_quorate_cannot_write() -> None:
    sim = running()
    sim.bus.partition([[1], [2, 3]])  # node 1's votequorum verdict lags: still True
    sim.settle()
    assert sim.replicas[1].quorate and not sim.replicas[1].writable
    with pytest.raises(UnavailableError, match="cannot reach a majority of the 3 nodes"):
        sim.write(1, [Put("/a", b"1")])
    assert sim.replicas[2].writable and sim.replicas[3].writable


def test_writes_wait_for_the_quorum_source_to_say_quorate() -> None:
    sim = Sim()
    sim.start(1, 2, 3, quorate=False)  # e.g. votequorum's wait_for_all after a cold start
    sim.settle()
    assert all(r.synced and not r.writable for r in sim.replicas.values())
    with pytest.raises(UnavailableError, match="not quorate"):
        sim.write(2, [Put("/a", b"1")])
    for n in (1, 2, 3):
        sim.quorum(n, True)
    sim.settle()
    assert all(r.writable for r in sim.replicas.values())
    request = sim.write(2, [Put("/a", b"1")])
    sim.settle()
    assert sim.outcomes[request].revision == 1


def test_a_node_whose_quorum_is_lost_starts_a_round_that_ends_read_only() -> None:
    sim = running()
    for n in (1, 2, 3):
        sim.quorum(n, False)
    sim.settle()
    assert not any(r.writable for r in sim.replicas.values())
    with pytest.raises(UnavailableError, match="not quorate"):
        sim.write(1, [Put("/a", b"1")])


def test_a_write_applied_but_unconfirmed_when_quorum_is_lost_fails_as_unknown() -> None:
    sim = running()
    request = sim.write(1, [Put("/a", b"1")])
    while sim.step(1):  # node 1, the sequencer, applies its write ...
        pass
    sim.lose(2, 1)  # ... which the others never receive
    sim.lose(3, 1)
    sim.bus.partition([[2, 3], [1]])
    sim.settle()
    assert isinstance(sim.outcomes[request].error, OutcomeUnknownError)
    assert sim.replicas[2].get("/a") is None
    b = sim.write(3, [Put("/b", b"2")])
    sim.settle()
    assert sim.outcomes[b].revision == 1  # the majority reuses revision 1, in a newer epoch
    sim.bus.heal()
    sim.settle()
    assert sim.replicas[1].get("/a") is None  # the unconfirmed write is gone
    assert sim.of(1, Install) and sim.of(1, Reset)  # by a snapshot: it was on a dead branch
    sim.assert_converged()


# -- sync ------------------------------------------------------------------------------------


def test_sync_picks_the_copy_with_the_newest_epoch_before_the_highest_revision() -> None:
    sim = Sim()
    preload(sim.stores[1], 1, *[(f"/old/{i}", b"x") for i in range(7)])
    preload(sim.stores[2], 2, ("/new", b"y"))  # newer epoch, lower revision
    sim.start(1, 2, 3)
    sim.settle()
    assert sim.replicas[1].get("/new") == Item("/new", b"y", 1)
    assert sim.replicas[1].range("/old") == (1, ())
    assert sim.of(1, Install)  # node 1's history is not node 2's: a snapshot
    assert not sim.of(3, Install) and sim.of(3, Persist)  # node 3 (empty) lies on it: a delta
    assert all(r.epoch == 3 for r in sim.replicas.values())
    sim.assert_converged()


def test_equal_versions_with_unequal_content_are_repaired_from_the_lowest_node() -> None:
    sim = Sim()
    preload(sim.stores[1], 1, ("/k", b"from node 1"))
    preload(sim.stores[2], 1, ("/k", b"damaged on node 2"))
    sim.start(1, 2, 3)
    sim.settle()
    assert sim.replicas[2].get("/k") == Item("/k", b"from node 1", 1)
    assert sim.of(2, Install)
    sim.assert_converged()


def test_a_joining_node_serves_reads_only_after_it_has_the_clusters_state() -> None:
    sim = running()
    for i in range(5):
        sim.write(1 + i % 2, [Put(f"/k{i}", b"v")])
    sim.settle()
    sim.crash(3)
    sim.settle()
    sim.start(3)
    with pytest.raises(UnavailableError, match="not synced"):
        sim.replicas[3].get("/k0")
    while not sim.replicas[3].synced:
        assert sim.step(3) or sim.step(1) or sim.step(2)
        if not sim.replicas[3].synced:
            with pytest.raises(UnavailableError, match="not synced"):
                sim.replicas[3].range("/")
    assert sim.replicas[3].state.hash() == sim.replicas[1].state.hash()
    assert sim.replicas[3].get("/k4") == sim.replicas[1].get("/k4") is not None
    sim.settle()
    sim.assert_converged()


def test_a_node_started_without_a_majority_does_not_serve_reads() -> None:
    sim = Sim()
    preload(sim.stores[3], 1, ("/k", b"maybe stale"))
    sim.start(3)
    sim.settle()
    assert sim.replicas[3].phase is Phase.NORMAL and not sim.replicas[3].synced
    with pytest.raises(UnavailableError, match="not synced"):
        sim.replicas[3].get("/k")
    sim.start(1)
    sim.settle()
    assert sim.replicas[1].get("/k") == Item("/k", b"maybe stale", 1)


def test_a_large_copy_is_transferred_in_chunks() -> None:
    sim = Sim(chunk_bytes=1024)
    preload(sim.stores[1], 1, *[(f"/big/{i:02}", bytes([i]) * 600) for i in range(20)])
    sim.stores[1].install(sim.stores[1].load().image)  # no log: node 2 needs a snapshot
    sim.start(1, 2)
    sim.settle()
    data = [a for a in sim.of(1, Send) if isinstance(a, Send) and isinstance(a.message, Data)]
    assert len(data) > 10
    assert sim.replicas[2].get("/big/19") == Item("/big/19", bytes([19]) * 600, 20)
    sim.assert_converged()


def test_a_restarted_cluster_resumes_in_a_newer_epoch_with_every_write() -> None:
    sim = running()
    requests = [sim.write(n, [Put(f"/k{n}", b"v")]) for n in (1, 2, 3)]
    sim.settle()
    assert all(sim.outcomes[r].revision for r in requests)
    sim.crash(1, 2, 3)
    sim.start(3, 1)  # two of three come back: a majority
    sim.settle()
    assert sim.replicas[1].writable and sim.replicas[1].epoch == 2
    assert [i.key for i in sim.replicas[3].range("/")[1]] == ["/k1", "/k2", "/k3"]
    sim.assert_converged()


def test_a_write_the_failed_sequencer_never_ordered_has_an_unknown_outcome() -> None:
    sim = running()
    request = sim.write(2, [Put("/k", b"v")])
    sim.step(2)  # node 2 delivers its own TXN: it is with the sequencer now
    sim.crash(1)  # which dies before ordering it
    sim.settle()
    assert isinstance(sim.outcomes[request].error, OutcomeUnknownError)
    assert sim.replicas[2].writable and sim.replicas[2].get("/k") is None
    again = sim.write(2, [Put("/k", b"v")])  # node 2 is the sequencer now
    sim.settle()
    assert sim.outcomes[again].revision == 1
    sim.assert_converged()


def test_a_write_ordered_just_before_the_sequencer_dies_is_acknowledged() -> None:
    sim = running()
    request = sim.write(3, [Put("/k", b"v")])
    while sim.step(1):  # node 1 orders it ...
        pass
    sim.crash(1)  # ... and dies: its ORDER is in the others' queues, ahead of the view change
    sim.settle()
    assert sim.outcomes[request] == Resolve(request, revision=1)
    assert sim.replicas[2].writable and sim.replicas[2].get("/k") == Item("/k", b"v", 1)
    sim.assert_converged()


# -- robustness ------------------------------------------------------------------------------


def test_a_garbled_transfer_is_dropped_and_the_round_run_again() -> None:
    sim = Sim()
    preload(sim.stores[1], 1, ("/k", b"v"))
    sim.garble_next_data = True
    sim.start(1, 2, 3)
    sim.settle()
    assert all(r.drops.counts["broken transfer"] == 1 for n, r in sim.replicas.items() if n > 1)
    assert all(r.writable for r in sim.replicas.values())
    assert sim.replicas[3].get("/k") == Item("/k", b"v", 1)
    sim.assert_converged()


def test_malformed_and_forged_messages_are_dropped_and_counted() -> None:
    sim = running()
    before = {n: Counter(r.drops.counts) for n, r in sim.replicas.items()}
    sim.bus.deliver(2, b"garbage")
    forged = Txn(RequestId(1, 1, 1), (), (Put("/x", b"forged"),))
    sim.bus.deliver(2, encode_message(forged))  # claims to come from node 1
    stale = Sync(Nonce(12345, 1), 0, Version(0, 0), bytes(32), True)  # of no current round
    sim.bus.deliver(3, encode_message(stale))
    sim.settle()
    for n, replica in sim.replicas.items():
        dropped = replica.drops.counts - before[n]
        assert dropped == Counter({"malformed": 1, "forged origin": 1, "stale": 1})
        assert replica.get("/x") is None and replica.writable
    sim.assert_converged()


# -- the two-node rule -----------------------------------------------------------------------


def fence(sim: Sim, n: int, peer: int) -> None:
    """Node ``n`` learns that ``peer`` was confirmed fenced (the CMM's NodeLeft)."""
    sim.execute(n, sim.replicas[n].peer_fenced(peer))


def test_two_node_survivor_writes_alone_once_its_peer_is_confirmed_fenced() -> None:
    sim = running(nodes=2)
    before = [sim.write(n, [Put(f"/before/{n}", b"both")]) for n in (1, 2)]
    sim.settle()
    assert [sim.outcomes[r].revision for r in before] == [1, 2]
    sim.crash(2)  # the split; node 2 is about to be fenced
    sim.settle()
    survivor = sim.replicas[1]
    assert survivor.synced and survivor.quorate and not survivor.writable
    with pytest.raises(UnavailableError, match="cannot reach a majority of the 2 nodes"):
        sim.write(1, [Put("/alone", b"x")])
    fence(sim, 1, 2)
    sim.settle()
    assert survivor.writable and survivor.epoch == 3  # after a read-only round in epoch 2
    alone = sim.write(1, [Put("/alone", b"x")])
    sim.settle()
    assert sim.outcomes[alone] == Resolve(alone, revision=3)  # committed on its disk alone
    assert [e.revision for e in sim.released[1]] == [1, 2, 3]
    sim.start(2)  # the fenced peer reboots from its disk and rejoins
    sim.settle()
    peer = sim.replicas[2]
    assert peer.writable and survivor.writable and survivor.epoch == 4
    assert peer.get("/alone") == Item("/alone", b"x", 3)  # synced from the newer version
    assert [i.key for i in peer.range("/before")[1]] == ["/before/1", "/before/2"]
    assert not sim.of(2, Install)  # node 2's copy lay on the survivor's history: a delta
    sim.assert_converged()
    sim.crash(2)  # the peer is back, so the rule ended: a new split needs a new fencing
    sim.settle()
    assert not survivor.writable
    with pytest.raises(UnavailableError, match="not quorate"):
        sim.write(1, [Put("/again", b"x")])


def test_two_node_fenced_sequencers_unacknowledged_write_loses_to_the_survivors() -> None:
    sim = running(nodes=2)
    acked = sim.write(2, [Put("/k", b"acked")])
    sim.settle()
    assert sim.outcomes[acked].revision == 1
    lost = sim.write(1, [Put("/k", b"only on node 1")])
    while sim.step(1):  # node 1, the sequencer, orders and persists it ...
        pass
    sim.lose(2, 1)  # ... but node 2 never receives it: split, and node 1 is fenced
    sim.crash(1)
    sim.settle()
    assert lost not in sim.outcomes and sim.stores[1].load().log[-1].revision == 2
    fence(sim, 2, 1)
    sim.settle()
    assert sim.replicas[2].writable
    alone = sim.write(2, [Put("/k", b"survivor")], [Compare("/k", 1)])
    sim.settle()
    assert sim.outcomes[alone].revision == 2  # the same revision, in a newer epoch
    sim.start(1)
    sim.settle()
    assert sim.replicas[1].get("/k") == Item("/k", b"survivor", 2)
    assert sim.of(1, Install)  # node 1's revision 2 was on a dead branch: a snapshot
    sim.assert_converged()


def test_two_node_fence_confirmed_before_the_view_change_counts_for_it() -> None:
    sim = running(nodes=2)
    sim.crash(2)  # node 1 has not delivered the view change yet
    sent = len(sim.of(1, Send))
    fence(sim, 1, 2)
    assert len(sim.of(1, Send)) == sent  # no round in the old view: the view change starts one
    sim.settle()
    assert sim.replicas[1].writable
    request = sim.write(1, [Put("/k", b"v")])
    sim.settle()
    assert sim.outcomes[request].revision == 1


def test_two_node_rule_needs_a_node_synced_with_its_peer_since_it_started() -> None:
    sim = Sim(nodes=2)
    preload(sim.stores[1], 1, ("/k", b"maybe stale"))
    sim.start(1)  # a restarted node that never saw its peer: its copy may be the old side
    sim.settle()
    fence(sim, 1, 2)
    sim.settle()
    replica = sim.replicas[1]
    assert not replica.synced and not replica.writable
    with pytest.raises(UnavailableError, match="not synced"):
        replica.get("/k")
    with pytest.raises(UnavailableError, match="not quorate"):
        sim.write(1, [Put("/k", b"x")])


def test_three_nodes_a_fenced_node_never_lowers_the_majority() -> None:
    sim = running(nodes=3)
    sim.crash(2, 3)
    sim.settle()
    assert sim.replicas[1].peer_fenced(2) == [] and sim.replicas[1].peer_fenced(3) == []
    sim.settle()
    assert sim.replicas[1].synced and not sim.replicas[1].writable
    with pytest.raises(UnavailableError, match="cannot reach a majority of the 3 nodes"):
        sim.write(1, [Put("/k", b"x")])
