"""Planned switchovers back to back on the demo cluster: never two primaries serving at once.

The 2N counter of :class:`haoslab.demo.run.DemoCluster` (a member on each of three nspawn nodes)
gets bursts of ``switchover counter-si``, each issued as soon as the previous one returned,
while one client (:mod:`haoslab.demo.probe`) is pinned to each member's counter. Checked from
what the applications themselves say and do:

* the counters' ``primary: serving ... (at T)`` / ``no longer primary ... (at T)`` log lines
  (T on the monotonic clock every container shares) give each member's serving intervals:
  no two of them overlap;
* no value is answered twice across the three clients (a repeat is an answered increment
  lost: two primaries counted from the same checkpoint).

``HAOS_SWITCHOVER_BURSTS`` sets how many bursts run (default 3; the acceptance run is 10).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from haoslab.demo.run import DemoCluster, ProbeProcess
from haoslab.harness.systemd_cluster import CLUSTERD

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800)]

BURSTS = int(os.environ.get("HAOS_SWITCHOVER_BURSTS", "3"))
SWITCHOVERS = 20  # per burst
SETTLE = 60.0
SI = "counter-si"
SERVING = re.compile(r"primary: serving on \S+ from (\d+) \(at ([0-9.]+)\)")
STOPPED = re.compile(r"no longer primary \(counter at (\d+); at ([0-9.]+)\)")


@dataclass(frozen=True)
class Interval:
    node: str
    start: float
    end: float  # inf: still serving


def settled(demo: DemoCluster) -> None:
    demo.cluster.wait_for(
        lambda: sorted(demo.roles().values()) == ["primary", "secondary", "spare"],
        SETTLE,
        "the counter has a primary, a secondary and a spare",
    )


def pinned(demo: DemoCluster) -> dict[str, ProbeProcess]:
    """One client per member, talking to that member's counter only."""
    assert demo.cluster.topo is not None
    return {
        n: ProbeProcess(demo.cluster.topo.netns_path(int(n[1:])), [demo.address(n)])
        for n in demo.names
    }


def served_again(demo: DemoCluster, probes: dict[str, ProbeProcess], since: float) -> None:
    """Until the primary the CRIM names answers its client after ``since``."""

    def answered() -> bool:
        primary = demo.holder("primary")
        last = probes[primary].last() if primary is not None else None
        return last is not None and last.t > since

    demo.cluster.wait_for(answered, SETTLE, "the new primary serves its client")


def switch_over(demo: DemoCluster, count: int) -> list[float]:
    """``count`` switchovers, each as soon as the previous returned; how long each took."""
    took = []
    for k in range(count):
        node = demo.names[k % len(demo.names)]
        started = time.monotonic()
        answer = demo.cluster.control(node, 30.0).request(
            "operator", action="switchover", target=SI
        )
        took.append(time.monotonic() - started)
        assert not answer["refused"], answer
    return took


def intervals(demo: DemoCluster) -> list[Interval]:
    """Each member's serving intervals, from its counter's own log."""
    out: list[Interval] = []
    for node in demo.names:
        argv = ["journalctl", "--no-pager", "-o", "cat", "-u", demo.unit[node]]
        text = demo.cluster.node(node).run(argv, timeout=60.0).stdout
        start: float | None = None
        for line in text.splitlines():
            if m := SERVING.search(line):
                assert start is None, f"{node} began serving twice: {line}"
                start = float(m.group(2))
            elif (m := STOPPED.search(line)) and start is not None:
                out.append(Interval(node, start, float(m.group(2))))
                start = None
        if start is not None:
            out.append(Interval(node, start, float("inf")))
    return sorted(out, key=lambda i: i.start)


def overlaps(serving: list[Interval]) -> Iterator[tuple[Interval, Interval]]:
    """(earlier, later) where ``later`` began serving before ``earlier`` stopped."""
    for k, later in enumerate(serving):
        for earlier in serving[:k]:
            if earlier.node != later.node and later.start < earlier.end:
                yield earlier, later


def gave_up(demo: DemoCluster) -> int:
    """Switchovers the dispatcher carried on with unconfirmed (its wait ran out)."""
    argv = ["journalctl", "--no-pager", "-o", "cat", "-u", CLUSTERD]
    logs = (demo.cluster.node(n).run(argv, timeout=60.0).stdout for n in demo.names)
    return sum(text.count("not confirmed within") for text in logs)


def repeated(probes: dict[str, ProbeProcess]) -> dict[int, list[tuple[float, str]]]:
    """Values answered more than once, across every client: value -> (when, by whom)."""
    seen: dict[int, list[tuple[float, str]]] = {}
    for probe in probes.values():
        for answer in list(probe.answers):
            seen.setdefault(answer.value, []).append((answer.t, answer.target))
    return {v: who for v, who in seen.items() if len(who) > 1}


@dataclass(frozen=True)
class Burst:
    began: float
    ended: float  # the last switchover returned
    settled: float  # roles settled and the new primary served
    took: tuple[float, ...]  # each switchover command

    def holds(self, t: float) -> bool:
        return self.began <= t <= self.settled


def describe(
    bursts: list[Burst],
    serving: list[Interval],
    bad: list[tuple[Interval, Interval]],
    twice: dict[int, list[tuple[float, str]]],
    answered: int,
    unconfirmed: int,
) -> str:
    each = [t * 1e3 for b in bursts for t in b.took]
    longest = max(b.ended - b.began for b in bursts)
    worst = max((e.end - later.start for e, later in bad), default=0.0) * 1e3
    gaps = [b.start - a.end for a, b in itertools.pairwise(serving) if a.node != b.node]
    overlapped = sum(any(b.holds(later.start) for _, later in bad) for b in bursts)
    lost = sum(any(b.holds(t) for who in twice.values() for t, _ in who) for b in bursts)
    return (
        f"{len(bursts)} bursts of {SWITCHOVERS} switchovers (each {min(each):.0f}-"
        f"{max(each):.0f} ms, a burst {longest:.2f} s at most); {len(serving)} serving "
        f"intervals, {len(bad)} overlapping (the longest by {worst:.1f} ms) in "
        f"{overlapped} bursts; closest hand-over {min(gaps, default=0.0) * 1e3:.1f} ms; "
        f"{answered} answers, {len(twice)} values answered twice in {lost} bursts; "
        f"{unconfirmed} switchovers went on unconfirmed"
    )


def test_bursts_of_switchovers_never_let_two_primaries_serve_at_once(cache: Path) -> None:
    expected = 1 + BURSTS * SWITCHOVERS  # the first primary, then one per switchover
    with DemoCluster(3, cache=cache, restart_max=1) as demo:
        settled(demo)
        probes = pinned(demo)
        try:
            served_again(demo, probes, 0.0)
            bursts: list[Burst] = []
            for _ in range(BURSTS):
                began = time.monotonic()
                took = switch_over(demo, SWITCHOVERS)
                ended = time.monotonic()
                settled(demo)
                served_again(demo, probes, ended)
                bursts.append(Burst(began, ended, time.monotonic(), tuple(took)))
            demo.cluster.wait_for(
                lambda: len(intervals(demo)) >= expected, 10.0, "every role change logged"
            )
            serving = intervals(demo)
            bad = list(overlaps(serving))
            twice = repeated(probes)
            answered = sum(len(p.answers) for p in probes.values())
            served_by = {n for n, p in probes.items() if p.answers}
            unconfirmed = gave_up(demo)
        finally:
            for probe in probes.values():
                probe.close()
    summary = describe(bursts, serving, bad, twice, answered, unconfirmed)
    print(summary)
    assert len(served_by) >= 2, summary  # the clients were served from more than one member
    assert bad == [], f"{summary}\n" + "\n".join(f"{e} / {later}" for e, later in bad[:10])
    assert twice == {}, f"{summary}\n{dict(list(twice.items())[:10])}"
    assert unconfirmed == 0, summary  # each promotion waited for its own confirmation
