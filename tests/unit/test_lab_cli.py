"""``haosctl lab``: its checks of the user's configuration and arguments (nspawn and VM), the
configuration QEMU guests get, its state file, and ``down`` on what a killed ``up`` left.

No root, no cluster: what boots is the scenario test's (tests/scenarios/test_lab_command.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from haos.cli.main import main as haosctl
from haos.config.loader import parse_config
from haos.errors import ConfigError, UsageError
from haoslab import labstate
from haoslab.cli.lab import nspawn_access, vm_access
from haoslab.demo.cluster import demo_toml
from haoslab.harness import owner
from haoslab.harness.config import ClusterSpec
from haoslab.harness.netns import Names
from haoslab.labdown import down, referring_to
from haoslab.labplan import BUILTIN, plan, vm_toml
from haoslab.vm.guestconfig import FENCE_AGENT
from haoslab.vm.machine import FENCE_PORT, provision_files

SLEEPER = (sys.executable, "-c", "import time; time.sleep(300)")
OWN_FENCING = '\n[fencing]\ncommand = ["/bin/true", "{node}"]\naction = "off"\n'


def config(tmp_path: Path, nodes: int = 3, extra: str = "", name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(demo_toml(ClusterSpec(nodes=nodes)) + extra)
    return path


# -- the configuration and --nodes ---------------------------------------------------------


def test_the_node_count_comes_from_the_config(tmp_path: Path) -> None:
    lab = plan(config(tmp_path, 4), None, vm=False)
    assert (lab.nodes, lab.names, lab.fencing) == (4, ("n1", "n2", "n3", "n4"), False)
    assert plan(config(tmp_path, 4), 4, vm=True).nodes == 4


def test_nodes_disagreeing_with_the_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--nodes 2 disagrees with .* which has 3 \[\[nodes\]\]"):
        plan(config(tmp_path, 3), 2, vm=False)


def test_a_bad_config_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(demo_toml(ClusterSpec(nodes=3)).replace('"2N"', '"3N"'))
    with pytest.raises(ConfigError, match=rf"{path}: service_groups\[0\]\.redundancy"):
        plan(path, None, vm=True)


def test_nodes_must_be_named_n_and_their_node_id(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(demo_toml(ClusterSpec(nodes=3)).replace('name = "n2"', 'name = "b2"'))
    with pytest.raises(ConfigError, match=r"nodes\[1\]\.name: the lab names node_id 2 'n2'"):
        plan(path, None, vm=False)
    path.write_text(demo_toml(ClusterSpec(nodes=3)).replace("node_id = 3", "node_id = 7"))
    with pytest.raises(ConfigError, match=r"nodes\[2\]\.node_id: must be 1\.\.3"):
        plan(path, None, vm=False)


def test_more_guests_than_qemu_clusters_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--nodes must be 1\.\.8 for QEMU guests"):
        plan(None, 9, vm=True)
    with pytest.raises(ConfigError, match=r"nodes: the lab runs 1\.\.8"):
        plan(config(tmp_path, 9), None, vm=True)
    assert plan(config(tmp_path, 9), None, vm=False).nodes == 9  # nspawn nodes: up to 32


def test_without_a_config_the_lab_runs_its_demo(tmp_path: Path) -> None:
    nspawn = plan(None, 2, vm=False)
    assert (nspawn.source, nspawn.nodes, nspawn.fencing) == (BUILTIN, 2, False)
    assert 'name = "counter"' in nspawn.toml
    guests = plan(None, None, vm=True)
    assert guests.nodes == 3 and guests.fencing  # the guests' own QMP fencing


# -- the VM backend's configuration ----------------------------------------------------------


def test_guests_fence_over_qmp_when_the_config_has_no_fencing(tmp_path: Path) -> None:
    lab = plan(config(tmp_path, 3), None, vm=True)
    toml = vm_toml(lab)
    assert toml.startswith(lab.toml.rstrip("\n"))  # the user's configuration, unchanged
    fencing = tomllib.loads(toml)["fencing"]
    assert fencing["agent"] == FENCE_AGENT and fencing["action"] == "off"
    ports = {n: fencing["nodes"][n]["params"]["ipport"] for n in ("n1", "n2", "n3")}
    assert ports == {f"n{k}": FENCE_PORT + k for k in (1, 2, 3)}
    assert parse_config(toml, "x").fencing is not None


def test_guests_keep_a_fencing_of_the_config(tmp_path: Path) -> None:
    lab = plan(config(tmp_path, 3, OWN_FENCING), None, vm=True)
    assert lab.fencing
    assert vm_toml(lab) == lab.toml
    assert FENCE_AGENT not in vm_toml(lab)


def test_guests_get_the_config_as_their_cluster_toml(tmp_path: Path) -> None:
    toml = vm_toml(plan(config(tmp_path, 2), None, vm=True))
    files = provision_files(tmp_path / "vm", 2, "vmtest", toml)
    for node in (1, 2):
        etc = dict(files[node])
        assert etc["haos/cluster.toml"].read_text() == toml
        assert etc["haos/node.env"].read_text() == f"HAOS_NODE=n{node}\n"


def test_image_without_vm_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert haosctl(["lab", "up", "--image", "/nonexistent.raw"]) == 2
    assert "--image is for --vm" in capsys.readouterr().err


def test_access_lines_say_how_to_reach_each_node() -> None:
    line = vm_access(Path("/run/haos-lab/vm"), 2)
    assert line.startswith("n2: qemu/haos-vms sh /run/haos-lab/vm 2 'haosctl status'")
    assert "/run/haos-lab/vm/node2.qmp.sock" in line and "10.10.0.2 10.11.0.2" in line
    line = nspawn_access("n3", 4242, Names("abc123"))
    assert line.startswith("n3: nsenter -t 4242 -a haosctl status")
    assert "netns haos-abc123-n3" in line


# -- the state file and down ---------------------------------------------------------------


def test_the_state_file_round_trips_and_knows_its_up_process(tmp_path: Path) -> None:
    state = labstate.for_this_process("vm", "c.toml")
    labstate.save(tmp_path, state)
    loaded = labstate.load(tmp_path)
    assert loaded == state and loaded.up_alive()
    assert not labstate.LabState("vm", os.getpid(), state.started + 1, "c").up_alive()
    labstate.path(tmp_path).write_text('{"kind": "vm"}')
    with pytest.raises(UsageError, match="no lab state file"):
        labstate.load(tmp_path)


def test_an_up_that_ended_but_is_not_reaped_yet_is_not_alive() -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    started = owner.start_time(ended.pid)
    assert started is not None
    try:
        deadline = time.monotonic() + 10
        while labstate.running(ended.pid):  # a zombie once it exited: its parent waits below
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert owner.start_time(ended.pid) == started  # the zombie still has its start time
        assert not labstate.LabState("nspawn", ended.pid, started, "c").up_alive()
    finally:
        ended.wait(5)


def test_down_with_no_lab_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert down(tmp_path / "none") is None
    assert haosctl(["lab", "down", "--workdir", str(tmp_path / "none")]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_down_after_a_killed_vm_up_kills_what_names_the_guests(tmp_path: Path) -> None:
    workdir, guests = tmp_path / "lab", tmp_path / "lab" / "vm"
    guests.mkdir(parents=True)
    (guests / "node1.qcow2").write_text("disk")
    # stands for QEMU: a process whose command line names a file of the guests
    qemu = subprocess.Popen([*SLEEPER, f"file={guests}/node1.qcow2,if=none"])
    bystander = subprocess.Popen([*SLEEPER, f"{tmp_path}/lab-other"])
    try:
        assert referring_to(guests) == {qemu.pid}
        dead = labstate.LabState("vm", 999_999, 1, "c.toml", guests=str(guests), qemu=(1,))
        labstate.save(workdir, dead)  # pid 1 is recorded but is no QEMU of this lab
        report = down(workdir)
        assert report is not None and report.killed == [qemu.pid] and not report.stopped_up
        assert qemu.wait(5) == -9
        assert bystander.poll() is None
        assert not workdir.exists()
    finally:
        for proc in (qemu, bystander):
            proc.kill()
            proc.wait(5)
