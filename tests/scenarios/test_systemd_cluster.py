"""haos-clusterd as a systemd service on three nodes with a real systemd and a real corosync.

Each test boots its own :class:`~haoslab.harness.systemd_cluster.SystemdCluster` (the
units from ``units/``, haos bind-mounted from this tree) and checks afterwards that nothing of
it is left. Faults: the daemon SIGKILLed (systemd restarts it) and SIGSTOPped (the service
watchdog, fed only through the daemon's gate, kills and restarts it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haoslab.harness import netns, nspawn
from haoslab.harness.config import ClusterSpec
from haoslab.harness.nspawn import NspawnNode, cgroup_leftovers, mounts_under
from haoslab.harness.systemd_cluster import (
    AGENTD,
    CLUSTERD,
    REPO,
    SystemdCluster,
    agent_available,
    request_fence,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

NODEROOT_CACHE = Path("/var/cache/haos/noderoot")
NODES = ("n1", "n2", "n3")
DEADLINE = 30.0  # any awaited condition that has no bound of its own
RESTART_SEC = 1.0  # RestartSec= of the unit
ABORT_SEC = 2.0  # TimeoutAbortSec=: SIGKILL after the watchdog's SIGABRT at the latest
WATCHDOG_SLACK = 0.25  # systemd enforces WatchdogSec with up to this much delay here
START_MARGIN = 5.0  # python start, corosync connection, repository state transfer


@pytest.fixture(scope="module")
def cache() -> Path:
    reason = nspawn.unavailable()
    if reason is not None:
        pytest.skip(reason)
    started = time.monotonic()
    root = nspawn.build_noderoot(REPO, NODEROOT_CACHE)
    print(f"node root ready in {time.monotonic() - started:.1f} s")
    return root


@contextlib.contextmanager
def booted(
    cache: Path, kind: type[SystemdCluster] = SystemdCluster, **kwargs: Any
) -> Iterator[SystemdCluster]:
    """A 3-node systemd cluster; afterwards, check that nothing of it is left."""
    started = time.monotonic()
    with kind(ClusterSpec(nodes=3), cache=cache, **kwargs) as c:
        print(f"3 systemd nodes running with their daemons ready after {c.up_after:.2f} s")
        yield c
        topo = c.topo
    assert topo is not None
    print(f"cluster up and torn down in {time.monotonic() - started:.2f} s")
    assert [f for node in c.nodes.values() for f in node.leftovers()] == []
    assert mounts_under(topo.workdir) == []
    assert netns.tasks_in(topo.idents) == []
    assert [
        p for p in cgroup_leftovers() if p.name.startswith(f"haos-{topo.names.cluster_id}-")
    ] == []
    assert not [n for n in netns.present() if n.startswith(f"haos-{topo.names.cluster_id}-")]
    assert not topo.workdir.exists()


@pytest.fixture
def cluster(cache: Path) -> Iterator[SystemdCluster]:
    with booted(cache) as c:
        yield c


@pytest.fixture
def fenced(cache: Path) -> Iterator[SystemdCluster]:
    """A cluster whose daemons fence through the harness's fence bridge."""
    with booted(cache, fence=True) as c:
        yield c


def statuses(c: SystemdCluster) -> dict[str, dict[str, Any] | None]:
    return {n: c.status(n) for n in NODES}


def in_sync(c: SystemdCluster, admitted: bool = False) -> bool:
    """Every daemon answers, sees all three, and holds the same repository content;
    with ``admitted``, no node waits to be fenced either."""
    st = statuses(c)
    answers = [s for s in st.values() if s is not None]
    return (
        len(answers) == 3
        and all(s["members"] == [1, 2, 3] and s["ccr"]["synced"] for s in answers)
        and len({s["hash"] for s in answers}) == 1
        and (not admitted or all(s["fence_pending"] == [] for s in answers))
    )


def seconds(value: str) -> float:
    """A systemd time span as ``systemctl show`` prints it (``5s``, ``500ms``, ``1min 30s``)."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
    total = 0.0
    for part in value.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        total += float(number) * units[part[len(number) :]]
    return total


def write_and_spread(c: SystemdCluster, key: str, value: str) -> None:
    c.control("n1").request("put", key=key, value=value)
    c.wait_for(lambda: in_sync(c), DEADLINE, f"{key} on every node")


def watchdog_pets(c: SystemdCluster, name: str) -> int:
    """systemd's time of the unit's last WATCHDOG=1 (µs, monotonic; 0: never petted)."""
    return int(c.node(name).unit_property(CLUSTERD, "WatchdogTimestampMonotonic") or 0)


def test_three_systemd_nodes_run_clusterd_ready_and_agree_on_master_and_vice_master(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    for name in NODES:
        node = c.node(name)
        assert node.unit_state("corosync.service") == "active"
        # Type=notify: "active (running)" only after READY=1
        assert node.unit_state(CLUSTERD) == "active"
        assert node.unit_property(CLUSTERD, "SubState") == "running"
        assert seconds(node.unit_property(CLUSTERD, "WatchdogUSec")) == 5.0
        assert node.unit_property(CLUSTERD, "StatusText") != ""
    c.wait_for(lambda: in_sync(c), DEADLINE, "all three in sync")
    st = statuses(c)
    assert {(s["master"], s["vice_master"]) for s in st.values() if s} == {(1, 2)}
    assert all(s["quorate"] and not s["demoted"] for s in st.values() if s)

    # the gate lets the pets through: systemd's watchdog timestamp moves on every node
    first = {n: watchdog_pets(c, n) for n in NODES}
    c.wait_for(
        lambda: all(watchdog_pets(c, n) > first[n] > 0 for n in NODES),
        5.0,
        "a WATCHDOG=1 from every daemon",
    )
    write_and_spread(c, "/test/written-on-n1", "seen everywhere")
    # the units as shipped pass systemd's own check on the node's systemd
    units = [f"/etc/systemd/system/{u}" for u in (CLUSTERD, AGENTD)]
    verify = c.node("n1").run(["systemd-analyze", "verify", *units], check=False)
    assert (verify.returncode, verify.stderr) == (0, "")
    assert c.control("n3").request("get", key="/test/written-on-n1")["value"] == "seen everywhere"


def test_sigkilled_clusterd_is_restarted_by_systemd_and_rejoins_with_the_repository(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    write_and_spread(c, "/test/before-kill", "kept")
    before = c.status("n1")
    assert before is not None

    killed_at = time.monotonic()
    old = c.kill_daemon("n3")
    c.wait_for(lambda: c.main_pid("n3") not in (0, old), DEADLINE, "a new clusterd on n3")
    restarted = time.monotonic() - killed_at
    c.wait_for(lambda: in_sync(c), DEADLINE, "n3 back in sync")
    rejoined = time.monotonic() - killed_at
    print(f"SIGKILL: new main pid after {restarted:.2f} s, in sync after {rejoined:.2f} s")

    assert c.restarts("n3") == 1
    assert c.node("n3").unit_state(CLUSTERD) == "active"
    assert RESTART_SEC <= restarted <= RESTART_SEC + START_MARGIN
    # every node holds one content once the writes that n3's return caused are done (the
    # availability service's own state is in it: the hash before is no reference)
    c.wait_for(lambda: in_sync(c), DEADLINE, "one repository content")
    after = statuses(c)
    assert c.control("n3").request("get", key="/test/before-kill")["value"] == "kept"
    assert {(s["master"], s["vice_master"]) for s in after.values() if s} == {(1, 2)}
    # the others' CMM saw n3's CMM leave: it is to be fenced (no fence device here)
    n1 = after["n1"]
    assert n1 is not None
    print(f"n1 after the restart: fence_pending={n1['fence_pending']}")


def test_sigstopped_clusterd_is_killed_by_the_watchdog_and_restarted(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    write_and_spread(c, "/test/before-freeze", "kept")
    watchdog = seconds(c.node("n3").unit_property(CLUSTERD, "WatchdogUSec"))
    c.wait_for(lambda: watchdog_pets(c, "n3") > 0, DEADLINE, "n3 petted once")

    frozen_at = time.monotonic()
    old = c.freeze_daemon("n3")
    bound = watchdog + WATCHDOG_SLACK + ABORT_SEC + RESTART_SEC + 1.0
    c.wait_for(lambda: c.main_pid("n3") not in (0, old), bound + 5.0, "n3 restarted")
    restarted = time.monotonic() - frozen_at
    c.wait_for(lambda: in_sync(c), DEADLINE, "n3 back in sync")
    rejoined = time.monotonic() - frozen_at
    print(
        f"SIGSTOP: WatchdogSec {watchdog:g} s, new main pid after {restarted:.2f} s, "
        f"in sync after {rejoined:.2f} s"
    )
    journal = c.node("n3").journal(CLUSTERD, 400)
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal
    # detected no earlier than one pet interval (WatchdogSec/2) after the last pet
    assert watchdog / 2 + RESTART_SEC <= restarted <= bound
    assert c.restarts("n3") == 1
    assert c.control("n3").request("get", key="/test/before-freeze")["value"] == "kept"


def test_a_node_whose_cluster_daemon_dies_is_fenced_by_the_master_and_rejoins(
    fenced: SystemdCluster,
) -> None:
    c, bridge = fenced, fenced.bridge
    assert bridge is not None
    write_and_spread(c, "/test/before-fence", "kept")

    killed_at = time.monotonic()
    c.kill_daemon("n3")
    c.wait_for(lambda: ("n3", "reboot", "ok") in bridge.done, DEADLINE, "n3 fenced")
    fenced_after = time.monotonic() - killed_at
    c.wait_for(lambda: in_sync(c, admitted=True), 60.0, "n3 rebooted, rejoined and admitted")
    back = time.monotonic() - killed_at
    print(
        f"clusterd SIGKILLed: n3 power-cycled after {fenced_after:.2f} s, back after {back:.2f} s"
    )

    assert bridge.done == [("n3", "reboot", "ok")]  # fenced once, by one fencer
    # one repository content on every node once the writes that n3's return caused are
    # done (the availability service's own state is in it: the hash before is no reference)
    c.wait_for(lambda: in_sync(c, admitted=True), DEADLINE, "one repository content")
    after = statuses(c)
    assert {(s["master"], s["vice_master"]) for s in after.values() if s} == {(1, 2)}
    assert c.control("n3").request("get", key="/test/before-fence")["value"] == "kept"
    assert c.restarts("n3") == 0  # a fresh boot, not a restart of the old daemon


def test_a_stopped_node_is_fenced_rebooted_and_catches_up_on_what_was_written_meanwhile(
    fenced: SystemdCluster,
) -> None:
    c = fenced
    assert c.bridge is not None
    stopped_at = time.monotonic()
    c.stop_node("n3")
    revision = c.control("n1").request("put", key="/test/while-n3-away", value="caught up")
    c.wait_for(lambda: in_sync(c, admitted=True), 60.0, "n3 fenced, booted and admitted")
    print(f"n3 stopped: back and in sync after {time.monotonic() - stopped_at:.2f} s")
    assert c.bridge.done == [("n3", "reboot", "ok")]
    item = c.control("n3").request("get", key="/test/while-n3-away")
    assert item == {"ok": True, "value": "caught up", "revision": revision["revision"]}


class FencedWhileForming(SystemdCluster):
    """Asks its fence bridge to reboot n1 as soon as n1 is launched, as a daemon would."""

    answers: list[str]
    when_up: tuple[list[tuple[str, str]], list[tuple[str, str, str]]]

    def _open(self) -> None:
        self.answers = []
        super()._open()
        assert self.bridge is not None
        self.when_up = (self.bridge.waiting(), list(self.bridge.done))

    def _launch(self, name: str) -> NspawnNode:
        node = super()._launch(name)
        if name == "n1" and self.bridge is not None and not hasattr(self, "asker"):
            directory = self.bridge.directory
            self.asker = threading.Thread(
                target=lambda: self.answers.append(request_fence(directory, "n1", "reboot"))
            )
            self.asker.start()
        return node


def test_a_fencing_asked_for_while_the_cluster_forms_is_carried_out_once_every_node_runs(
    cache: Path,
) -> None:
    with booted(cache, FencedWhileForming, fence=True) as c:
        assert isinstance(c, FencedWhileForming) and c.bridge is not None
        bridge = c.bridge
        assert c.when_up == ([("n1", "reboot")], [])  # entering did not see n1 go
        c.asker.join(DEADLINE)
        assert c.answers == ["ok"]
        assert bridge.done[0] == ("n1", "reboot", "ok")
        c.wait_for(lambda: in_sync(c, admitted=True), 60.0, "n1 rebooted, rejoined and admitted")
        # the cluster itself fences n1 too: it left while admitted (what any power cut means)
        assert all(done == ("n1", "reboot", "ok") for done in bridge.done)


@pytest.mark.skipif(not agent_available(), reason="no haos.services.agent.daemon in this tree")
def test_the_agent_keeps_running_while_its_cluster_daemon_restarts(cache: Path) -> None:
    with booted(cache, agent=True) as c:
        for name in NODES:
            assert c.node(name).unit_state(AGENTD) == "active"
        agent = c.main_pid("n3", AGENTD)
        old = c.kill_daemon("n3", CLUSTERD)
        c.wait_for(lambda: c.main_pid("n3") not in (0, old), DEADLINE, "a new clusterd on n3")
        c.wait_for(lambda: in_sync(c), DEADLINE, "n3 back in sync")
        # not bound to the cluster daemon: the same agent process ran on throughout
        assert c.main_pid("n3", AGENTD) == agent
        assert c.restarts("n3", AGENTD) == 0

        killed_at = time.monotonic()
        c.kill_daemon("n2", AGENTD)
        c.wait_for(
            lambda: c.restarts("n2", AGENTD) == 1 and c.node("n2").unit_state(AGENTD) == "active",
            DEADLINE,
            "the agent on n2 restarted and ready",
        )
        print(f"agent SIGKILLed: active (READY) again after {time.monotonic() - killed_at:.2f} s")
        assert c.restarts("n2", CLUSTERD) == 0  # the cluster daemon is not bound to it either
