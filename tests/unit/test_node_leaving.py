"""A node's clean stop: its primaries switched over by the ``leave`` intent, the daemon's
wait for it, the checks before it may announce its leave, and the agent's part."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.state import CrimState
from haos.cluster.dss.ccr import CcrConfig, CcrService, ManualQuorum, MemoryStore
from haos.errors import UnavailableError
from haos.model.redundancy import RedundancyModel as RM
from haos.model.states import AvailabilityState as S
from haos.services.agent.leave import AGENT, CLUSTER, ordered, stop_on_sigterm
from haos.services.clusterctl import ControlServer
from haos.services.clusterd import NodeDaemon, Settings
from haos.services.crimd import ServiceRole
from haos.services.intents import IntentFollower, submit_intent
from haos.services.leaving import (
    Departure,
    NodeLeaving,
    Stopped,
    carry_out_leave,
    leave_switchovers,
    refusal,
    stop_cleanly,
)
from haos.services.orderbook import Batch, NodeOrders, Running
from haoslab.testing.builders import GroupPlan, generated_cluster
from haoslab.testing.bus import LocalBus
from haoslab.testing.crimdriver import CrimDriver

pytestmark = pytest.mark.timeout(30)

A, B, C = (f"shelf1/slot{n}/node/demo" for n in (1, 2, 3))


def two_n() -> CrimDriver:
    d = CrimDriver(generated_cluster(3, [GroupPlan("demo", RM.TWO_N, [1, 2, 3])]))
    d.boot()
    assert d.roles("demo") == {A: "primary", B: "secondary", C: "spare"}
    return d


async def submit_to(d: CrimDriver, event: ev.Event) -> Decision:
    return d.go(event, d.now + 1.0)


def leave(d: CrimDriver, node: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return await carry_out_leave(
            d.topo, lambda: d.state, lambda e: submit_to(d, e), NodeLeaving(node)
        )

    return asyncio.run(go())


# -- the intent, on the CRIM ----------------------------------------------------------------


def test_leaving_switches_the_nodes_primary_over_to_its_secondary() -> None:
    d = two_n()
    assert leave_switchovers(d.topo, d.state, "n1") == [ev.OperatorSwitchover(A)]
    outcome = leave(d, "n1")
    assert not outcome["refused"] and "switchover" in outcome["reason"], outcome
    roles = d.roles("demo")
    assert roles[B] == "primary" and roles[A] != "primary"


def test_leaving_a_node_without_a_primary_moves_nothing() -> None:
    d = two_n()
    outcome = leave(d, "n3")
    assert not outcome["refused"] and "no primary on n3" in outcome["reason"]
    assert d.roles("demo") == {A: "primary", B: "secondary", C: "spare"}


def test_leaving_an_unknown_node_is_refused() -> None:
    outcome = leave(two_n(), "n9")
    assert outcome["refused"] and "unknown node 'n9'" in outcome["reason"]


def test_leave_without_an_active_service_is_unavailable() -> None:
    d = two_n()

    async def go() -> None:
        await carry_out_leave(d.topo, lambda: None, lambda e: submit_to(d, e), NodeLeaving("n1"))

    with pytest.raises(UnavailableError):
        asyncio.run(go())


class ActiveService:
    """The parts of an active AvailabilityService the intent follower uses, on a real CRIM."""

    role = ServiceRole.ACTIVE

    def __init__(self, d: CrimDriver) -> None:
        self._d = d
        self.topology = d.topo

    @property
    def brain(self) -> ActiveService:
        return self

    @property
    def crim(self) -> CrimState:
        return self._d.state

    async def submit(self, event: ev.Event) -> Decision:
        return await submit_to(self._d, event)

    async def wait_role(self, role: ServiceRole, *, left: bool = False) -> None:
        if (self.role is role) is left:
            await asyncio.Event().wait()  # never: this service stays active


def test_the_leave_intent_goes_through_the_repository_like_any_other() -> None:
    d = two_n()

    async def go() -> dict[str, Any]:
        ccr = CcrService(LocalBus().join(1), MemoryStore(), ManualQuorum(True), CcrConfig(1))
        await ccr.load()
        service = ActiveService(d)
        follower = IntentFollower(ccr, service)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(ccr.run())]
            await ccr.wait_ready(timeout=5.0)
            tasks.append(tg.create_task(follower.run()))
            try:
                return await submit_intent(ccr, "leave", "n1", "n1", timeout=5.0)
            finally:
                for t in tasks:
                    t.cancel()

    outcome = asyncio.run(go())
    assert outcome["state"] == "done" and not outcome["refused"], outcome
    assert d.roles("demo")[B] == "primary"


# -- the cluster daemon's side ------------------------------------------------------------------


def test_a_node_may_announce_its_leave_only_when_prepared_without_agent_and_primary() -> None:
    assert refusal(True, 0, []) is None
    assert "no leave was prepared" in (refusal(False, 0, []) or "")
    assert "agent is still connected" in (refusal(True, 1, []) or "")
    assert "agent has not ended" in (refusal(True, 0, None) or "")
    assert "still primary when the agent ended: c1" in (refusal(True, 0, ["c1"]) or "")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_prepare_waits_until_the_demotion_reached_this_node() -> None:
    async def go() -> tuple[dict[str, Any], str | None]:
        orders = NodeOrders("n1")
        orders.receive(Batch(1, roles={A: S.PRIMARY}, epoch=1))
        orders.ran(A, Running("primary", 0.0))

        async def submit(within: float) -> dict[str, Any]:
            async def demoted() -> None:  # the master's order, then the agent's word
                await asyncio.sleep(0.05)
                orders.receive(Batch(2, roles={A: S.SPARE}, epoch=1))
                await asyncio.sleep(0.05)
                orders.ran(A, Running("spare", 0.1))

            asyncio.get_running_loop().create_task(demoted())
            return {"state": "done", "refused": False, "reason": "switched"}

        departure = Departure("n1", orders, submit, lambda: 0, Clock())
        assert "no leave was prepared" in (departure.refusal() or "")
        answer = await departure.prepare(5.0)
        assert "agent has not ended" in (departure.refusal() or "")
        departure.agent_left()
        return answer, departure.refusal()

    answer, why = asyncio.run(go())
    assert answer["prepared"] and answer["primaries"] == [], answer
    assert why is None


def test_a_primary_still_here_when_the_bound_passes_forbids_the_announcement() -> None:
    async def go() -> tuple[dict[str, Any], str | None]:
        orders = NodeOrders("n1")
        orders.receive(Batch(1, roles={A: S.PRIMARY}, epoch=1))
        clock = Clock()

        async def submit(within: float) -> dict[str, Any]:
            clock.now = 10.0  # no master carried it out: the bound passes
            raise UnavailableError("intent written, but not carried out")

        departure = Departure("n1", orders, submit, lambda: 0, clock)
        answer = await departure.prepare(5.0)
        return answer, departure.refusal()

    answer, why = asyncio.run(go())
    assert not answer["prepared"] and answer["primaries"] == [A]
    assert answer["outcome"]["refused"]
    assert why is not None and "no leave was prepared" in why


def test_a_promotion_that_came_after_the_agent_ended_reached_nobody() -> None:
    """A peer leaving at the same time may have its primary switched over to this node
    after this node's agent ended: nothing here can carry that out, so the leave stands; a
    promotion the agent was still there for forbids it."""

    async def go(promoted_before_hangup: bool) -> str | None:
        orders = NodeOrders("n1")
        orders.receive(Batch(1, roles={A: S.SECONDARY}, epoch=1))

        async def submit(within: float) -> dict[str, Any]:
            return {"state": "done", "refused": False, "reason": "no primary on n1"}

        departure = Departure("n1", orders, submit, lambda: 0, Clock())
        await departure.prepare(1.0)
        promotion = Batch(2, roles={A: S.PRIMARY}, epoch=1)
        if promoted_before_hangup:
            orders.receive(promotion)
        departure.agent_left()
        orders.agent_gone()
        if not promoted_before_hangup:
            orders.receive(promotion)
        return departure.refusal()

    assert asyncio.run(go(promoted_before_hangup=False)) is None
    assert "still primary when the agent ended" in (asyncio.run(go(True)) or "")


def test_stopping_announces_the_leave_only_when_nothing_forbids_it() -> None:
    async def go(agents: int) -> tuple[str, list[float]]:
        orders = NodeOrders("n1")
        announced: list[float] = []

        async def submit(within: float) -> dict[str, Any]:
            return {"state": "done", "refused": False, "reason": "nothing to move"}

        async def announce(within: float) -> None:
            announced.append(within)

        departure = Departure("n1", orders, submit, lambda: agents, Clock())
        await departure.prepare(1.0)
        departure.agent_left()
        return await stop_cleanly(departure, announce, 3.0), announced

    said, announced = asyncio.run(go(agents=0))
    assert announced == [3.0] and "leave announced" in said
    said, announced = asyncio.run(go(agents=1))
    assert announced == [] and "agent is still connected" in said


def test_a_leave_the_group_did_not_deliver_is_reported_as_not_announced() -> None:
    async def go() -> str:
        async def submit(within: float) -> dict[str, Any]:
            return {"state": "done", "refused": False, "reason": ""}

        async def announce(within: float) -> None:
            raise UnavailableError("not delivered within 3 s")

        departure = Departure("n1", NodeOrders("n1"), submit, lambda: 0, Clock())
        await departure.prepare(1.0)
        departure.agent_left()
        return await stop_cleanly(departure, announce, 3.0)

    assert "leave not announced" in asyncio.run(go())


# -- the agent's side -----------------------------------------------------------------------


def test_components_stop_after_the_agent_and_before_the_cluster_daemon_at_shutdown() -> None:
    # systemd stops in the reverse of the start order: Before= the agent is stopped after it
    assert ordered({"Description": "x"}) == {
        "Description": "x",
        "Before": [AGENT],
        "After": [CLUSTER],
    }
    assert ordered({"Before": "other.service"})["Before"] == ["other.service", AGENT]
    assert ordered({"After": [CLUSTER]})["After"] == [CLUSTER]
    with pytest.raises(ValueError, match="Before= must name units"):
        ordered({"Before": 3})


@pytest.mark.parametrize(("state", "prepares"), [("stopping", True), ("running", False)])
def test_the_agent_prepares_the_leave_on_sigterm_only_while_the_system_stops(
    state: str, prepares: bool
) -> None:
    asked: list[float] = []

    async def system_state() -> str:
        return state

    async def prepare(within: float) -> dict[str, Any]:
        asked.append(within)
        return {"prepared": True}

    async def go() -> None:
        signalled = asyncio.Event()
        signalled.set()
        await stop_on_sigterm(system_state, prepare, signalled)

    with pytest.raises(Stopped):
        asyncio.run(go())
    assert bool(asked) is prepares


def test_the_cluster_daemon_sees_its_agent_hang_up_without_waiting_for_an_order(
    tmp_path: Path,
) -> None:
    """A stopping node announces its leave only once its agent is gone: the agent's feed
    must end when the agent hangs up, not at the next order (there may be none)."""
    config = generated_cluster(3, [GroupPlan("demo", RM.TWO_N, [1, 2, 3])])
    me = config.nodes[0]
    settings = Settings(tmp_path / "cluster.toml", me.name, tmp_path, tmp_path / "control.sock")
    daemon = NodeDaemon(settings, config, me)

    async def go() -> list[int]:
        seen = []
        server = await ControlServer(daemon).serve(str(settings.control))
        async with server:
            reader, writer = await asyncio.open_unix_connection(str(settings.control))
            writer.write(b'{"op": "orders"}\n')
            assert json.loads(await reader.readline()) == {"ok": True}
            seen.append(daemon.agents)
            writer.close()  # the agent ends; no order comes meanwhile
            async with asyncio.timeout(5.0):
                while daemon.agents:
                    await asyncio.sleep(0.01)
            seen.append(daemon.agents)
        return seen

    assert asyncio.run(go()) == [1, 0]
