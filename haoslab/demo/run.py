"""The demo cluster at work: used by ``haosctl demo`` and ``bench/failover.py``.

:class:`DemoCluster` boots a :class:`~haoslab.harness.systemd_cluster.SystemdCluster`
(real systemd, corosync, haos-clusterd and haos-agentd on every node) with the 2N counter of
:mod:`haoslab.demo.cluster`, and drives it as a user would: a :class:`ProbeProcess` (the counter's
client, :mod:`haoslab.demo.probe`) runs in a node's network namespace and tells when the service
answers and from where; faults are injected from the host with their times taken on the same
monotonic clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haos.errors import HaosError
from haos.proc import run
from haoslab.demo.cluster import PORT, demo_toml, member
from haoslab.harness.config import ClusterSpec
from haoslab.harness.errors import HarnessError, HarnessTimeout
from haoslab.harness.netns import Names
from haoslab.harness.systemd_cluster import NODEROOT_CACHE, SystemdCluster

_POLL = 0.02


def unit_of(component: str) -> str:
    """The transient unit the agent runs a client component in."""
    escaped = run(["systemd-escape", component], timeout=10).strip()
    return f"haos-comp-{escaped}.service"


def host_pid(leader: int, inner: int) -> int:
    """The host's pid of process ``inner`` of the container whose PID 1 is ``leader``."""
    ns = os.readlink(f"/proc/{leader}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                        return int(entry)
        except (OSError, ValueError):
            continue
    raise HarnessError(f"no process {inner} in the container of pid {leader}")


@dataclass(frozen=True)
class Answer:
    t: float
    target: str
    value: int


class ProbeProcess:
    """:mod:`haoslab.demo.probe` in a network namespace; its answers, as they come."""

    def __init__(self, netns: Path, targets: list[str]) -> None:
        argv = ["nsenter", f"--net={netns}", "--", sys.executable, "-m", "haoslab.demo.probe"]
        argv += ["--targets", ",".join(targets), "--duration", "3600"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self.answers: list[Answer] = []
        self.lost: list[tuple[float, str, str]] = []  # (t, target, why)
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            obj = json.loads(line)
            with self._cond:
                if "lost" in obj:
                    self.lost.append((obj["t"], obj["lost"], obj.get("why", "")))
                else:
                    self.answers.append(Answer(obj["t"], obj["target"], obj["value"]))
                self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Answer]], Answer | None], timeout: float) -> Answer:
        with self._cond:
            deadline = time.monotonic() + timeout
            while (found := predicate(self.answers)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    raise HarnessTimeout(f"the counter did not answer as expected in {timeout} s")
                self._cond.wait(left)
            return found

    def last(self) -> Answer | None:
        with self._cond:
            return self.answers[-1] if self.answers else None

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


def first_from_other(since: float, old: str) -> Callable[[list[Answer]], Answer | None]:
    """The first answer after ``since`` from a target other than ``old``."""

    def find(answers: list[Answer]) -> Answer | None:
        return next((a for a in answers if a.t > since and a.target != old), None)

    return find


def placed(roles: Mapping[str, str], nodes: Sequence[str]) -> bool:
    """Whether ``roles`` (node → its counter member's state) is the 2N counter placed in
    full on ``nodes``: one primary, one secondary, and every other node a spare."""
    expected = ["primary", "secondary", *["spare"] * (len(nodes) - 2)]
    return set(roles) == set(nodes) and sorted(roles.values()) == sorted(expected)


class DemoCluster:
    def __init__(
        self,
        nodes: int = 3,
        *,
        cache: Path = NODEROOT_CACHE,
        hold_time: str = "0s",
        restart_max: int = 1,
        audit_period: float = 0.5,
        audit_timeout: float = 0.25,
        component_probation: str = "60s",
        fence_action: str = "reboot",
        trace_dir: Path | None = None,
        spec: ClusterSpec | None = None,
    ) -> None:
        self.spec = spec or ClusterSpec(nodes=nodes)
        toml = demo_toml(
            self.spec,
            hold_time=hold_time,
            restart_max=restart_max,
            audit_period=audit_period,
            audit_timeout=audit_timeout,
            component_probation=component_probation,
        )
        self.cluster = SystemdCluster(
            self.spec,
            cache=cache,
            agent=True,
            config_toml=toml,
            fence=True,
            fence_action=fence_action,
            trace_dir=trace_dir,
        )
        self.unit = {f"n{n}": unit_of(member(n)) for n in self.spec.node_ids}

    def __enter__(self) -> DemoCluster:
        self.cluster.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.__exit__(None, None, None)

    @property
    def names(self) -> tuple[str, ...]:
        return self.cluster.names

    def address(self, node: str) -> str:
        assert self.cluster.topo is not None
        names: Names = self.cluster.topo.names
        return f"{names.address(int(node[1:]), 0)}:{PORT}"

    def crim(self) -> dict[str, Any] | None:
        for name in self.names:
            with contextlib.suppress(HaosError, KeyError):
                return self.cluster.control(name).request("crim")
        return None

    def roles(self) -> dict[str, str]:
        """node → the state of its counter member, per the CRIM."""
        crim = self.crim()
        if crim is None:
            return {}
        comps = crim["crim"]["components"]
        return {f"n{n}": comps[member(n)]["state"] for n in self.spec.node_ids}

    def holder(self, role: str) -> str | None:
        return next((n for n, s in self.roles().items() if s == role), None)

    def placed(self) -> bool:
        """Whether the counter is placed in full (see :func:`placed`)."""
        return placed(self.roles(), self.names)

    def wait_placed(self, timeout: float = 60.0) -> float:
        """Until :meth:`placed`; the seconds waited (HarnessTimeout with the journals)."""
        spares = len(self.names) - 2
        what = f"the counter placed: a primary, a secondary and {spares} spare(s)"
        return self.cluster.wait_for(self.placed, timeout, what)

    def wait_settled(self, timeout: float = 60.0) -> float:
        """Until the counter has a primary and a secondary; the seconds waited."""

        def settled() -> bool:
            states = list(self.roles().values())
            return "primary" in states and "secondary" in states

        return self.cluster.wait_for(settled, timeout, "the counter has a primary and a secondary")

    def probe_from(self, node: str) -> ProbeProcess:
        assert self.cluster.topo is not None
        targets = [self.address(n) for n in self.names]
        return ProbeProcess(self.cluster.topo.netns_path(int(node[1:])), targets)

    def component_pid(self, node: str) -> int:
        """The host pid of ``node``'s counter process."""
        inner = self.cluster.main_pid(node, self.unit[node])
        if inner == 0:
            raise HarnessError(f"the counter on {node} is not running")
        return host_pid(self.cluster.node(node).leader, inner)

    def kill_component(self, node: str, sig: signal.Signals = signal.SIGKILL) -> float:
        """Signal ``node``'s counter process; the monotonic time just before."""
        pid = self.component_pid(node)
        at = time.monotonic()
        os.kill(pid, sig)
        return at

    def power_cut(self, node: str) -> float:
        at = time.monotonic()
        self.cluster.power_cut(node)
        return at


@contextlib.contextmanager
def probing(demo: DemoCluster, node: str) -> Iterator[ProbeProcess]:
    probe = demo.probe_from(node)
    try:
        yield probe
    finally:
        probe.close()
