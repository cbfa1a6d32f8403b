"""A stalled replica on a real cluster: the primary's synchronous checkpoint writes drop it
after the checkpoint service's bound instead of waiting, and it resynchronises when it runs
again.

The demo cluster (:class:`haoslab.demo.run.DemoCluster`: three systemd-nspawn nodes with
corosync, haos-clusterd and haos-agentd, and the 2N counter, which checkpoints every increment
synchronously on every node that hosts a member, persistently) serves a client that increments
without pause. The cluster daemon of a node that is not the primary's is stopped (SIGSTOP) for
3 s, well within its watchdog (5 s), and then continued.

The counter's checkpoint is persistent, so each increment also waits for its save to the
repository, which orders every write through its sequencer (the lowest member, the master's
node as a rule). Stopping the sequencer's daemon stops the repository for as long as it lasts;
the durable copy is a replica too, so the increments wait for it at most the same bound (from
their delivery, together with the drop), go on with the copy behind, and the copy catches up
once the daemon continues. Either way the client waits one bound, once.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haos.apps import counter
from haos.cluster.dss.checkpoint.service import DROP_AFTER, DURABLE_WAIT
from haos.errors import HaosError
from haoslab.demo.cluster import member
from haoslab.demo.run import Answer, DemoCluster
from haoslab.harness.systemd_cluster import CLUSTERD, REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SETTLE = 60.0  # seconds for the cluster to place the counter
# Seconds the cluster daemon is stopped: under its watchdog (5 s), but the watchdog's gate pets
# only every 2.5 s and only once the resumed loop has proven itself, so a stop that begins
# late in a round can still end in a watchdog restart (SIGABRT, the stacks in the journal).
STOPPED = 3.0
# What the longest gap may exceed the bound by: the write's own trips (agent, daemon, the
# group: tens of ms on this loaded 2-core machine), the DROP's trip, and the stopped daemon's
# catch-up after it continues (3 s of queued messages on a shared core).
MARGIN = 0.25
BOUND = max(DROP_AFTER, DURABLE_WAIT)  # both count from the write's delivery
CHECKPOINT = "group:counter"  # the counter group's checkpoint, as the agent names it
CLIENT_TIMEOUT = 10.0  # the client waits this long for an answer: a stall shows as a gap


class Client:
    """:mod:`haoslab.demo.probe` against one address, with a long answer timeout, so a stalled
    server shows as a gap between answers rather than as a reconnection."""

    def __init__(self, netns: Path, target: str) -> None:
        argv = ["nsenter", f"--net={netns}", "--", sys.executable, "-m", "haoslab.demo.probe"]
        argv += ["--targets", target, "--duration", "600", "--interval", "0.002"]
        argv += ["--timeout", str(CLIENT_TIMEOUT)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self.answers: list[Answer] = []
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            obj = json.loads(line)
            with self._lock:
                if "lost" in obj:
                    self.lost.append(str(obj.get("why", "")))
                else:
                    self.answers.append(Answer(obj["t"], obj["target"], obj["value"]))

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def answered_since(self, since: float, count: int) -> bool:
        return sum(1 for a in self.snapshot() if a.t > since) >= count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _placed(demo: DemoCluster) -> bool:
    return sorted(demo.roles().values()) == ["primary", "secondary", "spare"]


@pytest.fixture
def demo(cache: Path) -> Iterator[DemoCluster]:
    with DemoCluster(3, cache=cache, restart_max=1) as d:
        d.cluster.wait_for(
            lambda: _placed(d), SETTLE, "the counter has a primary, a secondary and a spare"
        )
        yield d


def _status(demo: DemoCluster) -> dict[str, object]:
    for name in demo.names:
        status = demo.cluster.status(name)
        if status is not None and status["master"] is not None:
            return status
    raise AssertionError("no node knows a master")


def _name(status: dict[str, object], node: object) -> str:
    names = status["node_names"]
    assert isinstance(names, dict)
    return str(names[str(node)])


def _master(demo: DemoCluster) -> str:
    status = _status(demo)
    return _name(status, status["master"])


def _sequencer(demo: DemoCluster) -> str:
    """The repository's sequencer: its view's lowest member."""
    status = _status(demo)
    members = status["members"]
    assert isinstance(members, list)
    return _name(status, min(int(m) for m in members))


def _gaps(answers: list[Answer], start: float, end: float) -> list[tuple[float, float]]:
    """(gap, when it began) between consecutive answers in [start, end], longest first."""
    window = [a for a in answers if start <= a.t <= end]
    gaps = [(b.t - a.t, a.t) for a, b in itertools.pairwise(window)]
    return sorted(gaps, reverse=True)


def _journal(demo: DemoCluster, node: str) -> str:
    return demo.cluster.node(node).journal(CLUSTERD, 400)


def _why_restarted(demo: DemoCluster, node: str) -> str:
    """The journal lines of ``node``'s cluster daemon that tell why it ended."""
    words = ("atchdog", "Main process exited", "Failed with result", "Scheduled restart")
    lines = _journal(demo, node).splitlines()
    return "\n".join(line for line in lines if any(w in line for w in words))


def _stored(demo: DemoCluster, node: str) -> int:
    """The counter's checkpointed value in ``node``'s replica (-1 while it cannot be read)."""
    try:
        answer = demo.cluster.control(node).request(
            "ckpt_read", name=CHECKPOINT, section=counter.SECTION
        )
    except HaosError:
        return -1
    data = answer.get("data")
    return -1 if data is None else int(base64.b64decode(str(data)))


def _stop_replica(demo: DemoCluster, primary: str, stalled: str) -> float:
    """Stop ``stalled``'s cluster daemon for 3 s while a client increments on ``primary``;
    check what must hold whatever the gap; return the client's longest gap (printed)."""
    watcher = next(n for n in demo.names if n not in (primary, stalled))
    assert demo.cluster.topo is not None
    pid = demo.cluster.main_pid(stalled)
    restarts = demo.cluster.restarts(stalled)
    client = Client(demo.cluster.topo.netns_path(int(watcher[1:])), demo.address(primary))
    try:
        demo.cluster.wait_for(lambda: client.answered_since(0.0, 200), 30.0, "the client served")
        before = time.monotonic()
        demo.cluster.wait_for(
            lambda: client.answered_since(before, 100), 30.0, "the client served steadily"
        )
        stopped_at = time.monotonic()
        demo.cluster.freeze_daemon(stalled)
        try:
            time.sleep(STOPPED)  # the fault's duration (the harness injects it by the clock)
        finally:
            try:
                demo.cluster.kill_daemon(stalled, CLUSTERD, signal.SIGCONT)
            except HaosError as e:  # it did not stay stopped: say why
                raise AssertionError(f"{e}\n{_why_restarted(demo, stalled)}") from e
        continued_at = time.monotonic()
        demo.cluster.wait_for(
            lambda: client.answered_since(continued_at + 2.0, 100),
            30.0,
            "the client served after the daemon continued",
        )
        answers = client.snapshot()
    finally:
        client.close()
    window = (stopped_at - 0.5, continued_at + 2.0)
    gaps = _gaps(answers, *window)
    assert gaps, "no answers around the stop"
    longest, when = gaps[0]
    served = [a for a in answers if window[0] <= a.t <= window[1]]
    print(
        f"\nstopped {stalled}'s cluster daemon for {continued_at - stopped_at:.2f} s; the"
        f" primary on {primary} answered {len(served)} increments in the"
        f" {window[1] - window[0]:.1f} s around it; longest gap {longest * 1e3:.0f} ms at"
        f" {when - stopped_at:+.2f} s; next: {[round(g * 1e3) for g, _ in gaps[1:6]]} ms;"
        f" bound {BOUND * 1e3:.0f} ms"
    )
    assert not client.lost, client.lost
    values = [a.value for a in answers]
    assert values == sorted(set(values)), "an answered value came twice or went back"
    # Not fenced, not restarted: the same daemon process went on.
    assert demo.cluster.main_pid(stalled) == pid, _why_restarted(demo, stalled)
    assert demo.cluster.restarts(stalled) == restarts, _why_restarted(demo, stalled)
    status = demo.cluster.status(stalled)
    assert status is not None and len(status["members"]) == 3
    # The writer said once that it dropped the replica, and the replica resynchronised...
    writer_log = _journal(demo, primary)
    drops = [
        line
        for line in writer_log.splitlines()
        if "dropped from the replica set" in line and CHECKPOINT in line
    ]
    print("\n".join(["drops logged by the writer:", *drops]))
    of_stalled = [line for line in drops if f"replica on node {stalled[1:]} " in line]
    assert len(of_stalled) == 1, drops  # once per drop, not once per write
    demo.cluster.wait_for(
        lambda: "resynchronised" in _journal(demo, stalled), 30.0, "the replica resynchronised"
    )
    # ...and holds the latest state: the value the primary's copy holds, at least the last
    # one answered (the client stopped, so nothing is written any more).
    last = values[-1]
    demo.cluster.wait_for(
        lambda: _stored(demo, stalled) == _stored(demo, primary) >= last,
        10.0,
        f"{stalled}'s replica holds the last increment ({last})",
    )
    return longest


def test_a_stopped_replica_daemon_is_dropped_and_the_primary_keeps_answering(
    demo: DemoCluster,
) -> None:
    """A replica's node that is neither the primary's nor the repository's sequencer (the
    master's, if that is one): the client waits one bound, once."""
    primary = demo.holder("primary")
    assert primary is not None
    sequencer, master = _sequencer(demo), _master(demo)
    candidates = [n for n in demo.names if n not in (primary, sequencer)]
    stalled = master if master in candidates else candidates[0]
    longest = _stop_replica(demo, primary, stalled)
    assert longest < BOUND + MARGIN, f"the primary stalled {longest:.3f} s"


def test_a_stopped_sequencer_daemon_is_dropped_and_the_primary_keeps_answering(
    demo: DemoCluster,
) -> None:
    """The repository's sequencer's node (the master's, as a rule): its replica is dropped
    and the durable copy falls behind within one bound together, the client waits that bound
    once, and the copy catches up (said once each) when the daemon continues."""
    primary = demo.holder("primary")
    assert primary is not None
    sequencer, master = _sequencer(demo), _master(demo)
    print(f"\nsequencer {sequencer}, master {master}, primary {primary}")
    if sequencer == primary:  # move the counter away first (a planned switchover)
        target = member(int(primary[1:]))
        answer = demo.cluster.control(primary).request(
            "operator", action="switchover", target=target
        )
        assert not answer["refused"], answer
        demo.cluster.wait_for(
            lambda: demo.holder("primary") not in (None, primary) and _placed(demo),
            SETTLE,
            "the counter switched over away from the sequencer",
        )
        primary = demo.holder("primary")
        assert primary is not None
    longest = _stop_replica(demo, primary, sequencer)
    assert longest < BOUND + MARGIN, f"the primary stalled {longest:.3f} s"
    lines = [line for line in _journal(demo, primary).splitlines() if CHECKPOINT in line]
    behind = [line for line in lines if "durable copy behind" in line]
    caught_up = [line for line in lines if "caught up" in line]
    print("\n".join(["the durable copy, as the writer logged it:", *behind, *caught_up]))
    assert len(behind) == 1 and len(caught_up) == 1, lines
