"""The availability service's events on every node, and its availability report across a
fail-over of the master.

* Three cluster daemons on real corosync with a 2N group (the components' agents played by
  the test through the control sockets, as in ``test_decisions``): ``haosctl events --follow``
  runs as the real command on every node and shows a switchover's role changes, in the same
  order everywhere; the client library reads the same events.
* The demo cluster (three systemd-nspawn nodes, the 2N demo counter, no restart in place):
  the counter's primary process is killed and failed over; ``haosctl report`` shows the outage,
  and still shows it after the master's node lost power and another node took over.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from haos.client import ClusterEvent, cluster_events
from haos.services.control import ControlError
from haoslab.demo.run import DemoCluster
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

PRIORITIES = {1: 30, 2: 20, 3: 10}
GROUP = "".join(
    f'\n[[components]]\nname = "shelf1/slot{n}/node/app"\nclass = "application"\n'
    for n in (1, 2, 3)
) + (
    '\n[[service_groups]]\nname = "app"\nredundancy = "2N"\nmembers = ['
    + ", ".join(f'"shelf1/slot{n}/node/app"' for n in (1, 2, 3))
    + ']\n\n[[service_instances]]\nname = "app-si"\ngroup = "app"\n'
)
HAOSCTL = [sys.executable, "-m", "haos.cli.main"]


def comp(n: int) -> str:
    return f"shelf1/slot{n}/node/app"


class Follower:
    """``haosctl events --follow --json`` as a process; its lines are read as they come."""

    def __init__(self, control: Path, since: float) -> None:
        iso = datetime.fromtimestamp(since).isoformat()
        argv = [*HAOSCTL, "events", "--follow", "--json", "--since", iso, "--control", str(control)]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.records.append(json.loads(line))

    def seen(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def close(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err.decode()


@pytest.fixture
def three() -> Iterator[tuple[Cluster, Daemons]]:
    with (
        Cluster(ClusterSpec(nodes=3)) as cluster,
        Daemons(cluster, PRIORITIES, extra_toml=GROUP) as daemons,
    ):
        yield cluster, daemons


def roles(d: Daemons) -> dict[str, str]:
    crim = d.control(3).request("crim")
    return {comp(n): crim["crim"]["components"][comp(n)]["state"] for n in (1, 2, 3)}


def announce(d: Daemons, node: int) -> None:
    def accepted() -> bool:
        try:
            answer = d.control(node).request("event", kind="available", component=comp(node))
        except ControlError:
            return False
        return not answer["refused"]

    d.wait(accepted, 15, f"{comp(node)} accepted as available")


def changes(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (r["subject"], r["details"]["old"], r["details"]["new"])
        for r in records
        if r["kind"] == "role" and r["subject"].endswith("/app")
    ]


def test_every_node_shows_a_switchovers_role_changes_with_haosctl_events_follow(
    three: tuple[Cluster, Daemons],
) -> None:
    _, d = three
    for n in (1, 2, 3):
        announce(d, n)
    d.wait(lambda: sorted(roles(d).values()) == ["primary", "secondary", "spare"], 15, "2N")
    before = roles(d)
    old = next(c for c, s in before.items() if s == "primary")
    new = next(c for c, s in before.items() if s == "secondary")
    started = time.time()
    followers = {n: Follower(d.dir / f"n{n}.sock", started) for n in (1, 2, 3)}
    try:
        answer = d.control(3).request("operator", action="switchover", target="app-si", timeout=30)
        assert not answer["refused"], answer
        wanted = {(old, "primary", "spare"), (new, "secondary", "primary")}
        for n, f in followers.items():
            d.wait(lambda f=f: wanted <= set(changes(f.seen())), 15, f"n{n} shows the switchover")
        seen = {n: f.seen() for n, f in followers.items()}
    finally:
        errors = {n: f.close() for n, f in followers.items()}
    assert not any(errors.values()), errors
    keys = {n: [(r["epoch"], r["seq"], r["index"]) for r in s] for n, s in seen.items()}
    shortest = min(len(k) for k in keys.values())
    assert keys[1][:shortest] == keys[2][:shortest] == keys[3][:shortest]  # one order
    operator = next(r for r in seen[1] if r["kind"] == "operator")
    assert operator["details"]["outcome"] == "done" and operator["at"] >= started - 1
    # In words, on a node that is not the master, and through the client library
    text = subprocess.run(
        [*HAOSCTL, "events", "--control", str(d.dir / "n3.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    print(text)
    node = "n" + new.split("/")[1].removeprefix("slot")
    assert f"{new} now primary for app-si (was secondary) on {node}" in text, text
    assert "operator switchover app-si: done" in text, text

    async def read() -> list[ClusterEvent]:
        return [e async for e in cluster_events(control=str(d.dir / "n2.sock"), follow=False)]

    by_client = asyncio.run(read())
    assert (new, "secondary", "primary") in {
        (e.subject, e.details.get("old"), e.details.get("new")) for e in by_client
    }
    # The membership notices stay where they were: the same op without 'cluster'.
    notices = d.control(1).request("notices")["notices"]
    assert any(n["notice"].get("event", {}).get("type") == "NodeJoined" for n in notices)
    stream = d.control(1).stream("events")
    assert isinstance(stream, Generator)
    assert next(stream) == {"ok": True}
    stream.close()


# --------------------------------------------------------------------------- report


def report(demo: DemoCluster, node: str) -> dict[str, Any] | None:
    """``haosctl report --json`` run against ``node``'s daemon; None while it cannot say."""
    control = f"/proc/{demo.cluster.node(node).leader}/root/run/haos/control.sock"
    done = subprocess.run(
        [*HAOSCTL, "report", "--json", "--control", control, "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        return None
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def counter_row(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return next((r for r in answer["instances"] if r["instance"] == "counter-si"), None)


def test_report_shows_a_fail_overs_outage_and_still_does_after_the_master_lost_power(
    cache: Path,
) -> None:
    with DemoCluster(3, cache=cache, restart_max=0) as demo:
        demo.cluster.wait_for(demo.placed, 90, "the counter placed")
        primary = demo.holder("primary")
        assert primary is not None
        killed = time.time()
        demo.kill_component(primary)  # no restart in place: the ladder fails it over
        found: list[dict[str, Any]] = []

        def outage_over() -> bool:
            row = counter_row(report(demo, next(n for n in demo.names if n != primary)))
            if row is None or row["down"] or not row["recent"]:
                return False
            found[:] = [i for i in row["recent"] if i["started"] >= killed - 1]
            return bool(found) and found[0]["ended"] is not None

        demo.cluster.wait_for(outage_over, 60, "the report shows the fail-over's outage")
        incident = found[0]
        assert 0.0 < incident["outage_ms"] < 10_000.0, incident
        assert incident["ended"] - incident["started"] == pytest.approx(
            incident["outage_ms"] / 1000.0
        )
        print(f"fail-over outage: {incident['outage_ms']:.1f} ms")
        status = demo.cluster.control(primary).request("status")
        master = status["node_names"][str(status["master"])]
        demo.power_cut(master)
        witness = next(n for n in demo.names if n != master)

        def taken_over() -> bool:
            crim = demo.crim()
            return crim is not None and crim["master"] != master

        demo.cluster.wait_for(taken_over, 60, f"another master after {master}'s power cut")
        after: list[dict[str, Any]] = []

        def still_shown() -> bool:
            row = counter_row(report(demo, witness))
            after[:] = [] if row is None else row["recent"]
            return row is not None

        demo.cluster.wait_for(still_shown, 60, "the new master's report")
        kept = [i for i in after if i["started"] == incident["started"]]
        assert kept, (incident, after)
        assert kept[0]["ended"] == incident["ended"]
        assert kept[0]["outage_ms"] == pytest.approx(incident["outage_ms"])
        text = subprocess.run(
            [
                *HAOSCTL,
                "report",
                "--control",
                f"/proc/{demo.cluster.node(witness).leader}/root/run/haos/control.sock",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "counter-si" in text and f"{incident['outage_ms']:.1f} ms" in text, text
        print(text)
