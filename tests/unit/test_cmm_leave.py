"""The CMM's announced (clean) leave: the policy table, the wire, and the service on a bus.

A node that stops cleanly announces its leave on the CMM group once it runs nothing; its
peers publish NodeLeft at once and do not fence its departure. Every departure that was not
announced is fenced exactly as before, and an announcement changes nothing for a node that
must be fenced or is not in the view.
"""

from __future__ import annotations

import asyncio

import pytest
from _cmm import ALL, NODES, fences, node_lefts, notices, ok, play, published, until

from haos.cluster.cmm.model import (
    CmmConfig,
    CmmState,
    Decision,
    Fence,
    LeaveAnnounced,
    MasterChanged,
    Publish,
    QuorumLost,
    ViewChanged,
)
from haos.cluster.cmm.policy import decide, fencer
from haos.cluster.cmm.service import CmmService
from haos.cluster.cmm.wire import decode_message, encode_leave
from haos.cluster.crim.events import NodeJoined, NodeLeft
from haos.cluster.dss.wire import WireError
from haos.config.model import NodeSpec
from haos.errors import UnavailableError
from haoslab.fakes.fencing import ScriptedFencer
from haoslab.testing.bus import LocalBus

pytestmark = pytest.mark.timeout(30)

WITHOUT_3 = ViewChanged.of(1, 2, 4)


def config(local: int) -> CmmConfig:
    return CmmConfig(NODES, local)


def lefts(decision: Decision) -> list[object]:
    return [e for e in decision.events() if isinstance(e, NodeLeft)]


class FakeQuorum:
    """Quorate from the start."""

    def __init__(self) -> None:
        self._first = True

    async def next_quorate(self) -> bool:
        if not self._first:
            await asyncio.Event().wait()
        self._first = False
        return True


def formed(local: int = 2) -> tuple[CmmConfig, CmmState]:
    """Every node in the view; by default as node2 sees it, the master (and fencer)."""
    cfg = config(local)
    state, _ = play(cfg, [(0.0, ALL)])
    return cfg, state


# -- policy ---------------------------------------------------------------------------------


def test_an_announced_leave_is_node_left_at_once_and_its_departure_is_not_fenced() -> None:
    cfg, state = formed()
    state, (leave, gone, later) = play(
        cfg, [(5.0, LeaveAnnounced(3)), (5.2, WITHOUT_3), (9.0, WITHOUT_3)], state
    )
    assert published(leave) == [NodeLeft("node3", 5.0)]
    assert [e.how for e in published(leave)] == ["left cleanly"]
    assert "node3 leaves cleanly" in leave.reason
    assert fences(gone) == [] and lefts(gone) == []
    assert "went away after its fencing or announced leave" in gone.reason
    assert fences(later) == [] and state.pending_fences() == ()
    peer = state.peer(3)
    assert not peer.admitted and not peer.unfenced and not peer.awaiting_departure


def test_a_departure_that_was_not_announced_is_fenced_as_before() -> None:
    cfg, state = formed()
    _, (gone,) = play(cfg, [(5.0, WITHOUT_3)], state)
    assert fences(gone) == [("node3", 1)]
    assert lefts(gone) == []  # NodeLeft waits for the fencing


def test_a_node_that_announced_its_leave_and_is_seen_again_gets_no_work_until_it_rejoins() -> None:
    cfg, state = formed()
    state, (_, still_there, back_after_gap) = play(
        cfg,
        [
            (5.0, LeaveAnnounced(3)),
            (6.0, ViewChanged.of(1, 2, 3)),  # node4 goes; node3 is still in the view
            (7.0, ALL),
        ],
        state,
    )
    assert NodeJoined("node3") not in published(still_there)
    assert NodeJoined("node3") not in published(back_after_gap)
    assert not state.peer(3).admitted
    # once it has left and come back, it is a member like any other
    state, (gone, back) = play(cfg, [(8.0, ViewChanged.of(1, 2, 4)), (9.0, ALL)], state)
    assert fences(gone) == [] and NodeJoined("node3") in published(back)
    assert state.peer(3).admitted


def test_a_leave_from_a_node_that_must_be_fenced_changes_nothing() -> None:
    cfg, state = formed()
    # node3 vanished while node1's side was quorate: it must be fenced, even if it is back
    state, _ = play(cfg, [(5.0, WITHOUT_3), (5.5, ALL)], state)
    assert state.pending_fences() == (3,)
    state, (leave,) = play(cfg, [(6.0, LeaveAnnounced(3))], state)
    assert published(leave) == [] and "must be fenced first" in leave.reason
    assert state.pending_fences() == (3,)
    state, (fenced,) = play(cfg, [(7.0, ok("node3"))], state)
    assert published(fenced) == [NodeLeft("node3", 7.0)]
    assert next(e.how for e in published(fenced)).startswith("fenced (")


def test_a_leave_of_a_node_not_in_the_view_or_not_configured_is_ignored() -> None:
    cfg, state = formed()
    state, _ = play(cfg, [(5.0, WITHOUT_3)], state)
    for node in (3, 99):
        after, (leave,) = play(cfg, [(6.0, LeaveAnnounced(node))], state)
        assert published(leave) == [] and "ignored" in leave.reason
        assert after.pending_fences() == (3,)


def test_a_second_announcement_publishes_nothing_more() -> None:
    cfg, state = formed()
    _, (first, second) = play(cfg, [(5.0, LeaveAnnounced(3)), (5.1, LeaveAnnounced(3))], state)
    assert published(first) == [NodeLeft("node3", 5.0)] and published(second) == []


def test_a_leaving_master_stays_master_until_it_goes_but_no_longer_fences() -> None:
    cfg, state = formed(local=3)
    assert state.master == 2 and fencer(cfg, state) == 2
    state, (leave,) = play(cfg, [(5.0, LeaveAnnounced(2))], state)
    assert published(leave) == [NodeLeft("node2", 5.0)]
    assert state.master == 2  # the election depends on the view alone
    assert fencer(cfg, state) == 3  # the next in election order fences meanwhile
    # node4 crashes while node2 is on its way out: node3 fences it, not the leaving master
    state, (crash,) = play(cfg, [(5.1, ViewChanged.of(1, 2, 3))], state)
    assert fences(crash) == [("node4", 1)]
    state, (gone,) = play(cfg, [(5.3, ViewChanged.of(1, 3))], state)
    assert MasterChanged(2, 3) in published(gone)
    assert all(a.node.name != "node2" for a in gone.actions if isinstance(a, Fence))


def test_two_nodes_leaving_one_after_the_other_take_quorum_with_them() -> None:
    """Of three nodes, the second to leave cleanly leaves the last one inquorate: it gives
    up its primaries (quorum rules); neither leaver is fenced."""
    nodes = NODES[:3]
    cfg = CmmConfig(nodes, 3)
    state, _ = play(cfg, [(0.0, ViewChanged.of(1, 2, 3))])
    state, decisions = play(
        cfg,
        [
            (5.0, LeaveAnnounced(1)),
            (5.1, ViewChanged.of(2, 3)),
            (6.0, LeaveAnnounced(2)),
            (6.1, ViewChanged.of(3, quorate=False)),
        ],
        state,
    )
    assert all(fences(d) == [] for d in decisions)
    last = decisions[-1]
    assert QuorumLost() in published(last)
    assert any(type(a).__name__ == "Demote" for a in last.actions)
    assert state.pending_fences() == () and not state.quorate


# -- wire -----------------------------------------------------------------------------------


def test_a_leave_travels_in_the_cmm_envelope_and_only_its_own_node_can_send_it() -> None:
    data = encode_leave(LeaveAnnounced(3))
    assert decode_message(data, 3) == LeaveAnnounced(3)
    with pytest.raises(WireError, match="node id 2 announced the leave of node id 3"):
        decode_message(data, 2)
    with pytest.raises(WireError):
        decode_message(data[:-1], 3)


# -- the service on a bus -------------------------------------------------------------------

SERVICE_NODES = (
    NodeSpec("node1", 1, "n1", priority=10),
    NodeSpec("node2", 2, "n2", priority=20),
    NodeSpec("node3", 3, "n3", priority=5),
)


def test_a_node_that_announced_its_leave_and_goes_is_not_fenced_by_its_peers() -> None:
    async def scenario() -> None:
        bus, fencer = LocalBus(), ScriptedFencer()
        services = {
            s.node_id: CmmService(
                CmmConfig(SERVICE_NODES, s.node_id), bus.join(s.node_id), FakeQuorum(), fencer,
                tick=0.02,
            )
            for s in SERVICE_NODES
        }  # fmt: skip
        async with asyncio.TaskGroup() as tasks:
            runs = {n: tasks.create_task(s.run()) for n, s in services.items()}
            await until(lambda: all(s.master == 2 for s in services.values()), "master node2")
            async with services[1].listen() as on1:
                await services[2].leave(1.0)  # the master leaves
                assert [e.node for e in node_lefts(notices(on1))] == ["node2"]
                runs[2].cancel()
                bus.leave(2)
                await until(lambda: services[1].master == 1, "node1 master")
                await asyncio.sleep(0.1)  # ticks: a fencing would have been asked for
                assert fencer.calls == []
                assert node_lefts(notices(on1)) == []  # announced once, at the leave
            for task in runs.values():
                task.cancel()

    asyncio.run(scenario())


def test_a_leave_that_does_not_come_back_in_time_is_an_error() -> None:
    async def scenario() -> None:
        bus = LocalBus()
        endpoint = bus.join(1)
        service = CmmService(
            CmmConfig(SERVICE_NODES, 1), endpoint, FakeQuorum(), ScriptedFencer(), tick=0.02
        )  # not running: nobody reads the group, so its own leave never comes back
        with pytest.raises(UnavailableError, match="not delivered within"):
            await service.leave(0.05)

    asyncio.run(scenario())


def test_publish_of_a_leave_is_an_ordinary_notice() -> None:
    cfg, state = formed()
    decision = decide(cfg, state, LeaveAnnounced(4), 3.0)
    assert decision.actions == (Publish(NodeLeft("node4", 3.0), 3.0),)
