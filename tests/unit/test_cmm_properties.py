"""CMM invariants under random views, fence results and ticks (hypothesis)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.cmm.model import CmmConfig, CmmInput, CmmState, Fence, Tick, ViewChanged
from haos.cluster.cmm.policy import decide, fencer
from haos.cluster.crim.events import NodeJoined, NodeLeft
from haos.cluster.fencing.types import FenceResult
from haos.config.model import NodeSpec

MAX_NODES = 6


@st.composite
def clusters(draw: st.DrawFn) -> tuple[NodeSpec, ...]:
    count = draw(st.integers(2, MAX_NODES))
    priorities = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    return tuple(NodeSpec(f"node{i}", i, f"c{i}", p) for i, p in enumerate(priorities, 1))


def views(count: int) -> st.SearchStrategy[ViewChanged]:
    ids = st.frozensets(st.integers(1, count + 1), max_size=count + 1)  # +1: unconfigured
    return st.builds(ViewChanged, ids, st.booleans())


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_every_member_given_the_same_view_elects_the_same_master(data: st.DataObject) -> None:
    """Whatever each node saw before, the members of a view agree on master and vice-master,
    both are members, and there is none without quorum -- nor in a view of a node alone
    that has never been in a quorate view with a peer."""
    nodes = data.draw(clusters())
    ids = [n.node_id for n in nodes]
    history = data.draw(st.lists(views(len(nodes)), max_size=12))
    final = data.draw(views(len(nodes)))
    elected = set()
    for local in ids:
        config = CmmConfig(nodes, local)
        state = CmmState.initial(config)
        # Each node saw its own subsequence of the history (it was partitioned for the rest).
        seen = data.draw(st.lists(st.sampled_from(history), max_size=8)) if history else []
        synced = False
        for now, view in enumerate([*seen, final]):
            state = decide(config, state, view, float(now)).state
            in_view = view.members & set(ids)
            synced |= view.quorate and local in in_view and len(in_view) > 1
        if local not in final.members:
            assert state.master is None  # not in the view: not quorate
            continue
        elected.add((state.master, state.vice_master))
        members = final.members & set(ids)
        if final.quorate and members and (synced or len(members) == len(ids)):
            assert state.master in members
            assert state.vice_master in members | {None}
            assert state.vice_master != state.master
        else:
            assert (state.master, state.vice_master) == (None, None)
    assert len(elected) <= 1


def fence_results(names: list[str]) -> st.SearchStrategy[FenceResult]:
    return st.builds(
        FenceResult, st.sampled_from(names), st.just("reboot"), st.booleans(), st.just("x")
    )


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_node_left_only_after_a_confirmed_fencing_and_only_the_fencer_fences(
    data: st.DataObject,
) -> None:
    nodes = data.draw(clusters())
    local = data.draw(st.sampled_from([n.node_id for n in nodes]))
    config = CmmConfig(nodes, local, retry_first=0.5, retry_cap=2.0)
    names = {n.name: n.node_id for n in nodes}
    events: st.SearchStrategy[CmmInput] = st.one_of(
        views(len(nodes)), fence_results(list(names)), st.just(Tick())
    )
    steps = data.draw(st.lists(events, max_size=30))
    state = CmmState.initial(config)
    admitted: dict[str, bool] = defaultdict(bool)
    now = 0.0
    for event in steps:
        now += data.draw(st.sampled_from([0.1, 0.5, 2.0]))
        before = state
        decision = decide(config, state, event, now)
        state = decision.state
        for action in decision.actions:
            if isinstance(action, Fence):
                assert state.quorate, "an inquorate partition fenced"
                assert fencer(config, state) == local, "a node that is not the fencer fenced"
                assert action.node.node_id != local, "a node fenced itself"
        for published in decision.events():
            if isinstance(published, NodeLeft):
                node_id = names[published.node]
                assert isinstance(event, FenceResult) and event.ok, "NodeLeft without fencing"
                assert event.node == published.node
                assert before.peer(node_id).must_fence
                assert admitted[published.node], "NodeLeft for a node never announced"
                admitted[published.node] = False
            elif isinstance(published, NodeJoined):
                assert not admitted[published.node], "NodeJoined twice without NodeLeft"
                admitted[published.node] = True
        assert state.master is None or state.master in state.members
        assert not state.quorate or local in state.members
