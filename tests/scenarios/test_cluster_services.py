"""The cluster daemons (CMM + CCR) on real corosync clusters, one fault per scenario.

Every node runs ``haos.services.clusterd`` in its network namespace; the harness kills,
freezes, cuts and partitions; the daemons' control sockets tell what each node believes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from haos.services.control import ControlError
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness import netns as harness_netns
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

PRIORITIES = {1: 30, 2: 20, 3: 10}


@pytest.fixture
def three() -> Iterator[tuple[Cluster, Daemons]]:
    with Cluster(ClusterSpec(nodes=3)) as cluster, Daemons(cluster, PRIORITIES) as daemons:
        yield cluster, daemons


def masters(d: Daemons, nodes: tuple[int, ...]) -> set[tuple[object, object]]:
    out = set()
    for n in nodes:
        st = d.status(n) or {}
        out.add((st.get("master"), st.get("vice_master")))
    return out


def role(d: Daemons, node: int) -> object:
    availability = (d.status(node) or {}).get("availability") or {}
    return availability.get("role")


def notice_types(d: Daemons, node: int) -> list[tuple[str, object]]:
    out = []
    for item in d.control(node).request("notices")["notices"]:
        notice = item["notice"]
        event = notice.get("event")
        kind = event["type"] if isinstance(event, dict) else notice["type"]
        detail = event.get("node") if isinstance(event, dict) else notice.get("node")
        out.append((kind, detail))
    return out


def dead(cluster: Cluster, node: int) -> bool:
    ident = harness_netns.ident(cluster.names.node(node))
    return not harness_netns.pids_in([ident])


def test_master_killed_vice_master_becomes_master_and_a_new_vice_is_chosen(
    three: tuple[Cluster, Daemons],
) -> None:
    cluster, d = three
    assert masters(d, (1, 2, 3)) == {(1, 2)}
    d.wait(lambda: role(d, 1) == "active" and role(d, 2) == "standby", 10, "CRIM on n1, standby n2")
    seq_before = (d.status(1) or {})["availability"]["seq"]
    killed = cluster.kill(1)
    d.wait(lambda: masters(d, (2, 3)) == {(2, 3)}, 10, "node 2 master, node 3 vice-master")
    assert time.monotonic() - killed < 5.0
    # NodeLeft (the CRIM's cue to take over) comes once node 1 is fenced
    d.wait(lambda: ("NodeLeft", "n1") in notice_types(d, 2), 10, "NodeLeft n1 after fencing")
    kinds = [k for k, _ in notice_types(d, 3)]
    assert "MasterChanged" in kinds and "ViceMasterChanged" in kinds
    # the availability manager (CRIM + CEC) took over on the new master from its checkpoint
    d.wait(lambda: role(d, 2) == "active", 10, "CRIM active on n2")
    assert (d.status(2) or {})["availability"]["seq"] >= seq_before


def test_cutting_link_0_changes_no_membership_and_loses_no_message(
    three: tuple[Cluster, Daemons],
) -> None:
    cluster, d = three
    before = {n: len(d.control(n).request("notices")["notices"]) for n in (1, 2, 3)}
    started = time.monotonic()
    cluster.cut_link(2, 0)
    written: dict[str, str] = {}
    for i in range(30):
        for n in (1, 2, 3):
            key = f"/cut/n{n}/{i}"
            d.control(n).request("put", key=key, value=str(i))
            written[key] = str(i)
    cluster.wait_until(lambda: False, 2.0)  # hold the cut while knet notices the dead link
    cluster.restore_link(2, 0)
    assert cluster.membership_changes(started) == []
    for n in (1, 2, 3):
        items = d.control(n).request("range", prefix="/cut")["items"]
        assert items == written
        new = d.control(n).request("notices")["notices"][before[n] :]
        assert not [x for x in new if x["notice"].get("event", {}).get("type") == "NodeLeft"]
    assert len({(d.status(n) or {})["hash"] for n in (1, 2, 3)}) == 1


def test_isolated_node_is_removed_fenced_before_its_roles_are_taken_over(
    three: tuple[Cluster, Daemons],
) -> None:
    cluster, d = three
    cluster.isolate(1)  # the master
    d.wait(lambda: masters(d, (2, 3)) == {(2, 3)}, 10, "node 2 takes over as master")
    d.wait(lambda: dead(cluster, 1), 10, "node 1 fenced (all its processes gone)")
    d.wait(lambda: ("NodeLeft", "n1") in notice_types(d, 2), 10, "NodeLeft n1 after fencing")
    # fencing completed before NodeLeft, which lets the CRIM take over node 1's services
    log = d.log(2).read_text()
    assert log.index("fenced n1 (") < log.index("n1 fenced (reboot): NodeLeft")
    cluster.reconnect(1)


def test_minority_of_a_2_1_partition_cannot_write_and_demotes() -> None:
    with (
        Cluster(ClusterSpec(nodes=3)) as cluster,
        Daemons(cluster, PRIORITIES, fence_base_delay=4.0) as d,
    ):
        d.control(1).request("put", key="/p/before", value="x")
        cluster.partition([[1, 2], [3]])
        d.wait(lambda: (d.status(3) or {}).get("demoted") is True, 5, "node 3 demotes")
        with pytest.raises(ControlError, match="unavailable"):
            d.control(3).request("put", key="/p/minority", value="lost")
        assert d.control(1).request("put", key="/p/majority", value="kept")["revision"] > 0
        assert (d.status(1) or {})["demoted"] is False
        d.wait(lambda: dead(cluster, 3), 15, "the majority fences node 3")
        cluster.heal()
        cluster.restart(3)
        d.start(3)
        d.wait_ready((1, 2, 3))
        assert d.control(3).request("get", key="/p/majority")["value"] == "kept"
        assert d.control(3).request("get", key="/p/minority")["value"] is None
        assert len({(d.status(n) or {})["hash"] for n in (1, 2, 3)}) == 1


def test_two_node_split_leaves_exactly_one_survivor_decided_by_fencing() -> None:
    with Cluster(ClusterSpec(nodes=2)) as cluster, Daemons(cluster, {1: 20, 2: 10}) as d:
        cluster.partition([[1], [2]])
        d.wait(lambda: dead(cluster, 2) or dead(cluster, 1), 15, "one side fenced")
        cluster.wait_until(lambda: False, 3.0)  # give a second shot time to land, if any
        assert dead(cluster, 2) and not dead(cluster, 1)
        status = d.status(1) or {}
        assert status["master"] == 1 and status["demoted"] is False
        # the survivor keeps serving the repository's reads ...
        assert d.control(1).request("get", key="/nothing")["value"] is None
        # ... and, its peer confirmed fenced (NodeLeft), writes on its own disk alone
        assert ("NodeLeft", "n2") in notice_types(d, 1)
        written: list[int] = []

        def put() -> bool:
            try:
                written.append(d.control(1).request("put", key="/split", value="n1")["revision"])
            except ControlError:
                return False
            return True

        d.wait(put, 10, "the survivor writable alone")
        assert written[0] > 0 and (d.status(1) or {})["ccr"]["writable"] is True
        assert d.control(1).request("get", key="/split")["value"] == "n1"


def test_watch_sees_every_change_in_order_on_every_node(three: tuple[Cluster, Daemons]) -> None:
    _, d = three
    seen: dict[int, list[int]] = {1: [], 2: [], 3: []}

    def follow(n: int) -> None:
        for item in d.control(n).stream("watch", prefix="/w"):
            if "revision" in item:
                seen[n].append(item["revision"])
                if len(seen[n]) == 60:
                    return

    threads = [threading.Thread(target=follow, args=(n,), daemon=True) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # let the three watch streams open before the first write
    revs = [
        d.control(1 + i % 3).request("put", key=f"/w/{i}", value="v")["revision"] for i in range(60)
    ]
    for t in threads:
        t.join(20)
    assert all(seen[n] == revs for n in (1, 2, 3)), seen


def test_daemons_reconfigure_from_the_repository_without_a_restart(
    three: tuple[Cluster, Daemons],
) -> None:
    _, d = three
    pids = {n: d.procs[n].pid for n in (1, 2, 3)}
    d.control(2).request("put", key="/haos/settings/fence_delay", value="2.5")
    d.wait(
        lambda: all(
            (d.status(n) or {}).get("settings", {}).get("fence_delay") == 2.5 for n in (1, 2, 3)
        ),
        10,
        "every daemon applies fence_delay 2.5",
    )
    # a bad change is refused whole: the good key in the same change is not applied either
    d.control(1).request("put", key="/haos/settings/fence_delay", value="soon")
    d.control(1).request("put", key="/haos/settings/fence_base_delay", value="0.5")
    d.wait(lambda: "settings change refused" in d.log(3).read_text(), 10, "refusal logged")
    for n in (1, 2, 3):
        settings = (d.status(n) or {})["settings"]
        assert settings["fence_delay"] == 2.5 and settings["fence_base_delay"] == 0.0
    assert {n: d.procs[n].pid for n in (1, 2, 3)} == pids  # nobody restarted


def test_a_whole_cluster_restart_loses_no_acknowledged_write(
    three: tuple[Cluster, Daemons],
) -> None:
    cluster, d = three
    acked = {}
    for i in range(40):
        key = f"/restart/{i}"
        acked[key] = str(i)
        d.control(1 + i % 3).request("put", key=key, value=str(i))
    for n in (1, 2, 3):  # power loss everywhere: no graceful shutdown anywhere
        cluster.kill(n)
    for n in (3, 2, 1):  # and back in another order
        cluster.restart(n)
        d.start(n)
    d.wait_ready((1, 2, 3), timeout=60)
    for n in (1, 2, 3):
        assert d.control(n).request("range", prefix="/restart")["items"] == acked
    # the copies converge: a write made as the daemons came up (the availability service's
    # epoch, say) may reach one node's copy a moment before another's
    deadline = time.monotonic() + 10.0
    while len(hashes := {(d.status(n) or {}).get("hash") for n in (1, 2, 3)}) != 1:
        assert time.monotonic() < deadline, f"copies differ: {hashes}"
        time.sleep(0.05)
    assert d.control(2).request("put", key="/restart/after", value="ok")["revision"] > 40
