"""The state-transfer bookkeeping (pure), driven by a small simulated agreed-order group.

Each simulated member keeps a list of applied operations as its state. Offers go through the
same ordered stream as everything else and may be overtaken by later membership changes, as
on CPG; a member that dies loses what it had not yet sent (virtual synchrony)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from haos.cluster.dss.messaging.statesync import Offer, Outcome, SyncTracker


@dataclass
class Member:
    tracker: SyncTracker[str]
    state: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass
class Sim:
    members: dict[int, Member] = field(default_factory=dict)
    outbox: list[tuple[int, Offer, list[str]]] = field(default_factory=list)

    def view(self, members: list[int], joined: list[int] = (), left: list[int] = ()) -> None:  # type: ignore[assignment]
        for n in joined:
            self.members.setdefault(n, Member(SyncTracker(n)))
        for n in left:
            self.members.pop(n, None)
            self.outbox = [o for o in self.outbox if o[0] != n]  # never sent
        for n in members:
            m = self.members[n]
            self._step(n, m, m.tracker.membership(members, joined, left))

    def op(self, value: str) -> None:
        for m in self.members.values():
            if m.tracker.deliver(value):
                m.state.append(value)

    def flush(self, count: int | None = None) -> None:
        """Deliver the first ``count`` queued offers (all by default)."""
        todo, self.outbox = self.outbox[:count], self.outbox[len(self.outbox[:count]) :]
        for sender, offer, snapshot in todo:
            for n, m in list(self.members.items()):
                step = m.tracker.on_offer(sender, offer)
                if step.outcome is Outcome.INSTALL:
                    m.state = list(snapshot)
                elif step.outcome is Outcome.MERGE:
                    m.state = sorted(set(m.state) | set(snapshot))
                self._step(n, m, step)

    def _step(self, n: int, m: Member, step: object) -> None:
        assert hasattr(step, "outcome")
        m.outcomes.append(step.outcome)
        m.state.extend(step.replay)  # type: ignore[attr-defined]
        if step.offer is not None:  # type: ignore[attr-defined]
            self.outbox.append((n, step.offer, list(m.state)))  # type: ignore[attr-defined]

    def states(self) -> dict[int, list[str]]:
        return {n: m.state for n, m in self.members.items()}

    def all_in_sync(self) -> bool:
        return all(m.tracker.in_sync for m in self.members.values())


def test_the_first_member_founds_and_a_joiner_installs_and_replays_what_came_after() -> None:
    sim = Sim()
    sim.view([1], joined=[1])
    sim.op("a1")
    sim.view([1, 2], joined=[2])
    sim.op("a2")  # ordered after the join, before the offer: the joiner must replay it
    assert not sim.members[2].tracker.in_sync
    sim.flush()
    sim.op("a3")
    assert sim.states() == {1: ["a1", "a2", "a3"], 2: ["a1", "a2", "a3"]}
    assert Outcome.INSTALL in sim.members[2].outcomes


def test_when_the_sender_dies_before_its_offer_the_next_member_offers() -> None:
    sim = Sim()
    sim.view([1], joined=[1])
    sim.view([1, 2], joined=[2])
    sim.flush()
    sim.op("x")
    sim.view([1, 2, 3], joined=[3])
    assert [o[0] for o in sim.outbox] == [1]
    sim.op("y")
    sim.view([2, 3], left=[1])  # 1 dies; its offer was never sent
    assert [o[0] for o in sim.outbox] == [2]
    sim.op("z")
    sim.flush()
    assert sim.all_in_sync()
    assert sim.states() == {2: ["x", "y", "z"], 3: ["x", "y", "z"]}


def test_a_late_second_offer_is_ignored_by_the_member_the_first_one_synced() -> None:
    sim = Sim()
    sim.view([1], joined=[1])
    sim.op("a")
    sim.view([1, 2], joined=[2])
    sim.op("b")
    sim.view([1, 2, 3], joined=[3])  # before the first offer: 1 offers again, to 2 and 3
    assert len(sim.outbox) == 2
    sim.op("c")
    sim.flush()
    sim.op("d")
    assert sim.states() == {n: ["a", "b", "c", "d"] for n in (1, 2, 3)}
    assert Outcome.MERGE not in sim.members[2].outcomes


def test_a_joiner_founds_when_every_member_holding_the_state_died() -> None:
    sim = Sim()
    sim.view([1], joined=[1])
    sim.op("lost")
    sim.view([1, 2], joined=[2])
    sim.op("kept")
    sim.view([2], left=[1])
    assert sim.members[2].tracker.in_sync
    assert sim.members[2].outcomes[-1] is Outcome.FOUND
    assert sim.states() == {2: ["kept"]}


def test_after_a_partition_heals_both_sides_merge_the_other_sides_state() -> None:
    sim = Sim()
    sim.view([1], joined=[1])
    sim.view([1, 2], joined=[2])
    sim.view([1, 2, 3], joined=[3])
    sim.flush()
    sim.op("common")
    # Split: {1, 2} and {3}. Simulate each side's stream separately, then the heal.
    left_side, right_side = Sim(), Sim()
    left_side.members = {n: sim.members[n] for n in (1, 2)}
    right_side.members = {3: sim.members[3]}
    left_side.view([1, 2], left=[3])
    right_side.view([3], left=[1, 2])
    left_side.op("left only")
    right_side.op("right only")
    healed = Sim({**left_side.members, **right_side.members})
    for n in (1, 2):
        m = healed.members[n]
        healed._step(n, m, m.tracker.membership([1, 2, 3], [3], []))
    m3 = healed.members[3]
    healed._step(3, m3, m3.tracker.membership([1, 2, 3], [1, 2], []))
    assert sorted(o[0] for o in healed.outbox) == [1, 3]  # each side's lowest offers
    healed.flush()
    expected = ["common", "left only", "right only"]
    assert {n: sorted(s) for n, s in healed.states().items()} == {n: expected for n in (1, 2, 3)}
    assert all(Outcome.MERGE in m.outcomes for m in healed.members.values())


@pytest.mark.parametrize("marks", [5, 99])
def test_an_offer_that_cannot_be_placed_in_the_history_is_rejected(marks: int) -> None:
    tracker: SyncTracker[str] = SyncTracker(2)
    tracker.membership([1, 2], joined=[2])
    step = tracker.on_offer(1, Offer(((2, marks),), (1,)))
    assert step.outcome is Outcome.REJECT and not tracker.in_sync
