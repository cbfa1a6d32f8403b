"""Benchmark: the cluster layer on a real 3-node corosync cluster (the harness).

Prints, over many trials: node-loss detection after SIGKILL and after SIGSTOP (time from the
fault to the ring without the node, on each survivor), p50/p99; CCR write -> watch
notification on every node and synchronous checkpoint writes (cluster daemons on every
node); then an idle soak counting false membership changes (by the CPG ring events and by
totem's gather counter).

    .venv/bin/python bench/cluster.py [--trials 30] [--soak 600]

Needs root, network namespaces and corosync (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from haos.cluster.dss import wire as envelope
from haos.cluster.dss.ccr import wire as ccr_wire
from haos.cluster.dss.ccr.model import Entry, Op
from haos.cluster.dss.ccr.watch import WatchEvent
from haos.cluster.dss.checkpoint import wire as crc_wire
from haos.cluster.dss.corosync.trace import EVENT
from haos.cluster.dss.wire import WireError
from haos.errors import ConfigError
from haoslab.harness import Cluster, ClusterSpec, Kind, soak
from haoslab.harness.config import add_totem_options, with_totem_options
from haoslab.harness.daemons import Daemons

DEADLINE = 15.0
NODES = (1, 2, 3)
TRACED = "trace-daemon"  # first argument: run as a traced cluster daemon (TracedDaemons)
Arrivals = dict[int, dict[str, float]]


def p99(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[98]
        if len(values) > 1
        else values[0]
    )


def detection(cluster: Cluster, victim: int, fault_at: float) -> list[float]:
    """Seconds from the fault until each survivor installed a ring without ``victim``."""
    survivors = [n for n in cluster.node_ids if n != victim]
    cluster.wait_for(
        lambda: all(victim not in cluster.members(n) for n in survivors),
        DEADLINE,
        f"survivors drop node {victim}",
    )
    out = []
    for n in survivors:
        firsts = [
            o.at
            for o in cluster.observations(fault_at)
            if o.node == n and o.kind is Kind.RING and victim not in o.members
        ]
        out.append(min(firsts) - fault_at)
    return out


def trial(cluster: Cluster, victim: int, how: str) -> list[float]:
    if how == "kill":
        at = cluster.kill(victim)
        values = detection(cluster, victim, at)
        cluster.restart(victim)
    else:
        at = cluster.freeze(victim)
        values = detection(cluster, victim, at)
        cluster.thaw(victim)
    cluster.wait_membership(set(cluster.node_ids), timeout=DEADLINE)
    # let knet settle after the rejoin, so the next trial starts from a steady cluster
    cluster.wait_until(lambda: False, 1.0)
    return values


# -- tracing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One tracepoint passed: when (ns), where, on which thread, about which keys, and the
    message kind for payloads (e.g. ``ccr.Order``, ``crc.AckMsg``)."""

    at: int
    point: str
    loop: bool
    kind: str
    keys: tuple[str, ...]


class Recorder:
    """The audit hook: keeps (time, point, thread, object) of every tracepoint."""

    def __init__(self) -> None:
        self.raw: list[tuple[int, str, bool, object]] = []
        self._main = threading.main_thread()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == EVENT:
            at = time.perf_counter_ns()
            self.raw.append((at, args[0], threading.current_thread() is self._main, args[1]))

    def dump(self, out: Path) -> None:
        lines = []
        for at, point, loop, obj in list(self.raw):
            kind, keys = describe(obj)
            lines.append(json.dumps([at, point, loop, kind, keys]))
        tmp = out.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(out)


def _entry_keys(entries: tuple[Entry, ...]) -> list[str]:
    return [f"rev:{e.revision}" for e in entries] + [c.key for e in entries for c in e.changes]


def describe(obj: object) -> tuple[str, list[str]]:
    """What the bench correlates a tracepoint's object on: (kind, keys)."""
    if isinstance(obj, bytes):
        return _payload(obj)
    if isinstance(obj, int):
        return "", [f"rev:{obj}", f"crc:{obj}"]
    if isinstance(obj, tuple) and obj and isinstance(obj[0], Entry):
        return "", _entry_keys(obj)
    if isinstance(obj, tuple) and obj and isinstance(obj[0], WatchEvent):
        return "", [e.key for e in obj]
    if isinstance(obj, tuple | list) and obj and isinstance(obj[0], Op):
        return "", [str(getattr(op, "key", getattr(op, "prefix", ""))) for op in obj]
    return "", []


def _payload(payload: bytes) -> tuple[str, list[str]]:
    try:
        msg = ccr_wire.decode_message(payload)
    except WireError:
        pass
    else:
        kind = f"ccr.{type(msg).__name__}"
        if isinstance(msg, ccr_wire.Order):
            return kind, _entry_keys(msg.entries)
        if isinstance(msg, ccr_wire.Applied):
            return kind, [f"upto:{msg.revision}"]
        if isinstance(msg, ccr_wire.Txn):
            return kind, [str(getattr(op, "key", "")) for op in msg.ops]
        return kind, []
    try:
        env = envelope.decode(payload)
        if env.service is envelope.Service.CRC:
            body = crc_wire.decode(env.kind, env.body)
            write_id = getattr(body, "write_id", None)
            keys = [] if write_id is None else [f"crc:{write_id}"]
            return f"crc.{type(body).__name__}", keys
        return f"{env.service.name.lower()}.{env.kind}", []
    except WireError:
        return "other", []


def load_trace(path: Path) -> Iterator[Record]:
    for line in path.read_text().splitlines():
        at, point, loop, kind, keys = json.loads(line)
        yield Record(at, point, loop, kind, tuple(keys))


def traced_daemon(argv: list[str]) -> int:
    """The cluster daemon, recording its tracepoints: ``OUT -- <clusterd arguments>``."""
    if len(argv) < 2 or argv[1] != "--":
        print(f"usage: {TRACED} OUT -- <clusterd arguments>", file=sys.stderr)
        return 2
    out = Path(argv[0])
    recorder = Recorder()
    sys.addaudithook(recorder.hook)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        recorder.dump(out)

    signal.signal(signal.SIGUSR1, dump)
    from haos.services import clusterd

    return clusterd.main(argv[2:])


class TracedDaemons(Daemons):
    """The cluster daemons run by :mod:`bench.tracing`: each keeps its tracepoints and writes
    them to ``n<N>.trace`` on SIGUSR1 (:meth:`collect`)."""

    def program(self, node: int) -> list[str]:
        return [sys.executable, __file__, TRACED, str(self.trace(node)), "--"]

    def trace(self, node: int) -> Path:
        return self.dir / f"n{node}.trace"

    def collect(self) -> dict[int, list[Record]]:
        """Every daemon's records so far."""
        for node, proc in self.procs.items():
            self.trace(node).unlink(missing_ok=True)
            proc.send_signal(signal.SIGUSR1)
        self.wait(lambda: all(self.trace(n).exists() for n in self.procs), 30.0, "trace files")
        return {n: list(load_trace(self.trace(n))) for n in self.procs}


# -- where the time goes ---------------------------------------------------------------------

Timeline = dict[tuple[int, str], int]  # (node, stage) -> first time (ns) it touched a key


def timelines(records: dict[int, list[Record]]) -> dict[str, Timeline]:
    """Each key's timeline. A stage is a tracepoint and, for payloads, the message kind;
    APPLIED messages name a revision, which the ORDERs map to their key."""
    rev_key: dict[str, str] = {}
    for recs in records.values():
        for r in recs:
            revs = [k for k in r.keys if k.startswith("rev:")]
            names = [k for k in r.keys if not k.startswith(("rev:", "upto:"))]
            if len(revs) == len(names):
                rev_key.update(zip(revs, names, strict=True))
    out: dict[str, Timeline] = defaultdict(dict)
    for node, recs in records.items():
        for r in recs:
            stage = f"{r.point} {r.kind}".strip() + ("" if r.loop else " (thread)")
            for key in {rev_key.get(k.replace("upto:", "rev:"), k) for k in r.keys}:
                if not key.startswith("rev:"):
                    out[key].setdefault((node, stage), r.at)
    return out


def breakdown(
    lines: Iterator[tuple[str, Timeline]], origin: tuple[int, str], notice: str
) -> list[float]:
    """Print each stage's delay after ``origin``; the delays of the ``notice`` stage."""
    stages: dict[tuple[int, str], list[float]] = defaultdict(list)
    for _key, line in lines:
        start = line.get(origin)
        if start is None:
            continue
        for where, at in line.items():
            stages[where].append((at - start) / 1e6)
    rows = sorted(stages.items(), key=lambda kv: (statistics.median(kv[1]), kv[0]))
    for (node, name), ms in rows:
        print(f"    n{node} {name:<42} {figures(ms)}  n={len(ms)}")
    return [ms for (_, name), values in stages.items() if name == notice for ms in values]


def report_ccr(tl: dict[str, Timeline], writer: int, keys: list[str]) -> None:
    role = "the sequencer" if writer == min(NODES) else "not the sequencer"
    print(f"  where the time goes, CCR write on n{writer}: ms after the put entered its daemon")
    watched = breakdown(((k, tl[k]) for k in keys if k in tl), (writer, "ccr.write"), "ccr.watch")
    if watched:
        print(
            f"CCR write on n{writer} ({role}) -> in-daemon watcher on every node  "
            f"n={len(watched)}  {figures(watched)}  (trace: from the put entering the writer's "
            "daemon to each daemon's watcher picking the event up)",
            flush=True,
        )


def report_checkpoint(tl: dict[str, Timeline], writer: int) -> None:
    print(f"  where the time goes, checkpoint write on n{writer}: ms after the write started")
    lines = ((k, line) for k, line in tl.items() if k.startswith("crc:"))
    breakdown(lines, (writer, "crc.write"), "crc.done")


def follow_watches(d: Daemons, prefix: str, count: int) -> tuple[Callable[[], None], Arrivals]:
    """Watch ``prefix`` on every node through the control socket; returns a join function
    and the arrival times (perf_counter) of each key on each node."""
    arrivals: Arrivals = {n: {} for n in NODES}
    opened = threading.Barrier(len(NODES) + 1)

    def follow(n: int) -> None:
        stream = d.control(n).stream("watch", prefix=prefix)
        next(stream)  # the stream is open
        opened.wait()
        for item in stream:
            arrivals[n][item["key"]] = time.perf_counter()
            if len(arrivals[n]) == count:
                return

    threads = [threading.Thread(target=follow, args=(n,), daemon=True) for n in NODES]
    for t in threads:
        t.start()
    opened.wait()

    def join() -> None:
        for t in threads:
            t.join(30)

    return join, arrivals


def ccr_writes(d: Daemons, writer: int, writes: int) -> list[str]:
    """Paced CCR writes on ``writer``; prints write -> watch event on every node (client)."""
    prefix = f"/bench/n{writer}"
    join, arrivals = follow_watches(d, prefix, writes)
    client = d.control(writer)
    sent: dict[str, float] = {}
    for i in range(writes):
        key = f"{prefix}/{i:05d}"
        sent[key] = time.perf_counter()
        client.request("put", key=key, value="x" * 64)
        time.sleep(0.002)  # paced: latency, not throughput
    join()
    lat = [(arrivals[n][k] - sent[k]) * 1000 for n in NODES for k in sent if k in arrivals[n]]
    role = "the sequencer" if writer == min(NODES) else "not the sequencer"
    print(
        f"CCR write on n{writer} ({role}) -> watch event on every node  n={len(lat)}  "
        f"{figures(lat)}  (client side, through the control socket)",
        flush=True,
    )
    return list(sent)


def checkpoint_writes(d: Daemons, writes: int) -> None:
    d.control(1).request("ckpt_open", name="bench", role="active")
    for n in (2, 3):
        d.control(n).request("ckpt_open", name="bench", role="standby")
    ms = [
        d.control(1).request("ckpt_write", name="bench", section="s", data=str(i), sync=True)[
            "elapsed_ms"
        ]
        for i in range(writes)
    ]
    assert d.control(3).request("ckpt_read", name="bench", section="s")["data"] == str(writes - 1)
    print(
        f"synchronous checkpoint write, 2 standbys     n={len(ms)}  {figures(ms)}  "
        "(inside the daemon)",
        flush=True,
    )


def repository_and_checkpoints(d: Daemons, writes: int, trace: bool) -> None:
    """CCR write -> watch notification on every node, written on the sequencer (n1) and on
    another node (n3); synchronous checkpoint writes on n1. With ``trace``, also where the
    time goes, from the daemons' tracepoints."""
    keys = {writer: ccr_writes(d, writer, writes) for writer in (1, 3)}
    checkpoint_writes(d, writes)
    if isinstance(d, TracedDaemons):
        tl = timelines(d.collect())
        for writer, written in keys.items():
            report_ccr(tl, writer, written)
        report_checkpoint(tl, 1)


def figures(ms: list[float]) -> str:
    return f"p50 {statistics.median(ms):.2f} ms  p99 {p99(ms):.2f} ms"


def main() -> None:
    if sys.argv[1:2] == [TRACED]:
        raise SystemExit(traced_daemon(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=30, help="kills and freezes each (30)")
    parser.add_argument("--soak", type=float, default=600.0, help="idle soak seconds (600)")
    parser.add_argument("--writes", type=int, default=500, help="CCR and checkpoint writes")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run the daemons with their tracepoints recorded; print where the time goes",
    )
    add_totem_options(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a killed node's broken connections are expected
    try:
        spec = with_totem_options(ClusterSpec(nodes=3), args)
    except ConfigError as e:
        parser.error(str(e))
    print(
        f"3 nodes, two knet links each, crypto on; token {spec.token_ms} ms, knet ping "
        f"interval {spec.knet_ping_interval_ms} ms, timeout {spec.knet_ping_timeout_ms} ms, "
        f"pong count {spec.knet_pong_count}; seqno_unchanged_const "
        f"{spec.seqno_unchanged_const or 'default'}, hold {spec.hold_ms or 'default'}"
    )
    with Cluster(spec) as cluster:
        for how in ("kill", "freeze"):
            values: list[float] = []
            for i in range(args.trials):
                victim = cluster.node_ids[i % len(cluster.node_ids)]
                values.extend(trial(cluster, victim, how))
            ms = [v * 1000 for v in values]
            p50 = statistics.median(ms)
            print(
                f"node loss by {how:<6} n={len(ms):<3} detection p50 {p50:6.1f} ms"
                f"  p99 {p99(ms):6.1f} ms  max {max(ms):6.1f} ms",
                flush=True,
            )
        kind = TracedDaemons if args.trace else Daemons
        with kind(cluster, {1: 30, 2: 20, 3: 10}) as daemons:
            repository_and_checkpoints(daemons, args.writes, args.trace)
        if args.soak > 0:
            cluster.wait_until(lambda: False, 5.0)  # settle after the last fault
            started = time.monotonic()
            report = soak(cluster, args.soak)
            print(
                f"idle soak {time.monotonic() - started:.0f} s: {report.total} false membership "
                f"changes (rings {report.rings}, gathers {report.gathers})"
            )


if __name__ == "__main__":
    main()
