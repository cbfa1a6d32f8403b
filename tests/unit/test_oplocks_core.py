"""COpCo's pure core: leases on sub-trees of the containment tree, and what each operator
command locks."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.copco import leases as core
from haos.cluster.copco.leases import MAINTENANCE, Granted, Lease, Lost, Owner, Refused
from haos.cluster.copco.scope import changed_by
from haos.cluster.crim.state import ComponentRuntime, CrimState, initial_state
from haos.cluster.crim.topology import Topology
from haos.config.loader import load_config
from haos.errors import UsageError
from haos.model.states import AvailabilityState

A = Owner("n1", "maintenance-1")
B = Owner("n2", "intent-7")
NOW = 1000.0


def lease_of(name: str, owner: Owner = A, kind: str = MAINTENANCE, ttl: float = 60.0) -> Lease:
    return core.lease(name, owner, kind, f"why {name}", NOW, ttl)


# --- sub-trees ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outer", "inner", "contains"),
    [
        ("shelf1", "shelf1", True),
        ("shelf1", "shelf1/slot1", True),
        ("shelf1", "shelf1/slot1/node/app", True),
        ("shelf1/slot1", "shelf1/slot10", False),
        ("shelf1/slot1", "shelf1", False),
        ("shelf1/slot1", "shelf1/slot2", False),
        ("shelf1", "shelf10/slot1", False),
    ],
)
def test_a_subtree_contains_itself_and_what_is_below_it_only(
    outer: str, inner: str, contains: bool
) -> None:
    assert core.contains(outer, inner) is contains
    assert core.overlap(outer, inner) is (contains or core.contains(inner, outer))


@pytest.mark.parametrize("bad", ["", "/", "a//b", "a/../b", "./a", "a b", "a/\tb", None, 3])
def test_a_bad_subtree_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(UsageError, match="sub-tree"):
        core.subtree(bad)


def test_a_subtree_loses_its_outer_slashes() -> None:
    assert core.subtree("/shelf1/slot2/") == "shelf1/slot2"


def test_a_lease_needs_a_positive_time_a_kind_and_an_owner() -> None:
    with pytest.raises(UsageError, match="positive time"):
        core.lease("shelf1", A, MAINTENANCE, "x", NOW, 0.0)
    with pytest.raises(UsageError, match="kind"):
        core.lease("shelf1", A, "", "x", NOW, 1.0)
    with pytest.raises(UsageError, match="owner's node"):
        core.lease("shelf1", Owner("", "op"), MAINTENANCE, "x", NOW, 1.0)
    with pytest.raises(UsageError, match="reason"):
        core.lease("shelf1", A, MAINTENANCE, "x" * 600, NOW, 1.0)


# --- acquire ----------------------------------------------------------------------------------


def test_a_free_subtree_is_granted() -> None:
    want = lease_of("shelf1/slot1", B, "switchover")
    assert core.acquire([lease_of("shelf1/slot2")], [want], NOW) == Granted((want,), ())


@pytest.mark.parametrize("wanted", ["shelf1", "shelf1/slot1", "shelf1/slot1/node/counter"])
def test_an_overlapping_live_lease_of_another_owner_refuses_naming_holder_reason_and_expiry(
    wanted: str,
) -> None:
    held = lease_of("shelf1/slot1")
    decision = core.acquire([held], [lease_of(wanted, B, "switchover")], NOW + 1)
    assert decision == Refused(held, wanted)
    assert isinstance(decision, Refused)
    text = decision.reason
    assert "locked by n1" in text and "maintenance-1" in text and "why shelf1/slot1" in text
    assert "expires at" in text and text.startswith(f"{wanted}: shelf1/slot1")


def test_one_owner_may_lock_a_subtree_and_a_part_of_it() -> None:
    wants = [lease_of("shelf1/slot1/node", B), lease_of("shelf1/slot1/node/app", B)]
    assert isinstance(core.acquire([lease_of("shelf1/slot1", B)], wants, NOW), Granted)


def test_an_expired_lease_in_the_way_is_passed_over_and_cleaned_in_the_same_write() -> None:
    old = lease_of("shelf1", ttl=5.0)
    want = lease_of("shelf1/slot2", B)
    assert core.acquire([old], [want], NOW + 5.0) == Granted((want,), (old,))
    assert isinstance(core.acquire([old], [want], NOW + 4.9), Refused)


def test_several_subtrees_are_granted_all_or_none() -> None:
    wants = [lease_of("shelf1/slot2", B), lease_of("shelf1/slot1/node", B)]
    decision = core.acquire([lease_of("shelf1/slot1")], wants, NOW)
    assert isinstance(decision, Refused) and decision.wanted == "shelf1/slot1/node"


def test_one_acquisition_is_of_one_owner() -> None:
    with pytest.raises(UsageError):
        core.acquire([], [lease_of("a", A), lease_of("b", B)], NOW)


# --- renew, release, break, drop ------------------------------------------------------------


def test_a_held_lease_is_renewed_from_its_stored_form() -> None:
    mine = lease_of("shelf1")
    renewed = core.renew([mine], mine, NOW + 90, NOW + 30)
    assert renewed == replace(mine, expires=NOW + 90)


@pytest.mark.parametrize(
    ("held", "words"),
    [
        ([], "no longer held"),
        ([lease_of("shelf1", B)], "no longer held"),
        ([lease_of("shelf1", ttl=10.0)], "expired"),
    ],
)
def test_a_lease_released_taken_or_expired_is_not_renewed(held: list[Lease], words: str) -> None:
    decision = core.renew(held, lease_of("shelf1"), NOW + 90, NOW + 10)
    assert isinstance(decision, Lost) and words in decision.reason


def test_only_its_owner_releases_a_lease() -> None:
    mine = lease_of("shelf1")
    assert core.release([mine], mine) == mine
    assert core.release([mine], lease_of("shelf1", B)) is None


def test_an_operator_releases_a_maintenance_lock_but_must_break_an_operations() -> None:
    maintenance, running = lease_of("shelf1/slot1"), lease_of("shelf1/slot2", B, "switchover")
    assert core.release_maintenance([maintenance, running], "shelf1/slot1", NOW) == maintenance
    with pytest.raises(UsageError, match=r"not a maintenance lock.*'break'"):
        core.release_maintenance([maintenance, running], "shelf1/slot2", NOW)
    with pytest.raises(UsageError, match=r"no lock is held on shelf1 .*shelf1/slot1"):
        core.release_maintenance([maintenance], "shelf1", NOW)
    with pytest.raises(UsageError, match="no lock is held"):
        core.release_maintenance([maintenance], "shelf1/slot1", NOW + 3600)  # expired


def test_break_takes_any_lease_on_exactly_that_subtree() -> None:
    running = lease_of("shelf1/slot2", B, "switchover")
    assert core.break_lock([running], "shelf1/slot2/") == running
    with pytest.raises(UsageError, match="no lock is held on shelf1/slot2/node"):
        core.break_lock([running], "shelf1/slot2/node")


def test_the_leases_of_a_node_that_left_and_the_expired_ones_are_named() -> None:
    a1, a2, b1 = lease_of("x"), lease_of("y", ttl=1.0), lease_of("z", B)
    assert core.of_node([a1, a2, b1], "n1") == (a1, a2)
    assert core.expired([a1, a2, b1], NOW + 1.0) == (a2,)
    assert core.live([b1, a2, a1], NOW + 1.0) == (a1, b1)


def test_a_stored_lease_reads_back_and_garbage_is_refused() -> None:
    mine = lease_of("shelf1/slot1/node")
    assert core.decode(mine.encode()) == mine
    for raw in (b"{", b"[]", b'{"subtree": "a"}', mine.encode().replace(b"shelf1", b"a b")):
        with pytest.raises(UsageError):
            core.decode(raw)


# --- the safety invariant, over any sequence of decisions -------------------------------------

SUBTREES = st.sampled_from(
    ["shelf1", "shelf1/slot1", "shelf1/slot1/node", "shelf1/slot2", "shelf2", "shelf2/slot1"]
)
OWNERS = st.sampled_from([A, B, Owner("n3", "upgrade-1"), Owner("n1", "intent-2")])
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "renew", "release", "break", "left", "time"]),
        OWNERS,
        st.lists(SUBTREES, min_size=1, max_size=3),
        st.floats(0.5, 40.0),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_no_two_owners_ever_hold_overlapping_subtrees(
    steps: list[tuple[str, Owner, list[str], float]],
) -> None:
    held: dict[str, Lease] = {}
    now = NOW
    for verb, owner, names, amount in steps:
        if verb == "time":
            now += amount
        elif verb == "acquire":
            wants = [core.lease(n, owner, "op", "r", now, amount) for n in names]
            decision = core.acquire(held.values(), wants, now)
            if isinstance(decision, Granted):
                for c in decision.clean:
                    del held[c.subtree]
                held.update({w.subtree: w for w in decision.leases})
        elif verb == "renew":
            mine = held.get(names[0])
            if mine is not None:
                stale = replace(mine, owner=owner)
                renewed = core.renew(held.values(), stale, now + amount, now)
                assert isinstance(renewed, Lost) is (owner != mine.owner or not mine.live(now))
                if not isinstance(renewed, Lost):
                    held[renewed.subtree] = renewed
        elif verb == "release" and names[0] in held:
            found = core.release(held.values(), replace(held[names[0]], owner=owner))
            if found is not None:
                del held[found.subtree]
        elif verb == "break" and names[0] in held:
            del held[core.break_lock(held.values(), names[0]).subtree]
        elif verb == "left":
            for gone in core.of_node(held.values(), owner.node):
                del held[gone.subtree]
        holding = core.live(held.values(), now)
        for i, x in enumerate(holding):
            for y in holding[i + 1 :]:
                assert x.owner == y.owner or not core.overlap(x.subtree, y.subtree), (x, y)


# --- what an operator command locks ---------------------------------------------------------


@pytest.fixture(scope="module")
def topo() -> Topology:
    path = resources.files("haos") / "examples" / "small-2n.toml"
    with resources.as_file(path) as p:
        return Topology(load_config(p))


def serving(topo: Topology, primary: str, secondary: str) -> CrimState:
    state = initial_state(topo)
    comps = dict(state.components)
    comps[primary] = ComponentRuntime(AvailabilityState.PRIMARY, instances=frozenset({"demo-si"}))
    comps[secondary] = ComponentRuntime(
        AvailabilityState.SECONDARY, instances=frozenset({"demo-si"})
    )
    return replace(state, components=MappingProxyType(comps))


P, S, SPARE = "shelf1/slot1/node/demo", "shelf1/slot2/node/demo", "shelf1/slot3/node/demo"


def test_a_command_locks_what_it_changes(topo: Topology) -> None:
    state = serving(topo, P, S)
    assert changed_by(topo, state, "lock", "n2") == ("shelf1/slot2/node",)
    assert changed_by(topo, state, "lock", "demo") == (P, S, SPARE)
    assert changed_by(topo, state, "switchover", "demo-si") == (P, S)
    assert changed_by(topo, None, "switchover", "demo-si") == (P, S, SPARE)
    assert changed_by(topo, state, "switchover", P) == (P, S)
    assert changed_by(topo, state, "offline", SPARE) == (SPARE,)
    assert changed_by(topo, state, "switchover", "no-such-thing") == ()


def test_a_maintenance_lock_on_a_slot_holds_off_a_switchover_of_its_primary(topo: Topology) -> None:
    slot = lease_of("shelf1/slot1")
    wants = [
        core.lease(s, B, "switchover", "r", NOW, 30.0)
        for s in changed_by(topo, serving(topo, P, S), "switchover", "demo-si")
    ]
    assert isinstance(core.acquire([slot], wants, NOW), Refused)
    wants = [
        core.lease(s, B, "switchover", "r", NOW, 30.0)
        for s in changed_by(topo, serving(topo, S, SPARE), "switchover", "demo-si")
    ]
    assert isinstance(core.acquire([slot], wants, NOW), Granted)
