"""The boot commit's cluster gates, as real cluster daemons on real corosync report them.

A node counts as rejoined once it is a quorate, admitted member with the master's desired
state, and as proven once it stayed so for ``[boot] soak``; a node cut off from the others
loses both at once, and proves again only after a whole new soak.
"""

from __future__ import annotations

import time

import pytest

from haos.errors import HaosError
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

SOAK = 2.0
BOOT = f'[boot]\nsoak = "{SOAK}s"\n'


def gates(d: Daemons, node: int) -> dict[str, object]:
    try:
        return d.control(node).request("boot_gates")
    except HaosError as e:  # not answering (yet)
        return {"error": str(e)}


def test_a_node_proves_its_release_after_the_soak_and_loses_it_when_cut_off() -> None:
    with (
        Cluster(ClusterSpec(nodes=3)) as cluster,
        Daemons(cluster, {1: 30, 2: 20, 3: 10}, fence_base_delay=5.0, extra_toml=BOOT) as d,
    ):
        d.wait(lambda: all(gates(d, n).get("rejoined") for n in (1, 2, 3)), 30, "all rejoined")
        first = {n: gates(d, n) for n in (1, 2, 3)}
        started = time.monotonic()
        d.wait(lambda: all(gates(d, n).get("proven") for n in (1, 2, 3)), 30, "all proven")
        assert time.monotonic() - started >= SOAK - 0.5, first  # not before the soak
        assert all(g["soak"] == SOAK for g in first.values())

        cluster.partition([[1, 2], [3]])
        d.wait(lambda: gates(d, 3).get("rejoined") is False, 10, "node 3 no longer rejoined")
        cut = gates(d, 3)
        assert cut["proven"] is False and "quorum" in str(cut["why"]), cut
        assert gates(d, 1)["proven"] is True  # the majority keeps proving
