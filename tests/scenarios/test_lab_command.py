"""``haosctl lab up`` boots a user's cluster.toml on nspawn nodes; ``lab down`` removes it all,
also after ``up`` was SIGKILLed; a bad configuration starts nothing.

``up`` runs as the user runs it, a separate process; the service is checked with the
``haosctl`` of a node, inside that node, as a user reaching it with the printed line would.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haoslab.demo.cluster import demo_toml
from haoslab.harness import netns, nspawn
from haoslab.harness.config import ClusterSpec
from haoslab.harness.owner import DEFAULT_BASE
from haoslab.labstate import path as state_path

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(400)]

HAOSCTL = [sys.executable, "-m", "haos.cli.main"]
READY = 120.0  # seconds from starting `up` to its "ready:" line (node root cached)
SERVED = 90.0  # seconds from "ready:" until a node's haosctl says the 2N counter is served
GONE = 15.0  # seconds for killed processes to be reaped


class Up:
    """``haosctl lab up`` as a process, its output read line by line."""

    def __init__(self, config: Path, workdir: Path) -> None:
        argv = [*HAOSCTL, "lab", "up", "--config", str(config), "--workdir", str(workdir)]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def kill(self) -> None:
        """SIGKILL it (if it still runs) and read the rest of its output."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def until_ready(self, timeout: float) -> list[str]:
        """Every line up to and with the ``ready:`` line."""
        deadline = time.monotonic() + timeout
        while not (self.seen and self.seen[-1].startswith("ready:")):
            left = deadline - time.monotonic()
            try:
                self.seen.append(self.lines.get(timeout=max(left, 0.01)))
            except queue.Empty:
                pytest.fail(f"no ready line within {timeout:g} s:\n" + "\n".join(self.seen))
        return self.seen


def lab_down(workdir: Path) -> subprocess.CompletedProcess[str]:
    argv = [*HAOSCTL, "lab", "down", "--workdir", str(workdir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def node_haosctl(leader: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """``haosctl`` run inside the node whose PID 1 is ``leader``, as the printed line says."""
    cmd = ["nsenter", "-t", str(leader), "-a", "haosctl", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def served(leader: int, instance: str) -> bool:
    done = node_haosctl(leader, "status", "--json")
    if done.returncode != 0:
        return False
    return bool(json.loads(done.stdout)["availability"]["instances"][instance]["served"])


def cgroups_of(cluster_id: str) -> list[Path]:
    found = []
    for hierarchy in nspawn.CGROUP_HIERARCHIES:
        parent = hierarchy / "haos"
        if parent.is_dir():
            found += [p for p in parent.iterdir() if p.name.startswith(f"haos-{cluster_id}-")]
    return found


def processes_in(cgroups: list[Path]) -> dict[int, str]:
    """pid -> command name of every process in ``cgroups`` and below."""
    out = {}
    for cgroup in cgroups:
        for procs in [cgroup / "cgroup.procs", *cgroup.rglob("*/cgroup.procs")]:
            with contextlib.suppress(OSError):
                for pid in map(int, procs.read_text().split()):
                    with contextlib.suppress(OSError):
                        out[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
    return out


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is no zombie (a dead process its new parent has not yet
    reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def left_of(cluster_id: str, workdir: Path) -> list[str]:
    """Everything of the lab's cluster that still exists."""
    prefix = f"haos-{cluster_id}-"
    left = [f"netns {n}" for n in netns.present() if n.startswith(prefix)]
    left += [f"cgroup {c}" for c in cgroups_of(cluster_id)]
    left += [f"mount {m}" for m in nspawn.mounts_under(DEFAULT_BASE / cluster_id)]
    if (DEFAULT_BASE / cluster_id).exists():
        left.append(f"directory {DEFAULT_BASE / cluster_id}")
    if state_path(workdir).exists():
        left.append(f"state file {state_path(workdir)}")
    return left


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "lab"
    yield path
    lab_down(path)  # whatever a failed test left


def test_lab_down_removes_everything_after_up_is_sigkilled(
    cache: Path, tmp_path: Path, workdir: Path
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(demo_toml(ClusterSpec(nodes=3)))  # three nodes, the 2N counter
    up = Up(config, workdir)
    try:
        lines = up.until_ready(READY)
        leaders = {
            m["node"]: int(m["pid"])
            for line in lines
            if (m := re.match(r"(?P<node>n\d+): nsenter -t (?P<pid>\d+) -a haosctl", line))
        }
        assert sorted(leaders) == ["n1", "n2", "n3"], lines
        cluster_id = Path(json.loads(state_path(workdir).read_text())["clusters"][0]).name
        deadline = time.monotonic() + SERVED
        while not served(leaders["n3"], "counter-si"):
            assert time.monotonic() < deadline, node_haosctl(leaders["n3"], "status").stdout
            time.sleep(0.5)
        lab = processes_in(cgroups_of(cluster_id))
        assert {"systemd-nspawn", "corosync", "systemd"} <= set(lab.values()), lab
    finally:
        up.kill()
    assert any(running(pid) for pid in lab), "the nodes ended with their up process"

    done = lab_down(workdir)
    assert done.returncode == 0, done.stderr
    assert f"lab (nspawn) in {workdir} removed" in done.stdout, done.stdout
    deadline = time.monotonic() + GONE
    while alive := {pid: name for pid, name in lab.items() if running(pid)}:
        assert time.monotonic() < deadline, f"still running after lab down: {alive}"
        time.sleep(0.1)
    assert left_of(cluster_id, workdir) == []
    assert not workdir.exists()

    again = lab_down(workdir)
    assert again.returncode == 0, again.stderr
    assert "nothing to remove" in again.stdout


def test_lab_down_stops_a_running_up_which_tears_its_cluster_down(
    cache: Path, tmp_path: Path, workdir: Path
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(demo_toml(ClusterSpec(nodes=2)))
    up = Up(config, workdir)
    try:
        up.until_ready(READY)
        cluster_id = Path(json.loads(state_path(workdir).read_text())["clusters"][0]).name
        assert processes_in(cgroups_of(cluster_id))
        done = lab_down(workdir)  # SIGTERM to up, which removes its cluster itself
        assert done.returncode == 0, done.stderr
        assert "lab up was running: stopped with SIGTERM" in done.stdout, done.stdout
        assert up.proc.wait(30) == 0
        up.kill()  # reaps its output
        assert "removed" in list(up.lines.queue), list(up.lines.queue)
    finally:
        up.kill()
    assert left_of(cluster_id, workdir) == []
    assert not workdir.exists()


def test_lab_up_with_a_bad_config_exits_2_naming_the_key_and_starts_nothing(
    tmp_path: Path, workdir: Path
) -> None:
    text = demo_toml(ClusterSpec(nodes=3)).replace('redundancy = "2N"', 'redundancy = "3N"')
    config = tmp_path / "cluster.toml"
    config.write_text(text)
    namespaces = set(netns.present())
    clusters = set(os.listdir(DEFAULT_BASE)) if DEFAULT_BASE.is_dir() else set()
    argv = [*HAOSCTL, "lab", "up", "--config", str(config), "--workdir", str(workdir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{config}: service_groups[0].redundancy:" in done.stderr, done.stderr
    assert "'3N'" in done.stderr
    assert not workdir.exists()
    assert set(netns.present()) <= namespaces
    assert (set(os.listdir(DEFAULT_BASE)) if DEFAULT_BASE.is_dir() else set()) <= clusters
