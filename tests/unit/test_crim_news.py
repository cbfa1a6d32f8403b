"""The availability service's news and availability records: what each decision tells the
cluster, the ASR's incidents inside the checkpointed state, and a take-over that neither loses
nor repeats the news of the last decision."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from _notices import Notices

from haos.clock import WallTime
from haos.cluster.asr.report import AvailabilityRecorder, report_json
from haos.cluster.cmm.model import MasterChanged, Publish, ViceMasterChanged
from haos.cluster.crim import events as ev
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.checkpoint import CheckpointService
from haos.cluster.dss.events.record import EventRing, Record
from haos.config.model import CorrelationPolicy
from haos.errors import ModelError
from haos.model.redundancy import RedundancyModel
from haos.model.reports import ErrorKind, ErrorReport, ServiceOutage, ServiceRestored
from haos.services.crimd import AvailabilityService, Brain, LogSink, ServiceRole, Settings
from haoslab.fakes.localnet import LocalNet
from haoslab.testing.builders import GroupPlan, generated_cluster

pytestmark = pytest.mark.timeout(60)
TOPO = Topology(generated_cluster(3, [GroupPlan("app", RedundancyModel.TWO_N, [1, 2, 3])]))
APPS = sorted(TOPO.groups["app"].members)
POLICY = CorrelationPolicy()
T0 = WallTime(1_765_000_000.0)


def at(seconds: float) -> WallTime:
    """``seconds`` after T0, on the wall clock."""
    return WallTime(T0 + seconds)


def booted() -> Brain:
    brain = Brain.initial(TOPO, POLICY, T0)
    for n in (1, 2, 3):
        brain.decide(ev.NodeJoined(f"n{n}"), T0)
    for app in APPS:
        brain.decide(ev.ComponentAvailable(app), at(1))
    brain.take_news()
    return brain


def roles(news: list[Record]) -> list[tuple[str, str, str]]:
    return [(r.subject, r.details["old"], r.details["new"]) for r in news if r.kind == "role"]


def fail_primary(brain: Brain, observed: float, decided: WallTime) -> str:
    """The primary's agent reports a definitive error: the CRIM fails it over at once."""
    old = brain.crim.primaries("app-si0", TOPO)[0]
    brain.report(ErrorReport(old, ErrorKind.HARD, observed, "agent", "exit 5"), decided)
    return old


def test_a_switchover_tells_the_operator_outcome_and_both_role_changes() -> None:
    brain = booted()
    old, new = APPS[0], APPS[1]
    assert brain.crim.primaries("app-si0", TOPO) == [old]
    brain.decide(ev.OperatorSwitchover("app-si0"), at(10))
    news = brain.take_news()
    assert news[0].kind == "operator" and news[0].details["outcome"] == "done"
    assert (old, "primary", "spare") in roles(news)
    assert (new, "secondary", "primary") in roles(news)
    promoted = next(r for r in news if r.kind == "role" and r.details["new"] == "primary")
    assert promoted.text == f"{new} now primary for app-si0 (was secondary) on n2"
    assert {r.seq for r in news} == {brain.seq} and [r.index for r in news] == list(
        range(len(news))
    )
    assert all(r.at == T0 + 10 for r in news)
    assert brain.take_news() == []


def test_a_fail_over_is_news_and_the_asr_counts_its_outage() -> None:
    brain = booted()
    old = fail_primary(brain, T0 + 19.5, at(20))
    news = brain.take_news()
    kinds = [r.kind for r in news]
    assert "recovery" in kinds and kinds[-2:] == ["outage", "restored"]
    assert (old, "primary", "offline") in roles(news)
    assert news[-1].details["by"] == [APPS[1]]
    row = brain.asr.report(at(100)).instances[0]
    assert (row.instance, row.incidents, row.down) == ("app-si0", 1, False)
    assert row.outage_total == pytest.approx(0.5)
    assert row.availability == pytest.approx(1 - 0.5 / 100)


def test_node_events_and_a_refused_operator_command_are_news() -> None:
    brain = booted()
    brain.decide(ev.OperatorLock("no-such-thing"), at(5))
    brain.decide(ev.NodeLeft("n3", at(6), how="fenced (off)"), at(7))
    news = brain.take_news()
    refused = news[0]
    assert (refused.kind, refused.subject, refused.details["outcome"]) == (
        "operator",
        "no-such-thing",
        "refused",
    )
    assert "unknown target" in refused.text and "refused: refused" not in refused.text
    left = next(r for r in news if r.kind == "node")
    assert (left.subject, left.details) == (
        "n3",
        {"change": "left", "how": "fenced (off)", "last_seen": T0 + 6},
    )
    assert left.text == "node n3 left (fenced (off))"
    assert (APPS[2], "spare", "offline") in roles(news)


def test_the_asr_records_survive_the_checkpoint_of_the_state() -> None:
    brain = booted()
    fail_primary(brain, T0 + 19.5, at(20))
    brain.asr.record(ServiceOutage("app-si0", T0 + 50, "still out"))  # open at encode time
    restored = Brain.decode(TOPO, POLICY, brain.encode(), now=at(999))
    assert restored.asr.report(at(100)) == brain.asr.report(at(100))
    assert report_json(restored.asr, at(100)) == report_json(brain.asr, at(100))
    assert restored.asr.start == T0  # not the time of the restore
    assert restored.asr.incidents("app-si0") == brain.asr.incidents("app-si0")
    assert restored.news == brain.news


def test_the_unpublished_news_survives_the_checkpoint_of_the_state() -> None:
    brain = booted()
    brain.decide(ev.OperatorSwitchover("app-si0"), at(10))
    restored = Brain.decode(TOPO, POLICY, brain.encode())
    assert restored.news == brain.news and restored.news


def test_a_state_stored_without_availability_records_measures_from_its_restore() -> None:
    brain = booted()
    data = brain.to_data()
    del data["asr"], data["news"]
    restored = Brain.decode(TOPO, POLICY, json.dumps(data).encode(), now=at(500))
    report = restored.asr.report(at(600))
    assert report.start == T0 + 500
    assert [r.instance for r in report.instances] == ["app-si0"]


@pytest.mark.parametrize(
    "asr",
    [
        {"start": "yesterday", "max_incidents": 10, "instances": {}},
        {"start": T0, "max_incidents": 0, "instances": {}},
        {"start": T0, "max_incidents": 10, "instances": {"app-si0": {"closed": [[1.0]]}}},
        {
            "start": T0,
            "max_incidents": 10,
            "instances": {"app-si0": {"closed": [], "open": [float("nan"), ""], "folded": None}},
        },
    ],
)
def test_malformed_availability_records_refuse_the_checkpoint(asr: object) -> None:
    data = {**booted().to_data(), "asr": asr}
    with pytest.raises(ModelError, match="availability records are malformed"):
        Brain.from_data(TOPO, POLICY, data)


def test_old_incidents_are_summed_up_and_the_figures_stay_exact() -> None:
    full = AvailabilityRecorder(["a"], 0.0)
    bounded = AvailabilityRecorder(["a"], 0.0, max_incidents=2)
    for i in range(5):
        for rec in (full, bounded):
            rec.record(ServiceOutage("a", 10.0 * i, "crash"))
            rec.record(ServiceRestored("a", 10.0 * i + 1 + i, ("b",)))
    assert len(bounded.incidents("a")) == 2
    assert bounded.report(100.0) == full.report(100.0)
    again = AvailabilityRecorder.from_data(json.loads(json.dumps(bounded.to_data())))
    assert again.report(100.0) == full.report(100.0)
    # a window reaching back before the summed-up incidents starts where they end
    window = bounded.report(100.0, since=5.0)
    assert window.start == 23.0  # the end of the last incident summed up
    assert window.instances[0].incidents == 2
    assert window.instances[0].outage_total == pytest.approx(4.0 + 5.0)


def test_a_report_since_counts_only_the_part_of_an_incident_in_the_window() -> None:
    rec = AvailabilityRecorder(["a"], 0.0)
    rec.record(ServiceOutage("a", 10.0))
    rec.record(ServiceRestored("a", 30.0))
    rec.record(ServiceOutage("a", 90.0))
    row = rec.report(100.0, since=20.0).instances[0]
    assert (row.incidents, row.down) == (2, True)
    assert row.outage_total == pytest.approx(10.0 + 10.0)
    assert row.availability == pytest.approx(1 - 20.0 / 80.0)
    assert rec.report(100.0, since=40.0).instances[0].incidents == 1


# ---------------------------------------------------------------------------- take-over


@dataclass
class Newsroom:
    """Every node's posted records, in order; ``lost`` posts never left node 1."""

    posts: dict[int, list[list[Record]]] = field(default_factory=dict)

    def sink(self, node: int) -> NodeNews:
        return NodeNews(self, node)


@dataclass
class NodeNews:
    room: Newsroom
    node: int

    def post(self, records: Sequence[Record]) -> None:
        self.room.posts.setdefault(self.node, []).append(list(records))


async def handled(queues: dict[int, Notices], *notices: object) -> None:
    for notice in notices:
        for q in queues.values():
            q.queue.put_nowait(Publish(notice, 0.0))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        for q in queues.values():
            await q.drained()


def test_a_new_master_posts_the_last_decisions_news_again_and_receivers_keep_it_once() -> None:
    """The old master stored decision N and posted its news, but the post never went out
    (it died): the new master posts it again first, so every node gets it once."""
    room = Newsroom()
    clock: list[WallTime] = [T0]

    async def go() -> None:
        async with LocalNet(CheckpointService) as net:
            await net.start_all(1, 2, 3)
            queues = {n: Notices() for n in (1, 2, 3)}
            services = {
                n: AvailabilityService(
                    Settings(n, TOPO, POLICY, auto_tick=False),
                    net[n],
                    queues[n],
                    LogSink(),
                    lambda: clock[0],
                    news=room.sink(n),
                )
                for n in (1, 2, 3)
            }
            tasks = {n: asyncio.create_task(s.run()) for n, s in services.items()}
            try:
                await handled(queues, MasterChanged(None, 1), ViceMasterChanged(None, 2))
                await handled(queues, *(ev.NodeJoined(f"n{n}") for n in (1, 2, 3)))
                for app in APPS:
                    await services[1].submit(ev.ComponentAvailable(app))
                clock[0] = at(10)
                await services[1].submit(ev.OperatorSwitchover("app-si0"))
                net.crash(1)
                tasks.pop(1).cancel()
                del queues[1]
                clock[0] = at(20)
                await handled(queues, MasterChanged(1, 2), ViceMasterChanged(2, 3))
                async with asyncio.timeout(5):
                    await services[2].wait_role(ServiceRole.ACTIVE)
                await handled(queues, ev.NodeLeft("n1"))
            finally:
                for task in tasks.values():
                    task.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)

    asyncio.run(go())
    old, new = room.posts[1], room.posts[2]
    assert new[0] == old[-1]  # the switchover's news, as the old master made it
    assert new[0][0].kind == "operator" and new[0][0].epoch < new[1][0].epoch
    assert any(r.kind == "node" and r.subject == "n1" for post in new for r in post)
    sent = [r for post in old for r in post]
    lost = [r for post in old[:-1] for r in post]
    after = [r for post in new for r in post]
    everywhere, missed = EventRing(), EventRing()
    for r in sent + after:
        everywhere.add(r)
    for r in lost + after:
        missed.add(r)
    assert everywhere.since() == missed.since() == sent + after[len(old[-1]) :]
    assert everywhere.dropped == len(old[-1]) and missed.dropped == 0
