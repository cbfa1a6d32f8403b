"""Run the haos cluster daemon on every node of a harness cluster.

Each node's daemon runs in the node's network namespace (``nsenter --net``), keeps its CCR in
the node's work directory and is reached through its control socket. Killing a node with the
harness kills its daemon too (every process in the namespace dies); :meth:`Daemons.start`
brings it back. The fencing device given to the daemons is the harness itself
(``python -m haoslab.harness fence``), as the configuration's ``[fencing]`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from haos.errors import HaosError
from haos.services.control import ControlClient
from haoslab.harness.cluster import Cluster
from haoslab.harness.errors import HarnessTimeout
from haoslab.lifecycle import Closing


def cluster_toml(cluster: Cluster, priorities: dict[int, int] | None = None) -> str:
    """A configuration for the harness's nodes: one chassis, a node board per slot."""
    prio = priorities or {}
    lines = [
        "[cluster]",
        f'name = "harness-{cluster.cluster_id}"',
        "",
        "[[components]]",
        'name = "shelf1"',
        'class = "chassis"',
    ]
    for n in cluster.node_ids:
        lines += [
            "",
            "[[components]]",
            f'name = "shelf1/slot{n}"',
            'class = "slot"',
            "",
            "[[components]]",
            f'name = "shelf1/slot{n}/node"',
            'class = "node"',
        ]
    for n in cluster.node_ids:
        lines += [
            "",
            "[[nodes]]",
            f'name = "n{n}"',
            f"node_id = {n}",
            f'component = "shelf1/slot{n}/node"',
            f"priority = {prio.get(n, 0)}",
        ]
    return "\n".join(lines) + "\n"


def fencing_toml(
    cluster: Cluster, delay: float = 1.0, base_delay: float = 0.0, self_fence: str = ""
) -> str:
    """A ``[fencing]`` section: the harness fences (kills) the node, after these delays;
    ``self_fence`` is that key's TOML value, if given."""
    command = [sys.executable, "-m", "haoslab.harness", "fence", "--cluster"]
    command += [cluster.cluster_id, "--node", "{node_id}", "--action", "{action}"]
    words = ", ".join(json.dumps(word) for word in command)
    extra = f"self_fence = {self_fence}\n" if self_fence else ""
    head = f"\n[fencing]\ncommand = [{words}]\n"
    return head + f"delay = {delay!r}\nbase_delay = {base_delay!r}\n" + extra


class Daemons(Closing):
    def __init__(
        self,
        cluster: Cluster,
        priorities: dict[int, int] | None = None,
        fence_delay: float = 1.0,
        fence_base_delay: float = 0.0,
        extra_toml: str = "",
        self_fence: str = "",
    ) -> None:
        """``extra_toml`` is appended to the generated configuration (components under the
        nodes' ``shelf1/slotN/node``, service groups); the ``[fencing]`` section
        (:func:`fencing_toml`, with the delays in seconds and ``self_fence``) comes last."""
        self.cluster = cluster
        self.dir = cluster.workdir / "daemons"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "cluster.toml"
        fencing = fencing_toml(cluster, fence_delay, fence_base_delay, self_fence)
        self.config.write_text(cluster_toml(cluster, priorities) + extra_toml + fencing)
        self.fence_delay = fence_delay
        self.fence_base_delay = fence_base_delay
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def _open(self) -> None:
        for n in self.cluster.node_ids:
            self.start(n)
        self.wait_ready(self.cluster.node_ids)

    def close(self) -> None:
        """Kill every daemon started, with whatever it spawned (idempotent).

        A fence command a daemon started is killed with it: one left running would kill the
        node it fences after the cluster was restarted for the next round."""
        for proc in self.procs.values():
            _kill_group(proc)

    def control(self, node: int) -> ControlClient:
        return ControlClient(self.dir / f"n{node}.sock")

    def log(self, node: int) -> Path:
        return self.dir / f"n{node}.log"

    def start(self, node: int) -> None:
        old = self.procs.get(node)
        if old is not None:
            _kill_group(old)
        netns = f"--net=/run/netns/{self.cluster.names.node(node)}"
        argv = ["nsenter", netns, "--", *self.program(node), *self.clusterd_args(node)]
        with open(self.log(node), "ab") as log:
            self.procs[node] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, with its fence commands
            )

    def program(self, node: int) -> list[str]:
        """What runs the cluster daemon (a benchmark wraps it)."""
        del node
        return [sys.executable, "-m", "haos.services.clusterd"]

    def clusterd_args(self, node: int) -> list[str]:
        """The cluster daemon's arguments for harness node ``node``."""
        return [
            "--config",
            str(self.config),
            "--node",
            f"n{node}",
            "--state-dir",
            str(self.dir / f"n{node}-state"),
            "--control",
            str(self.dir / f"n{node}.sock"),
        ]

    def status(self, node: int) -> dict[str, Any] | None:
        try:
            return self.control(node).request("status")
        except HaosError:
            return None

    def wait_ready(self, nodes: tuple[int, ...] | list[int], timeout: float = 30.0) -> None:
        def ready() -> bool:
            for n in nodes:
                st = self.status(n)
                if st is None or not st["ccr"]["synced"] or sorted(st["members"]) != sorted(nodes):
                    return False
            return True

        self.wait(ready, timeout, f"daemons of {sorted(nodes)} ready")

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        tails = "\n".join(
            f"--- n{n}: {self.status(n)}\n" + self.log(n).read_text()[-1500:]
            for n in self.cluster.node_ids
            if self.log(n).exists()
        )
        raise HarnessTimeout(f"timed out after {timeout:g} s waiting for {what}\n{tails}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon's process group (the daemon and what it spawned) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
