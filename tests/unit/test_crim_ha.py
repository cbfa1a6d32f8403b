"""The CRIM/CEC availability service as an HA pair on the in-memory CRC: the master decides and
checkpoints before any action runs, the vice-master takes over with the identical state, no
decision runs twice, a never-synced node refuses to take over, and a take-over in the middle of
any event sequence ends in the same state as one uninterrupted CRIM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from _notices import Notices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haos.cluster.cec.policy import Verdict
from haos.cluster.cmm.model import (
    MasterChanged,
    Publish,
    QuorumLost,
    QuorumRegained,
    ViceMasterChanged,
)
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import AssignRole, Decision
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.checkpoint import Checkpoint, CheckpointService, Role
from haos.config.model import CorrelationPolicy
from haos.errors import ModelError, UnavailableError
from haos.model.redundancy import RedundancyModel
from haos.model.reports import ErrorKind, ErrorReport
from haos.model.states import AvailabilityState
from haos.services.crimd import (
    CHECKPOINT,
    SECTION,
    AvailabilityService,
    Brain,
    EpochSource,
    LogSink,
    ServiceRole,
    Settings,
    membership_fixes,
)
from haos.services.epochs import CountingEpochs
from haoslab.fakes.localnet import LocalNet
from haoslab.testing.builders import GroupPlan, generated_cluster

pytestmark = pytest.mark.timeout(120)
DEADLINE = 5.0
NODES = (1, 2, 3)
TOPO = Topology(generated_cluster(3, [GroupPlan("app", RedundancyModel.TWO_N, [1, 2, 3])]))
APPS = sorted(TOPO.groups["app"].members)
POLICY = CorrelationPolicy()
BOOT: list[ev.Event] = [
    *(ev.NodeJoined(f"n{n}") for n in NODES),
    *(ev.ComponentAvailable(a) for a in APPS),
]
Step = tuple[str, ev.Event | ErrorReport | None]


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sink:
    """Records (node, seq, decision) for every node; ``check`` runs before recording."""

    log: list[tuple[int, int, Decision]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    standby: Checkpoint | None = None  # when set, each call verifies it already has the state
    resyncs: list[tuple[int, int]] = field(default_factory=list)
    epochs: list[tuple[int, int]] = field(default_factory=list)  # (node, epoch) per resync

    def for_node(self, node: int) -> NodeSink:
        return NodeSink(self, node)


@dataclass
class NodeSink:
    shared: Sink
    node: int

    async def carry_out(self, seq: int, decision: Decision) -> None:
        standby = self.shared.standby
        if standby is not None:
            raw = standby.read(SECTION)
            stored = None if raw is None else Brain.decode(TOPO, POLICY, raw).seq
            self.shared.checks.append(f"seq {seq}: standby holds {stored}")
            assert stored is not None and stored >= seq, self.shared.checks[-1]
        self.shared.log.append((self.node, seq, decision))

    def resync(self, seq: int, crim: CrimState, epoch: int = 0) -> None:
        self.shared.resyncs.append((self.node, seq))
        self.shared.epochs.append((self.node, epoch))


@dataclass
class Harness:
    net: LocalNet[CheckpointService]
    clock: Clock
    sink: Sink
    notices: dict[int, Notices]
    services: dict[int, AvailabilityService]
    tasks: dict[int, asyncio.Task[None]]

    async def publish(self, *events: object, at: float = 0.0) -> None:
        """The CMM publishes ``events`` on every live node; wait until all handled them."""
        for event in events:
            for q in self.notices.values():
                q.queue.put_nowait(Publish(event, at))  # type: ignore[arg-type]
        async with asyncio.timeout(DEADLINE):
            for q in self.notices.values():
                await q.drained()

    def crash(self, node: int) -> None:
        self.net.crash(node)
        self.tasks.pop(node).cancel()
        del self.notices[node]

    async def boot(self) -> None:
        await self.publish(MasterChanged(None, 1), ViceMasterChanged(None, 2))
        await self.publish(*(ev.NodeJoined(f"n{n}") for n in NODES))
        for app in APPS:
            await self.services[1].submit(ev.ComponentAvailable(app))

    async def take_over(self) -> float:
        """Master 1 dies; the CMM elects 2 (3 vice); returns seconds until 2 is active."""
        self.crash(1)
        started = time.perf_counter()
        await self.publish(MasterChanged(1, 2), ViceMasterChanged(2, 3))
        async with asyncio.timeout(DEADLINE):
            await self.services[2].wait_role(ServiceRole.ACTIVE)
        return time.perf_counter() - started


@asynccontextmanager
async def cluster(
    sink: Sink | None = None,
    clock: Clock | None = None,
    epochs: EpochSource | None = None,
    live: dict[int, bool] | None = None,
) -> AsyncIterator[Harness]:
    """``epochs``: one source for every node (each has its own counter otherwise); ``live``:
    node -> whether the membership service has it as master now (notices decide otherwise)."""
    clock = clock or Clock()
    sink = sink or Sink()
    async with LocalNet(CheckpointService) as net:
        await net.start_all(*NODES)
        notices = {n: Notices() for n in NODES}
        services = {
            n: AvailabilityService(
                Settings(n, TOPO, POLICY, auto_tick=False),
                net[n],
                notices[n],
                sink.for_node(n),
                clock,
                epochs=epochs,
                still_master=None if live is None else (lambda n=n: live[n]),  # type: ignore[misc]
            )
            for n in NODES
        }
        tasks = {n: asyncio.create_task(services[n].run()) for n in NODES}
        h = Harness(net, clock, sink, notices, services, tasks)
        try:
            yield h
        finally:
            for task in h.tasks.values():
                task.cancel()
            await asyncio.gather(*h.tasks.values(), return_exceptions=True)


def primary(brain: Brain | None) -> list[str]:
    assert brain is not None
    return brain.crim.primaries("app-si0", TOPO)


# ---------------------------------------------------------------------------- roles


def test_roles_follow_the_cmm_master_and_vice_master() -> None:
    async def go() -> None:
        async with cluster() as h:
            await h.boot()
            assert [h.services[n].role for n in NODES] == [
                ServiceRole.ACTIVE,
                ServiceRole.STANDBY,
                ServiceRole.IDLE,
            ]
            assert primary(h.services[1].brain) == [APPS[0]]
            with pytest.raises(UnavailableError, match="standby"):
                await h.services[2].submit(ev.OperatorLock("n1"))

    asyncio.run(go())


# ---------------------------------------------------------------------------- safety rule


def test_master_checkpoints_each_decision_on_the_standby_before_its_actions_run() -> None:
    async def go() -> None:
        sink = Sink()
        async with cluster(sink) as h:
            await h.publish(MasterChanged(None, 1), ViceMasterChanged(None, 2))
            sink.standby = await h.net[2].open(CHECKPOINT, Role.STANDBY)  # node 2's handle
            await h.publish(*(ev.NodeJoined(f"n{n}") for n in NODES))
            for app in APPS:
                await h.services[1].submit(ev.ComponentAvailable(app))
            await h.services[1].submit(ev.OperatorSwitchover("app-si0"))
        assert [seq for _, seq, _ in sink.log] == list(range(1, 8))
        assert len(sink.checks) == 7
        assert any(isinstance(a, AssignRole) for _, _, d in sink.log for a in d.actions)

    asyncio.run(go())


# ---------------------------------------------------------------------------- take-over


def test_standby_takes_over_when_the_master_dies_with_the_identical_state() -> None:
    async def go() -> None:
        sink = Sink()
        async with cluster(sink) as h:
            await h.boot()
            await h.services[1].report(ErrorReport(APPS[2], ErrorKind.CRASH, 0.0))
            before = h.services[1].brain
            assert before is not None
            snapshot = before.to_data()
            executed = len(sink.log)

            elapsed = await h.take_over()
            print(f"take-over in {elapsed * 1000:.2f} ms (target < 1000 ms)")
            assert elapsed < 1.0
            after = h.services[2].brain
            assert after is not None
            # the same state, under a newer mastership epoch that the resync names
            assert after.epoch > before.epoch
            assert {**after.to_data(), "epoch": before.epoch} == snapshot
            assert sink.epochs[-1] == (2, after.epoch)
            assert len(sink.log) == executed  # nothing re-emitted

            # The CMM publishes the old master's NodeLeft after fencing: decided, work moves.
            await h.publish(ev.NodeLeft("n1"), at=1.0)
            node, seq, decision = sink.log[-1]
            assert (node, seq) == (2, snapshot["seq"] + 1)
            assert decision.reason.startswith("node n1 left")
            assert primary(after) == [APPS[1]]
            assert h.services[3].role is ServiceRole.STANDBY

        seqs = [seq for _, seq, _ in sink.log]
        assert seqs == sorted(set(seqs)), "a decision was executed twice"

    asyncio.run(go())


def test_no_decision_is_executed_twice_across_two_take_overs() -> None:
    async def go() -> None:
        sink = Sink()
        async with cluster(sink) as h:
            await h.boot()
            await h.take_over()
            await h.publish(ev.NodeLeft("n1"))
            await h.services[2].submit(ev.OperatorLock("n2"))
            # Second take-over: 2 dies, 3 (a synced standby since the first) takes over.
            h.crash(2)
            await h.publish(MasterChanged(2, 3), ViceMasterChanged(3, None))
            async with asyncio.timeout(DEADLINE):
                await h.services[3].wait_role(ServiceRole.ACTIVE)
            await h.publish(ev.NodeLeft("n2"))
            await h.services[3].submit(ev.OperatorUnlock("n2"))
        seqs = [seq for _, seq, _ in sink.log]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [n for n, _, _ in sink.log][-3:] == [2, 3, 3]

    asyncio.run(go())


def test_a_never_synced_node_refuses_to_become_active_without_a_checkpoint() -> None:
    async def go() -> None:
        async with cluster() as h:
            await h.boot()
            # Master and vice-master die together; node 3 was idle and never held the state.
            h.crash(1)
            h.crash(2)
            await h.publish(MasterChanged(1, 3), ViceMasterChanged(2, None))
            svc = h.services[3]
            assert svc.role is ServiceRole.REFUSED and svc.brain is None
            assert svc.refusal is not None and "never a synced standby" in svc.refusal
            with pytest.raises(UnavailableError, match="never a synced standby"):
                await svc.submit(ev.ComponentAvailable(APPS[2]))
            with pytest.raises(UnavailableError):
                await svc.tick()

    asyncio.run(go())


def test_first_master_at_cluster_formation_starts_from_the_initial_state() -> None:
    async def go() -> None:
        async with cluster() as h:
            await h.publish(MasterChanged(None, 1))
            brain = h.services[1].brain
            assert brain is not None and brain.seq == 0
            assert not any(rt.member for rt in brain.crim.nodes.values())

    asyncio.run(go())


def test_membership_missed_while_standby_is_reconciled_on_take_over() -> None:
    brain = Brain.initial(TOPO, POLICY)
    brain.decide(ev.NodeJoined("n1"), 0.0)
    brain.decide(ev.NodeJoined("n2"), 0.0)
    assert membership_fixes(brain.crim, {"n2", "n3"}) == [ev.NodeLeft("n1"), ev.NodeJoined("n3")]
    assert membership_fixes(brain.crim, {"n1", "n2"}) == []


def test_a_corrupt_checkpoint_is_a_model_error() -> None:
    data = Brain.initial(TOPO, POLICY).to_data()
    with pytest.raises(ModelError):
        Brain.from_data(TOPO, POLICY, {**data, "seq": -1})
    with pytest.raises(ModelError):
        Brain.decode(TOPO, POLICY, b"[1]")
    with pytest.raises(ModelError):
        Brain.decode(TOPO, POLICY, b"{not json")
    del data["cec"]
    with pytest.raises(ModelError):
        Brain.from_data(TOPO, POLICY, data)


def test_error_reports_go_through_the_cec_before_the_crim() -> None:
    async def go() -> None:
        clock = Clock()
        async with cluster(clock=clock) as h:
            await h.boot()
            clock.now = 1.0
            report = ErrorReport(APPS[0], ErrorKind.CRASH, 0.9)
            first = await h.services[1].report(report)
            again = await h.services[1].report(report)  # the same again: stale now
            assert first.verdict is Verdict.HOLD  # apps sit in a node: held for the pattern
            assert again.verdict is Verdict.DISCARD
            clock.now = 2.0
            decisions = await h.services[1].tick()
            assert any(APPS[0] in d.reason for d in decisions)

    asyncio.run(go())


# ---------------------------------------------------------------------------- property


def _event() -> st.SearchStrategy[Step]:
    app = st.sampled_from(APPS)
    return st.one_of(
        st.tuples(st.just("submit"), st.builds(ev.ComponentAvailable, app)),
        st.tuples(st.just("submit"), st.builds(ev.OperatorOffline, app)),
        st.tuples(st.just("submit"), st.builds(ev.OperatorOnline, app)),
        st.tuples(
            st.just("submit"), st.builds(ev.OperatorLock, st.sampled_from([*APPS, "n2", "n3"]))
        ),
        st.tuples(
            st.just("submit"), st.builds(ev.OperatorUnlock, st.sampled_from([*APPS, "n2", "n3"]))
        ),
        st.tuples(st.just("submit"), st.just(ev.OperatorSwitchover("app-si0"))),
        st.tuples(
            st.just("report"),
            st.builds(ErrorReport, app, st.sampled_from(list(ErrorKind)), st.just(0.0)),
        ),
        st.tuples(st.just("tick"), st.none()),
        st.tuples(st.just("cmm"), st.sampled_from([ev.NodeLeft("n3"), ev.NodeJoined("n3")])),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_event(), min_size=1, max_size=16), data=st.data())
def test_a_take_over_mid_sequence_ends_in_the_same_state_as_one_crim(
    events: list[Step], data: st.DataObject
) -> None:
    switch = data.draw(st.integers(0, len(events)), label="switch")

    async def go() -> None:
        clock = Clock()
        ref = Brain.initial(TOPO, POLICY)
        sink = Sink()
        async with cluster(sink, clock) as h:
            await h.boot()
            for e in BOOT:
                ref.decide(e, 0.0)
            master = 1
            for i, (kind, payload) in enumerate(events):
                if i == switch:
                    await h.take_over()
                    await h.publish(ev.NodeLeft("n1"))
                    ref.decide(ev.NodeLeft("n1"), clock.now)
                    master = 2
                clock.now = float(i + 1)
                svc = h.services[master]
                if isinstance(payload, ErrorReport):
                    stamped = ErrorReport(payload.component, payload.kind, clock.now - 0.5)
                    await svc.report(stamped)
                    ref.report(stamped, clock.now)
                elif payload is None:
                    await svc.tick()
                    ref.tick(clock.now)
                elif kind == "cmm":
                    await h.publish(payload, at=clock.now)
                    ref.decide(payload, clock.now)
                else:
                    await svc.submit(payload)
                    ref.decide(payload, clock.now)
            final = h.services[master].brain
            assert final is not None
            # the same state as one CRIM's, under the epoch of the last take-over (the news
            # of the decisions is published and dropped by the service, kept by the reference)
            assert {**final.to_data(), "epoch": ref.epoch, "news": []} == {
                **ref.to_data(),
                "news": [],
            }
        seqs = [seq for _, seq, _ in sink.log]
        assert seqs == list(range(1, ref.seq + 1)), "a decision was lost or executed twice"

    asyncio.run(go())


def test_roles_of_the_fixture_group_are_known() -> None:
    # Guards the fixture the tests above rely on: 2N, one primary and one secondary.
    brain = Brain.initial(TOPO, POLICY)
    for e in BOOT:
        brain.decide(e, 0.0)
    roles = [brain.crim.components[a].state for a in APPS]
    assert roles.count(AvailabilityState.PRIMARY) == 1
    assert roles.count(AvailabilityState.SECONDARY) == 1


def test_the_log_sink_logs_each_action(caplog: pytest.LogCaptureFixture) -> None:
    brain = Brain.initial(TOPO, POLICY)
    decision = brain.decide(ev.NodeJoined("n1"), 0.0)
    decision = brain.decide(ev.ComponentAvailable(APPS[0]), 0.0)
    caplog.set_level("INFO", logger="haos.services.crimd")
    asyncio.run(LogSink().carry_out(2, decision))
    assert decision.actions
    assert caplog.text.count("decision 2 action:") == len(decision.actions)


def test_a_master_with_a_corrupt_checkpoint_refuses_to_become_active() -> None:
    async def go() -> None:
        async with cluster() as h:
            await h.boot()
            # Node 2's replica holds garbage (as if written by an incompatible version).
            writer = await h.net[3].open(CHECKPOINT, Role.ACTIVE)
            await writer.write(SECTION, b'{"format": 99}')
            await writer.close()
            h.crash(1)
            await h.publish(MasterChanged(1, 2), ViceMasterChanged(2, 3))
            assert h.services[2].role is ServiceRole.REFUSED
            assert "format 99" in (h.services[2].refusal or "")

    asyncio.run(go())


def test_a_master_that_loses_quorum_stops_deciding_and_resumes_from_the_checkpoint() -> None:
    async def go() -> None:
        sink = Sink()
        async with cluster(sink) as h:
            await h.boot()
            before = h.services[1].brain
            assert before is not None
            snapshot = before.to_data()
            await h.publish(QuorumLost(), MasterChanged(1, None), ViceMasterChanged(2, None))
            assert [h.services[n].role for n in NODES] == [
                ServiceRole.STANDBY,
                ServiceRole.STANDBY,
                ServiceRole.IDLE,
            ]
            with pytest.raises(UnavailableError, match="standby"):
                await h.services[1].submit(ev.OperatorLock("n3"))
            await h.publish(QuorumRegained(), MasterChanged(None, 1), ViceMasterChanged(None, 2))
            after = h.services[1].brain
            assert [h.services[n].role for n in NODES] == [
                ServiceRole.ACTIVE,
                ServiceRole.STANDBY,
                ServiceRole.IDLE,
            ]
            assert after is not None and after.epoch > before.epoch
            assert {**after.to_data(), "epoch": before.epoch} == snapshot
            await h.services[1].submit(ev.OperatorLock("n3"))
        seqs = [seq for _, seq, _ in sink.log]
        assert seqs == list(range(1, len(seqs) + 1))

    asyncio.run(go())


# ---------------------------------------------------------------------------- epochs


def test_each_activation_claims_a_newer_epoch_and_resyncs_under_it() -> None:
    async def go() -> None:
        sink, epochs = Sink(), CountingEpochs()
        epochs.last = 41  # the repository's counter is ahead of anything checkpointed
        async with cluster(sink, epochs=epochs) as h:
            await h.boot()
            first = h.services[1].brain
            assert first is not None and first.epoch == 42
            await h.take_over()
            second = h.services[2].brain
            assert second is not None and second.epoch == 43
            assert [e for _, e in sink.epochs] == [42, 43]

    asyncio.run(go())


class FlippingEpochs:
    """Claims like a counter, but mastership moves to ``to`` while node ``node`` claims."""

    def __init__(self, live: dict[int, bool], node: int, to: int) -> None:
        self.inner, self.live, self.node, self.to = CountingEpochs(), live, node, to

    async def claim(self, node_id: int, at_least: int) -> int:
        epoch = await self.inner.claim(node_id, at_least)
        if node_id == self.node:
            self.live[self.node], self.live[self.to] = False, True
        return epoch


def test_a_take_over_is_abandoned_when_mastership_moves_during_it() -> None:
    async def go() -> None:
        sink = Sink()
        live = {1: True, 2: False, 3: False}
        async with cluster(sink, live=live) as h:
            await h.boot()
            h.crash(1)
            live[1] = False
            live[2] = True
            # Node 2 starts its take-over; the membership service makes node 3 master while
            # node 2 claims its epoch (a fuller view formed), before node 2 reads that notice.
            h.services[2]._epochs = FlippingEpochs(live, node=2, to=3)
            resyncs = len(sink.resyncs)
            await h.publish(MasterChanged(1, 2), ViceMasterChanged(2, 3))
            assert h.services[2].role is ServiceRole.STANDBY  # stepped back, replica kept
            assert h.services[2].brain is None
            assert len(sink.resyncs) == resyncs  # nothing was ordered under its epoch
            await h.publish(MasterChanged(2, 3), ViceMasterChanged(3, 2))
            async with asyncio.timeout(DEADLINE):
                await h.services[3].wait_role(ServiceRole.ACTIVE)
            assert primary(h.services[3].brain)  # continued from the checkpoint

    asyncio.run(go())


def test_a_master_that_is_no_longer_master_drops_its_decision_and_steps_down() -> None:
    async def go() -> None:
        sink = Sink()
        live = {1: True, 2: False, 3: False}
        async with cluster(sink, live=live) as h:
            await h.boot()
            executed = len(sink.log)
            live[1] = False  # a fuller view elected another node; its notice is not read yet
            with pytest.raises(UnavailableError, match="no longer the quorate master"):
                await h.services[1].submit(ev.OperatorLock("n3"))
            assert len(sink.log) == executed  # neither stored nor carried out
            assert h.services[1].role is ServiceRole.STANDBY

    asyncio.run(go())


def test_a_master_that_loses_mastership_while_storing_does_not_carry_the_decision_out() -> None:
    async def go() -> None:
        sink = Sink()
        live = {1: True, 2: False, 3: False}
        async with cluster(sink, live=live) as h:
            await h.boot()
            executed = len(sink.log)
            service = h.services[1]
            ckpt = service._ckpt
            assert ckpt is not None
            write = ckpt.write

            async def write_then_lose(*args: Any, **kwargs: Any) -> None:
                await write(*args, **kwargs)
                live[1] = False  # another node was elected while the state was being stored

            ckpt.write = write_then_lose  # type: ignore[method-assign]
            with pytest.raises(UnavailableError, match="stopped being the quorate master"):
                await service.submit(ev.OperatorLock("n3"))
            assert len(sink.log) == executed  # stored for the next master, not carried out
            assert service.role is ServiceRole.STANDBY
            stored = ckpt.read(SECTION)
            assert stored is not None and Brain.decode(TOPO, POLICY, stored).seq == executed + 1

    asyncio.run(go())
