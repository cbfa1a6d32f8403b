"""Names applications bind, through the cluster daemons' CNS on real corosync: seen on every
node, taken over by a successor, dropped when the component stops, gone with a dead node."""

from __future__ import annotations

import time

import pytest

from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


def lookup(d: Daemons, node: int, name: str) -> dict[str, object]:
    return d.control(node).request("name_lookup", name=name)


def test_a_bound_name_follows_its_owner_and_goes_with_its_node_or_component() -> None:
    with (
        Cluster(ClusterSpec(nodes=3)) as cluster,
        Daemons(cluster, {1: 30, 2: 20, 3: 10}) as d,
    ):
        d.control(1).request("name_bind", component="app1", name="db/primary", handle="n1:5432")
        d.wait(lambda: lookup(d, 3, "db/primary")["handle"] == "n1:5432", 5, "seen on n3")
        assert lookup(d, 2, "db/primary") == {"ok": True, "handle": "n1:5432", "node": "n1"}

        # the standby on n2 took over: its bind wins everywhere, the old owner's drop is late
        d.control(2).request("name_bind", component="app2", name="db/primary", handle="n2:5432")
        d.wait(lambda: lookup(d, 1, "db/primary")["node"] == "n2", 5, "taken over")
        now = time.time()
        d.control(1).request("running", component="app1", state="failed", at=now)
        assert lookup(d, 3, "db/primary")["handle"] == "n2:5432"

        # a component that stops takes its names with it
        d.control(2).request("name_bind", component="admin2", name="db/admin", handle="n2:9")
        d.wait(lambda: lookup(d, 3, "db/admin")["handle"] == "n2:9", 5, "admin bound")
        d.control(2).request("running", component="admin2", state="offline", at=time.time())
        d.wait(lambda: lookup(d, 3, "db/admin")["handle"] is None, 5, "admin dropped")

        # a node that dies takes every name it owned, on every other node
        d.control(3).request("name_bind", component="app3", name="cache", handle="n3:11211")
        d.wait(lambda: lookup(d, 1, "cache")["handle"] == "n3:11211", 5, "cache bound")
        cluster.kill(3)
        d.wait(lambda: lookup(d, 1, "cache")["handle"] is None, 10, "n3's names gone")
        assert lookup(d, 2, "db/primary")["handle"] == "n2:5432"
