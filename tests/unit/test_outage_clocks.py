"""An outage caused by a node loss is dated and measured in wall-clock time.

The membership service (CMM) dates a lost node's departure on its node's monotonic clock, while
the availability service decides, stores and shows in wall-clock time. Here the two clocks are
far apart (a node up 6474 s, the wall clock at 1.8e9), as on a real board: the real CMM policy
publishes the NodeLeft, the real availability service decides it, and the history entries made
from the decision must carry wall-clock times and the right outage length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from _notices import Notices

from haos.cli.ops import outage_lengths
from haos.clock import MonoTime, WallTime, wall_of
from haos.cluster.cmm.model import (
    Action,
    CmmConfig,
    CmmInput,
    CmmState,
    Demote,
    Fence,
    Publish,
)
from haos.cluster.cmm.model import ViewChanged as View
from haos.cluster.cmm.policy import decide
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.checkpoint import CheckpointService
from haos.cluster.fencing.types import FenceResult
from haos.model.redundancy import RedundancyModel
from haos.model.states import AvailabilityState
from haos.services.clusterd import notice_record
from haos.services.crimd import AvailabilityService, ServiceRole, Settings
from haos.services.orders import notes_of
from haoslab.fakes.localnet import LocalNet
from haoslab.testing.builders import GroupPlan, generated_cluster

pytestmark = pytest.mark.timeout(60)

WALL0 = 1.8e9  # the wall clock when the test starts
MONO0 = 6474.0  # the monotonic clock then: the node has been up 6474 s (01:47:54)
CONFIG = generated_cluster(3, [GroupPlan("app", RedundancyModel.TWO_N, [2, 3])])
TOPO = Topology(CONFIG)
CMM = CmmConfig(nodes=CONFIG.nodes, local=1)  # node 1 is master; the app runs on 2 and 3


@dataclass
class Clocks:
    """Both clocks of node 1, moved together by ``elapsed``."""

    elapsed: float = 0.0

    def wall(self) -> WallTime:
        return WallTime(WALL0 + self.elapsed)

    def mono(self) -> MonoTime:
        return MonoTime(MONO0 + self.elapsed)


@dataclass
class Recorder:
    """The action sink: keeps each decision with the history entries a node would make of it
    (dated, like the executor's, on the wall clock when it is carried out)."""

    clocks: Clocks
    decisions: list[Decision] = field(default_factory=list)
    history: list[dict[str, object]] = field(default_factory=list)

    async def carry_out(self, seq: int, decision: Decision) -> None:
        self.decisions.append(decision)
        self.history.extend(notes_of(seq, self.clocks.wall(), decision))

    def resync(self, seq: int, crim: CrimState, epoch: int = 0) -> None:
        pass


@dataclass
class Node1:
    """Node 1's CMM (the pure policy) feeding its availability service, as the daemon does."""

    clocks: Clocks
    sink: Recorder
    service: AvailabilityService
    notices: Notices
    cmm: CmmState = field(default_factory=lambda: CmmState.initial(CMM))
    records: list[dict[str, object]] = field(default_factory=list)

    async def cmm_sees(self, event: CmmInput) -> list[Action]:
        """The CMM decides ``event`` now; its notices reach the service, which handles them."""
        decision = decide(CMM, self.cmm, event, self.clocks.mono())
        self.cmm = decision.state
        for action in decision.actions:
            if isinstance(action, Publish):
                self.notices.queue.put_nowait(action)
                self.records.append(notice_record(action, self.clocks.wall(), self.clocks.mono()))
        async with asyncio.timeout(5.0):
            await self.notices.drained()
            await self.service.wait_role(ServiceRole.ACTIVE)
        return list(decision.actions)

    def primary_node(self) -> str:
        crim = self.service.brain
        assert crim is not None
        primaries = [
            c
            for c, rt in crim.crim.components.items()
            if rt.state is AvailabilityState.PRIMARY and c in TOPO.group_of
        ]
        assert len(primaries) == 1, primaries
        return TOPO.host_of[primaries[0]]


@asynccontextmanager
async def node1() -> AsyncIterator[Node1]:
    clocks = Clocks()
    sink = Recorder(clocks)
    notices = Notices()
    async with LocalNet(CheckpointService) as net:
        await net.start_all(1)
        service = AvailabilityService(
            Settings(1, TOPO, auto_tick=False),
            net[1],
            notices,
            sink,
            clocks.wall,
            monotonic=clocks.mono,
        )
        task = asyncio.create_task(service.run())
        try:
            yield Node1(clocks, sink, service, notices)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_a_node_loss_outage_is_dated_and_measured_in_wall_clock_time() -> None:
    asyncio.run(_node_loss())


async def _node_loss() -> None:
    async with node1() as n:
        await n.cmm_sees(View.of(1, 2, 3))  # joins, master 1: the service becomes active
        for app in sorted(TOPO.groups["app"].members):
            await n.service.submit(ev.ComponentAvailable(app))
        lost = n.primary_node()
        survivors = [s.node_id for s in CONFIG.nodes if s.name != lost]

        n.clocks.elapsed = 100.0  # the node hosting the primary is lost...
        fence = await n.cmm_sees(View.of(*survivors))
        assert [a.node.name for a in fence if isinstance(a, Fence)] == [lost]
        n.clocks.elapsed = 103.0  # ...and fenced 3 s later: only now the CRIM hears of it
        await n.cmm_sees(FenceResult(lost, "reboot", ok=True))

        outage = [e for e in n.sink.history if e.get("note") == "ServiceOutage"]
        restored = [e for e in n.sink.history if e.get("note") == "ServiceRestored"]
        assert len(outage) == len(restored) == 1, [d.reason for d in n.sink.decisions]
        assert outage[0]["at"] == WALL0 + 100.0  # when the node was last seen, on the wall
        assert restored[0]["at"] == WALL0 + 103.0
        assert restored[0]["at"] - outage[0]["at"] == pytest.approx(3.0)  # type: ignore[operator]
        assert list(outage_lengths(n.sink.history).values()) == [pytest.approx(3.0)]  # shown
        assert n.service.brain is not None and not n.service.brain.crim.outages

        # The node's own record of the CMM's notices is in wall-clock time too.
        left = [r for r in n.records if r["notice"]["event"]["type"] == "NodeLeft"]  # type: ignore[index]
        assert left == [
            {
                "at": WALL0 + 103.0,
                "notice": {
                    "type": "Publish",
                    "event": {
                        "type": "NodeLeft",
                        "node": lost,
                        "at": WALL0 + 100.0,
                        "how": "fenced (reboot)",
                    },
                    "at": WALL0 + 103.0,
                },
            }
        ]


def test_a_monotonic_instant_converts_to_wall_clock_time_by_the_clocks_offset() -> None:
    wall, mono = WallTime(WALL0 + 10.0), MonoTime(MONO0 + 10.0)
    assert wall_of(MonoTime(MONO0), wall, mono) == WALL0
    left = ev.NodeLeft("n2", MonoTime(MONO0 + 4.5)).on_wall_clock(wall, mono)
    assert left == ev.NodeLeft("n2", WallTime(WALL0 + 4.5))
    assert ev.NodeLeft("n2", None).on_wall_clock(wall, mono) == ev.NodeLeft("n2")


def test_the_node_records_a_demote_deadline_in_wall_clock_time() -> None:
    state = decide(CMM, CmmState.initial(CMM), View.of(1, 2, 3), MonoTime(MONO0)).state
    lost = decide(CMM, state, View.of(1, quorate=False), MonoTime(MONO0 + 20.0))
    demote = [a for a in lost.actions if isinstance(a, Demote)]
    assert len(demote) == 1 and demote[0].deadline == MONO0 + 20.0 + CMM.demote_within
    record = notice_record(demote[0], WallTime(WALL0 + 20.0), MonoTime(MONO0 + 20.0))
    assert record["at"] == WALL0 + 20.0
    assert record["notice"]["deadline"] == WALL0 + 20.0 + CMM.demote_within
