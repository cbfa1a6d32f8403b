"""The CMM policy: (state, event, now) -> actions, reason. Pure; no fakes needed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from _cmm import ALL, NODES, fences, ok, play, published

from haos.cluster.cmm.model import (
    Action,
    CmmConfig,
    CmmInput,
    Demote,
    Fence,
    MasterChanged,
    NodeState,
    Publish,
    QuorumLost,
    QuorumRegained,
    SelfFence,
    Tick,
    ViceMasterChanged,
    ViewChanged,
)
from haos.cluster.cmm.policy import elect, fencer, majority, next_deadline
from haos.cluster.crim.events import NodeJoined, NodeLeft
from haos.cluster.fencing.types import FenceResult
from haos.config.model import NodeSpec
from haos.errors import ConfigError


def config(local: int = 1, **settings: object) -> CmmConfig:
    return CmmConfig(NODES, local, **settings)  # type: ignore[arg-type]


def of_type(actions: Sequence[Action], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def failed(node: str, why: str = "device unreachable") -> FenceResult:
    return FenceResult(node, "reboot", False, why)


# -- election -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "quorate", "expected"),
    [
        ({1, 2, 3, 4}, True, (2, 3)),  # highest priority; the tie goes to the lower id
        ({1, 3, 4}, True, (3, 1)),
        ({1, 4}, True, (1, 4)),
        ({4}, True, (4, None)),
        ({1, 2, 3, 4}, False, (None, None)),  # no quorum, no master
        (set(), True, (None, None)),
        ({1, 99}, True, (1, None)),  # an unconfigured id is never elected
    ],
)
def test_master_and_vice_master_by_priority_then_lowest_id(
    members: set[int], quorate: bool, expected: tuple[int | None, int | None]
) -> None:
    assert elect(config(), frozenset(members), quorate) == expected


def test_the_first_quorate_view_announces_quorum_joins_and_the_masters() -> None:
    _, (d,) = play(config(), [(0.0, ALL)])
    assert published(d) == [
        QuorumRegained(),
        NodeJoined("node1"),
        NodeJoined("node2"),
        NodeJoined("node3"),
        NodeJoined("node4"),
        MasterChanged(None, 2),
        ViceMasterChanged(None, 3),
    ]
    assert all(isinstance(a, Publish) and a.at == 0.0 for a in d.actions)
    assert "master node2, vice-master node3" in d.reason
    assert d.state.node_states() == dict.fromkeys((1, 2, 3, 4), NodeState.MEMBER)


def test_nodes_not_yet_seen_are_never_seen_and_not_fenced() -> None:
    state, (d,) = play(config(), [(0.0, ViewChanged.of(1, 2, 3))])
    assert state.node_states()[4] is NodeState.NEVER_SEEN
    assert fences(d) == [] and state.pending_fences() == ()


def test_master_killed_vice_master_takes_over_and_a_new_vice_master_is_chosen() -> None:
    cfg = config(local=3)
    state, (_, left) = play(cfg, [(0.0, ALL), (5.0, ViewChanged.of(1, 3, 4))])
    assert published(left) == [MasterChanged(2, 3), ViceMasterChanged(3, 1)]
    assert fences(left) == [("node2", 1)]  # node3 is the new master: it fences node2
    assert state.node_states()[2] is NodeState.LEFT
    assert "node2 left: NodeLeft waits for its fencing" in left.reason


def test_a_higher_priority_node_joining_becomes_master() -> None:
    _, (_, joined) = play(config(), [(0.0, ViewChanged.of(1, 4)), (1.0, ViewChanged.of(1, 2, 4))])
    assert published(joined) == [NodeJoined("node2"), MasterChanged(1, 2), ViceMasterChanged(4, 1)]


# -- quorum ---------------------------------------------------------------------------------


def test_an_inquorate_partition_has_no_master_and_demotes_first() -> None:
    cfg = config(demote_within=2.0)
    state, (_, lost) = play(cfg, [(0.0, ALL), (10.0, ViewChanged.of(1, 4, quorate=False))])
    assert lost.actions[0] == Demote("quorum lost", 12.0)
    assert published(lost) == [QuorumLost(), MasterChanged(2, None), ViceMasterChanged(3, None)]
    assert (state.master, state.vice_master) == (None, None)
    assert fences(lost) == []  # an inquorate side fences nobody ...
    assert state.pending_fences() == ()  # ... and owes no fencing for what it cannot see
    assert "quorum lost: demote by 12" in lost.reason


def test_no_demote_when_a_node_starts_without_quorum() -> None:
    _, (d,) = play(config(), [(0.0, ViewChanged.of(1, quorate=False))])
    assert of_type(d.actions, Demote) == [] and published(d) == [NodeJoined("node1")]


def test_a_view_without_this_node_counts_as_inquorate() -> None:
    state, (_, d) = play(config(), [(0.0, ALL), (1.0, ViewChanged.of(2, 3, 4))])
    assert not state.quorate and state.master is None
    assert of_type(d.actions, Demote) and "this node is not in the view" in d.reason


def test_a_node_still_inquorate_after_self_fence_after_resets_itself_once() -> None:
    cfg = config(demote_within=1.0, self_fence_after=5.0)
    lose = ViewChanged.of(1, quorate=False)
    state, ds = play(
        cfg, [(0.0, ALL), (10.0, lose), (14.9, Tick()), (15.0, Tick()), (16.0, Tick())]
    )
    assert next_deadline(cfg, ds[1].state) == 15.0
    assert of_type(ds[2].actions, SelfFence) == []
    assert ds[3].actions == (SelfFence("inquorate for 5 s (limit 5 s)"),)
    assert ds[4].actions == () and state.self_fenced


def test_regaining_quorum_in_time_cancels_the_self_fence() -> None:
    cfg = config(self_fence_after=5.0)
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ALL),
        (10.0, ViewChanged.of(1, quorate=False)),
        (12.0, ALL),
        (20.0, Tick()),
    ]
    state, ds = play(cfg, steps)
    assert published(ds[2])[0] == QuorumRegained()
    assert all(not of_type(d.actions, SelfFence) for d in ds)
    assert next_deadline(cfg, state) is None


# -- waiting for a peer after start ---------------------------------------------------------

PAIR = (NodeSpec("n1", 1, "c1"), NodeSpec("n2", 2, "c2"))  # two_node: one member is quorate
BOTH = ViewChanged.of(1, 2)
N2_ALONE = ViewChanged.of(2)


def pair(local: int = 2) -> CmmConfig:
    return CmmConfig(PAIR, local)


def test_a_node_booted_alone_is_not_master_of_itself_when_quorum_comes_before_the_peer() -> None:
    # The fenced node reboots alone (wait_for_all: inquorate); at the heal votequorum says
    # quorate before the CMM group's view shows the peer: a view of itself alone, "quorate".
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ViewChanged.of(2, quorate=False)),
        (4.0, N2_ALONE),
        (4.0, BOTH),
    ]
    state, (_, alone, joined) = play(pair(), steps)
    assert published(alone) == [] and alone.actions == ()
    assert "not synchronised with a peer since start" in alone.reason
    assert "view [n2] inquorate" in alone.reason
    assert published(joined) == [
        QuorumRegained(),
        NodeJoined("n1"),
        MasterChanged(None, 1),
        ViceMasterChanged(None, 2),
    ]
    assert state.synced_with_peer and (state.master, state.vice_master) == (1, 2)


def test_an_unsynchronised_node_fences_nobody_when_its_peer_disappears() -> None:
    # The peer's group view came before quorum (not yet a synchronisation), then went away.
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ViewChanged.of(1, 2, quorate=False)),
        (1.0, N2_ALONE),
        (9.0, Tick()),
    ]
    state, ds = play(pair(), steps)
    assert all(fences(d) == [] for d in ds)
    assert state.pending_fences() == () and state.master is None and not state.quorate
    assert not state.synced_with_peer


def test_once_synchronised_a_two_node_split_leaves_each_side_quorate_and_fencing() -> None:
    state, (_, split) = play(pair(), [(0.0, BOTH), (5.0, N2_ALONE)])
    assert published(split) == [MasterChanged(1, 2), ViceMasterChanged(2, None)]
    assert fences(split) == [("n1", 1)]  # the priority fencing delay decides the race
    assert state.quorate and state.master == 2


def test_a_restarted_daemon_waits_for_a_peer_again() -> None:
    synced, _ = play(pair(), [(0.0, BOTH)])
    assert synced.synced_with_peer
    state, (d,) = play(pair(), [(9.0, N2_ALONE)])  # a new daemon starts from the initial state
    assert state.master is None and published(d) == [NodeJoined("n2")]


def test_a_view_of_every_configured_node_needs_no_peer() -> None:
    alone = CmmConfig((NodeSpec("n1", 1, "c1"),), 1)
    state, (d,) = play(alone, [(0.0, ViewChanged.of(1))])
    assert state.quorate and state.master == 1 and QuorumRegained() in published(d)


def test_a_lone_node_of_a_larger_cluster_waits_for_a_peer_whatever_corosync_says() -> None:
    state, (alone, joined) = play(config(local=4), [(0.0, ViewChanged.of(4)), (1.0, ALL)])
    assert state.master == 2 and published(alone) == [NodeJoined("node4")]
    assert QuorumRegained() in published(joined)


# -- fencing before takeover ----------------------------------------------------------------


def test_a_departed_node_is_fenced_before_its_node_left_reaches_the_crim() -> None:
    cfg = config(local=2)  # node2 is master
    state, ds = play(cfg, [(0.0, ALL), (5.0, ViewChanged.of(1, 2, 3)), (6.0, ok("node4"))])
    _, left, fenced = ds
    assert fences(left) == [("node4", 1)]
    assert not any(isinstance(e, NodeLeft) for e in published(left))
    assert left.actions[-1] == Fence(NODES[3], "reboot", 1)
    assert published(fenced) == [NodeLeft("node4", 5.0)]  # dated from when it left
    assert state.pending_fences() == () and state.node_states()[4] is NodeState.LEFT


def test_only_the_master_fences_but_every_member_publishes_node_left_after_the_result() -> None:
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ALL),
        (5.0, ViewChanged.of(1, 2, 3)),
        (6.0, ok("node4")),
    ]
    for local in (1, 3):  # not the master
        _, (_, left, fenced) = play(config(local=local), steps)
        assert fences(left) == []
        assert "node2 fences node4" in left.reason
        assert published(fenced) == [NodeLeft("node4", 5.0)]


def test_a_failed_fencing_is_retried_with_growing_delays_and_node_left_withheld() -> None:
    cfg = config(local=2, retry_first=1.0, retry_cap=3.0)
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ALL),
        (5.0, ViewChanged.of(1, 2, 3)),
        (6.0, failed("node4", "fence_ipmilan off exited 1: connection timed out")),
        (6.5, Tick()),  # too early
        (7.0, Tick()),  # retry 1 s after the first failure
        (8.0, failed("node4")),
        (9.9, Tick()),
        (10.0, Tick()),  # 2 s after the second
        (10.5, failed("node4")),
        (13.5, Tick()),  # capped at 3 s
        (14.0, ok("node4")),
    ]
    state, ds = play(cfg, steps)
    first_failure = ds[2]
    assert published(first_failure) == []
    assert "fencing node4 failed (attempt 1: fence_ipmilan off exited 1" in first_failure.reason
    assert "NodeLeft withheld, retry at 7" in first_failure.reason
    assert next_deadline(cfg, first_failure.state) == 7.0
    assert [fences(d) for d in ds[3:10]] == [
        [],
        [("node4", 2)],
        [],
        [],
        [("node4", 3)],
        [],
        [("node4", 4)],
    ]
    assert all(not any(isinstance(e, NodeLeft) for e in published(d)) for d in ds[:-1])
    assert published(ds[-1]) == [NodeLeft("node4", 5.0)]
    assert state.peer(4).attempts == 0


def test_a_node_that_left_while_this_side_was_inquorate_and_came_back_is_not_fenced() -> None:
    # 1 is cut off alone (inquorate); 2, 3, 4 left *its* view, but it had no say.
    steps = [(0.0, ALL), (1.0, ViewChanged.of(1, quorate=False)), (2.0, ALL)]
    state, ds = play(config(local=1), steps)
    assert state.pending_fences() == ()
    assert all(fences(d) == [] for d in ds)
    assert published(ds[2]) == [
        QuorumRegained(),
        MasterChanged(None, 2),
        ViceMasterChanged(None, 3),
    ]
    assert "node4 is back (it left while this side was inquorate)" in ds[2].reason


def test_the_quorate_side_fences_the_node_that_was_cut_off_even_when_it_comes_back() -> None:
    # The other side of the previous test: 2 (master) fences 1, which then comes back.
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ALL),
        (1.0, ViewChanged.of(2, 3, 4)),
        (2.0, ALL),
        (3.0, ok("node1")),
    ]
    state, (_, left, back, fenced) = play(config(local=2), steps)
    assert fences(left) == [("node1", 1)]
    assert published(back) == [] and fences(back) == []  # already in flight; no NodeJoined
    assert "node1 is back but must still be fenced: NodeJoined withheld" in back.reason
    assert published(fenced) == [NodeLeft("node1", 3.0)]  # alive until fenced
    # Fenced while in the view: it is admitted again only after it left and came back.
    state, (still, gone, rejoined) = play(
        config(local=2),
        [(4.0, ALL), (5.0, ViewChanged.of(2, 3, 4)), (60.0, ALL)],
        state,
    )
    assert published(still) == [] and published(gone) == [] and fences(gone) == []
    assert published(rejoined) == [NodeJoined("node1")]


def test_a_node_still_absent_when_quorum_returns_is_fenced_then() -> None:
    # 4 leaves while 1+2 are cut off from 3 (inquorate); quorum returns without 4.
    steps = [
        (0.0, ALL),
        (1.0, ViewChanged.of(1, 2, quorate=False)),
        (2.0, ViewChanged.of(1, 2, 3)),
    ]
    state, ds = play(config(local=2), steps)
    assert fences(ds[1]) == []
    assert fences(ds[2]) == [("node4", 1)]
    assert state.pending_fences() == (4,)


def test_when_the_master_itself_must_be_fenced_the_next_in_order_fences_it() -> None:
    # node2 (master by priority) leaves and comes back before it was fenced: the pure view
    # still elects it, but it cannot fence itself; node3 does.
    steps: list[tuple[float, CmmInput]] = [
        (0.0, ALL),
        (1.0, ViewChanged.of(1, 3, 4)),
        (1.5, failed("node2")),
        (2.0, ALL),
        (2.5, Tick()),
    ]
    state, ds = play(config(local=3), steps)
    assert fences(ds[1]) == [("node2", 1)]
    assert state.master == 2
    assert fencer(config(local=3), state) == 3
    assert fences(ds[3]) == []  # back, but the retry is not due yet
    assert fences(ds[4]) == [("node2", 2)]


def test_a_new_fencer_re_issues_an_attempt_that_was_in_flight() -> None:
    # node2 was fencing node4 when node2 itself left: node3 takes over both.
    steps = [(0.0, ALL), (1.0, ViewChanged.of(1, 2, 3)), (2.0, ViewChanged.of(1, 3))]
    state, ds = play(config(local=3), steps)
    assert fences(ds[1]) == []
    assert sorted(fences(ds[2])) == [("node2", 1), ("node4", 1)]
    assert state.peer(4).fencing_by == 3


def test_fence_results_for_nodes_not_pending_are_ignored() -> None:
    state, (_, d) = play(config(), [(0.0, ALL), (1.0, ok("node4"))])
    assert d.actions == () and "ignored fence result for node4" in d.reason
    _, (d2,) = play(config(), [(2.0, ok("nobody"))], state)
    assert d2.actions == ()


def test_unconfigured_node_ids_are_ignored() -> None:
    state, (d,) = play(config(), [(0.0, ViewChanged.of(1, 2, 77))])
    assert state.members == frozenset({1, 2})
    assert "ignoring unconfigured node ids [77]" in d.reason


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"local": 9}, "local"),
        ({"demote_within": 0}, "demote_within"),
        ({"self_fence_after": 0.5, "demote_within": 1.0}, "self_fence_after"),
        ({"fence_action": "explode"}, "fence_action"),
        ({"retry_first": 5.0, "retry_cap": 1.0}, "retry_first"),
    ],
)
def test_bad_settings_are_a_config_error_naming_the_key(
    settings: dict[str, object], key: str
) -> None:
    args: dict[str, object] = {"local": 1, **settings}
    with pytest.raises(ConfigError) as error:
        CmmConfig(NODES, **args)  # type: ignore[arg-type]
    assert [p.key for p in error.value.problems] == [key]


def test_duplicate_node_ids_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="node ids must be unique"):
        CmmConfig((*NODES, NodeSpec("node5", 1, "n5")), 1)


# -- stale quorum -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "members", "quorate"),
    [
        (4, {1, 2, 3}, True),
        (4, {1, 2}, False),  # half is not a majority
        (3, {1, 2}, True),
        (3, {3}, False),
        (5, {1, 2, 3}, True),
        (5, {4, 5}, False),
        (2, {2}, True),  # two nodes: either one (votequorum's two_node; fencing decides)
        (2, set(), False),
        (3, {1, 2, 9}, True),  # a node outside the configuration has no vote
        (3, {1, 9}, False),
    ],
)
def test_a_view_is_quorate_only_with_a_majority_of_the_configured_nodes(
    nodes: int, members: set[int], quorate: bool
) -> None:
    specs = tuple(NodeSpec(f"n{i}", i, f"shelf1/slot{i}/node") for i in range(1, nodes + 1))
    assert majority(CmmConfig(specs, 1), frozenset(members)) is quorate
