"""``image/rootfs.sh``'s cache: reused while its recipe holds, rebuilt when it changed, and the
rebuilt root swapped in only while holding the lock that the root's users hold.

The rebuild runs the real script against a stand-in ``debootstrap`` (first on ``PATH``) that
makes an empty tree and logs its arguments, so nothing is downloaded; the lock is a private
file. The node root the scenario tests boot is checked for the tools its components need.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from haoslab.harness._proc import SAFE_PATH

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
ROOTFS = REPO / "image" / "rootfs.sh"
DEADLINE = 30.0
# What the node root's components run: the agents themselves (none may come from the host),
# ip (IPaddr2), send_arp (IPaddr2's gratuitous ARP), and what every agent's shell library uses.
NODE_TOOLS = (
    "bin/ip",
    "usr/libexec/heartbeat/send_arp",
    "usr/lib/ocf/resource.d/heartbeat/IPaddr2",
    "usr/lib/ocf/resource.d/heartbeat/Dummy",
    "usr/lib/ocf/resource.d/heartbeat/conntrackd",
    "usr/lib/ocf/resource.d/pacemaker/Stateful",
    "usr/lib/ocf/lib/heartbeat/ocf-shellfuncs",
    "usr/bin/ps",
    "usr/bin/awk",
)

FAKE_DEBOOTSTRAP = """#!/bin/sh
# debootstrap --variant=... --include=... SUITE TARGET MIRROR
echo "$@" >>"$(dirname "$0")/calls"
mkdir -p "$4/etc/systemd/system" "$4/etc/default" "$4/var/cache/apt/archives" \\
    "$4/var/lib/apt/lists"
"""


@pytest.fixture
def fake_path(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("image/rootfs.sh builds as root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "debootstrap"
    tool.write_text(FAKE_DEBOOTSTRAP)
    tool.chmod(0o755)
    yield bin_dir


def rootfs(fake: Path, *args: str) -> subprocess.Popen[str]:
    env = {"PATH": f"{fake}:{SAFE_PATH}", "LC_ALL": "C"}
    argv = [str(ROOTFS), *args]
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    return out.strip()


def blocked_on(lock: Path) -> bool:
    """Whether some process waits for a flock on ``lock`` (``/proc/locks`` marks waiters ->)."""
    inode = os.stat(lock).st_ino
    with open("/proc/locks") as f:
        return any("->" in line and f":{inode} " in line for line in f)


def wait_until(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE:g} s"
        time.sleep(0.01)


def test_an_old_root_is_rebuilt_and_swapped_in_only_under_the_lock(
    tmp_path: Path, fake_path: Path
) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / ".haos-rootfs").write_text("")  # built from another recipe (an older package list)
    (root / "old-root").write_text("")
    lock = tmp_path / "cluster.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a cluster runs on the old root
        proc = rootfs(fake_path, "--lock", str(lock), str(root))
        wait_until("the rebuilt root waits for the lock", lambda: blocked_on(lock))
        assert (root / "old-root").exists()  # still the old one, untouched
        assert (tmp_path / "rootfs.partial" / ".haos-rootfs").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
        assert finish(proc) == str(root)
    assert not (root / "old-root").exists()
    recipe = (root / ".haos-rootfs").read_text().strip()
    assert len(recipe) == 16
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("rootfs")) == [
        "rootfs",
        "rootfs.build-lock",
    ]
    assert "--include=systemd,systemd-sysv,dbus " in (fake_path / "calls").read_text()


def test_a_root_of_the_current_recipe_is_reused_and_the_node_recipe_differs(
    tmp_path: Path, fake_path: Path
) -> None:
    root = tmp_path / "rootfs"
    assert finish(rootfs(fake_path, str(root))) == str(root)  # built (by the stand-in)
    (root / "mine").write_text("")
    assert finish(rootfs(fake_path, str(root))) == str(root)
    assert (root / "mine").exists()
    assert len((fake_path / "calls").read_text().splitlines()) == 1  # not built again
    # a node root's stamp is another file, and its recipe another hash
    node = tmp_path / "noderoot"
    node.mkdir()
    (node / ".haos-noderoot").write_text((root / ".haos-rootfs").read_text())
    proc = rootfs(fake_path, "--node", str(node))
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode != 0  # the stand-in's tree has no corosync, ip, agents, ...
    assert "missing in the built root" in err, err
    assert len((fake_path / "calls").read_text().splitlines()) == 2


def test_bad_arguments_are_refused_with_usage(fake_path: Path) -> None:
    for args in ((), ("--node",), ("--lock",), ("--bogus", "/tmp/x"), ("a", "b")):
        proc = rootfs(fake_path, *args)
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 2 and "usage:" in err, (args, err)


def test_the_node_root_has_what_its_components_run(cache: Path) -> None:
    missing = [t for t in NODE_TOOLS if not (cache / t).is_file()]
    assert missing == [], f"not in the node root {cache}: {missing}"
