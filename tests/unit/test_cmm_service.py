"""The CMM service wired to the in-memory group bus, fake quorum sources and fencers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from _cmm import node_lefts, notices, until

from haos.cluster.cmm.model import CmmConfig, Demote, Publish, QuorumLost
from haos.cluster.cmm.service import CmmService
from haos.cluster.cmm.wire import decode_message, encode_fence_result
from haos.cluster.dss.wire import WireError
from haos.cluster.fencing.types import FenceResult
from haos.cluster.fencing.watchdog import MemoryWatchdog, SelfFencer
from haos.config.model import NodeSpec
from haos.errors import UnavailableError
from haoslab.fakes.fencing import ScriptedFencer
from haoslab.testing.bus import LocalBus

pytestmark = pytest.mark.timeout(30)

NODES = (
    NodeSpec("node1", 1, "n1", priority=10),
    NodeSpec("node2", 2, "n2", priority=20),
    NodeSpec("node3", 3, "n3", priority=5),
)


class FakeQuorum:
    """A quorum source the test sets; None breaks it."""

    def __init__(self, quorate: bool = True) -> None:
        self._changes: asyncio.Queue[bool | None] = asyncio.Queue()
        self._changes.put_nowait(quorate)

    def set(self, quorate: bool | None) -> None:
        self._changes.put_nowait(quorate)

    async def next_quorate(self) -> bool:
        quorate = await self._changes.get()
        if quorate is None:
            raise UnavailableError("votequorum went away")
        return quorate


def cluster(
    bus: LocalBus, fencer: ScriptedFencer, **settings: float
) -> tuple[dict[int, CmmService], dict[int, FakeQuorum]]:
    services, quorums = {}, {}
    for spec in NODES:
        quorums[spec.node_id] = FakeQuorum()
        config = CmmConfig(NODES, spec.node_id, **settings)  # type: ignore[arg-type]
        services[spec.node_id] = CmmService(
            config, bus.join(spec.node_id), quorums[spec.node_id], fencer, tick=0.02
        )
    return services, quorums


def test_the_new_master_fences_the_crashed_master_before_anyone_announces_node_left() -> None:
    async def scenario() -> None:
        bus, fencer = LocalBus(), ScriptedFencer()
        services, _ = cluster(bus, fencer)
        async with asyncio.TaskGroup() as tasks:
            runs = {n: tasks.create_task(s.run()) for n, s in services.items()}
            await until(lambda: all(s.master == 2 for s in services.values()), "master node2")
            async with services[1].listen() as on1, services[3].listen() as on3:
                fencer.gate = asyncio.Event()  # hold the fencing in flight
                runs[2].cancel()
                bus.crash(2)
                await until(lambda: fencer.calls == [("node2", "reboot")], "node1 fences")
                assert services[1].master == 1 and services[3].master == 1
                await asyncio.sleep(0.05)
                assert node_lefts(notices(on1)) == [] and node_lefts(notices(on3)) == []
                fencer.gate.set()  # fenced: the result goes to both over the group
                await until(lambda: services[3].state.pending_fences() == (), "result")
                await until(lambda: services[1].state.pending_fences() == (), "result")
                assert [e.node for e in node_lefts(notices(on1))] == ["node2"]
                assert [e.node for e in node_lefts(notices(on3))] == ["node2"]
            assert fencer.calls == [("node2", "reboot")]  # node3 never fenced
            for task in runs.values():
                task.cancel()

    asyncio.run(scenario())


def test_a_failed_fencing_is_retried_and_node_left_waits_for_success() -> None:
    async def scenario() -> None:
        bus, fencer = LocalBus(), ScriptedFencer({"node3": [False, False, True]})
        services, _ = cluster(bus, fencer, retry_first=0.05, retry_cap=0.1)
        async with asyncio.TaskGroup() as tasks:
            runs = {n: tasks.create_task(s.run()) for n, s in services.items()}
            await until(lambda: all(s.master == 2 for s in services.values()), "master node2")
            async with services[1].listen() as on1:
                runs[3].cancel()
                bus.crash(3)
                await until(lambda: services[1].state.pending_fences() == (3,), "node3 left")
                await until(lambda: services[1].state.pending_fences() == (), "fenced")
                assert fencer.calls == [("node3", "reboot")] * 3
                assert [e.node for e in node_lefts(notices(on1))] == ["node3"]
            for task in runs.values():
                task.cancel()

    asyncio.run(scenario())


def test_losing_votequorum_demotes_and_fires_the_watchdog() -> None:
    async def scenario() -> None:
        bus, fencer = LocalBus(), ScriptedFencer()
        quorum, watchdog = FakeQuorum(), MemoryWatchdog()
        config = CmmConfig(NODES, 1)
        endpoint = bus.join(1)
        bus.join(2)  # a majority of the three configured nodes is present
        service = CmmService(
            config,
            endpoint,
            quorum,
            fencer,
            self_fencer=SelfFencer(watchdog, self_fence_after=10),
            tick=0.01,
        )
        async with service.listen() as heard:
            task = asyncio.create_task(service.run())
            await until(lambda: service.state.quorate, "quorate")
            await until(lambda: watchdog.pets > 0, "petted")
            quorum.set(None)
            with pytest.raises(UnavailableError, match="votequorum went away"):
                await task
            seen = notices(heard)
        assert any(isinstance(n, Demote) for n in seen)
        assert any(isinstance(n, Publish) and isinstance(n.event, QuorumLost) for n in seen)
        assert watchdog.fired and not service.state.quorate

    asyncio.run(scenario())


class _BusyWatchdog(MemoryWatchdog):
    def arm(self) -> None:
        raise UnavailableError("cannot open watchdog /dev/watchdog-haos: Device or resource busy")


@pytest.mark.parametrize("required", [False, True])
def test_a_default_watchdog_that_cannot_be_armed_leaves_the_service_running_without_it(
    required: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        service = CmmService(
            CmmConfig(NODES, 1),
            LocalBus().join(1),
            FakeQuorum(),
            ScriptedFencer(),
            self_fencer=SelfFencer(_BusyWatchdog(), self_fence_after=10, required=required),
            tick=0.01,
        )
        task = asyncio.create_task(service.run())
        if required:  # configured in the file: the daemon stops and says why
            with pytest.raises(UnavailableError, match="resource busy"):
                await task
            return
        await until(lambda: service._self_fencer is None, "went on without it")
        assert not task.done() and "SELF-FENCING UNAVAILABLE" in caplog.text
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_cancelled_service_disarms_its_watchdog() -> None:
    async def scenario() -> None:
        watchdog = MemoryWatchdog()
        service = CmmService(
            CmmConfig(NODES, 1),
            LocalBus().join(1),
            FakeQuorum(),
            ScriptedFencer(),
            self_fencer=SelfFencer(watchdog, self_fence_after=10),
            tick=0.01,
        )
        task = asyncio.create_task(service.run())
        await until(lambda: watchdog.pets > 0, "petted")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert watchdog.calls[-1] == "disarm"

    asyncio.run(scenario())


def test_fence_results_travel_in_the_cmm_envelope() -> None:
    result = FenceResult("node2", "off", False, "fence_ipmilan off exited 1: timeout")
    assert decode_message(encode_fence_result(result)) == result
    with pytest.raises(WireError):
        decode_message(b"HA\x01\x01\x09\x00\x00\x00\x00\x00")  # unknown kind
    with pytest.raises(WireError):
        decode_message(b"garbage")


def test_a_lone_node_is_not_quorate_while_votequorum_still_says_so() -> None:
    """The CPG view can arrive before votequorum's new verdict: never fence on a stale one."""

    async def scenario() -> None:
        bus, fencer = LocalBus(), ScriptedFencer()
        quorum = FakeQuorum()
        service = CmmService(CmmConfig(NODES, 1), bus.join(1), quorum, fencer, tick=0.01)
        task = asyncio.create_task(service.run())
        try:
            await until(lambda: service.state.members == frozenset({1}), "view of node 1 alone")
            assert not service.state.quorate and service.master is None
            assert fencer.calls == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
