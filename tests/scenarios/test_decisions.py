"""The CRIM's decisions reach the nodes: orders over RRPC, desired roles on every node.

Three cluster daemons on real corosync with a 2N group that has a member on each node. The
components' agents are played by the test through the control sockets (``event available``),
so what is checked is the path master → dispatcher → RRPC → node order book, the operator
commands, and the resync after a take-over.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from haos.services.control import ControlError
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

PRIORITIES = {1: 30, 2: 20, 3: 10}
GROUP = """
[[components]]
name = "shelf1/slot1/node/app"
class = "application"

[[components]]
name = "shelf1/slot2/node/app"
class = "application"

[[components]]
name = "shelf1/slot3/node/app"
class = "application"

[[service_groups]]
name = "app"
redundancy = "2N"
members = ["shelf1/slot1/node/app", "shelf1/slot2/node/app", "shelf1/slot3/node/app"]

[[service_instances]]
name = "app-si"
group = "app"
"""


def comp(n: int) -> str:
    return f"shelf1/slot{n}/node/app"


@pytest.fixture
def three() -> Iterator[tuple[Cluster, Daemons]]:
    with (
        Cluster(ClusterSpec(nodes=3)) as cluster,
        Daemons(cluster, PRIORITIES, extra_toml=GROUP) as daemons,
    ):
        yield cluster, daemons


def desired(d: Daemons, node: int) -> dict[str, str]:
    answer = d.control(node).request("desired")
    if not answer["synced"]:
        return {}
    return {c: s for c, s in answer["roles"].items() if c.endswith("/app")}


def roles(d: Daemons, nodes: tuple[int, ...] = (1, 2, 3)) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in nodes:
        out.update(desired(d, n))
    return out


def announce(d: Daemons, node: int) -> None:
    def accepted() -> bool:
        try:
            answer = d.control(node).request("event", kind="available", component=comp(node))
        except ControlError:
            return False
        return not answer["refused"]

    d.wait(accepted, 15, f"{comp(node)} accepted as available")


def test_roles_reach_every_node_and_follow_a_switchover(three: tuple[Cluster, Daemons]) -> None:
    _, d = three
    d.wait(lambda: all(desired(d, n) for n in (1, 2, 3)), 15, "every node has its desired state")
    assert set(roles(d).values()) == {"offline"}  # nothing announced yet
    for n in (1, 2, 3):
        announce(d, n)
    d.wait(lambda: sorted(roles(d).values()) == ["primary", "secondary", "spare"], 10, "2N set")
    primary = next(c for c, s in roles(d).items() if s == "primary")
    # what every node holds is exactly what the CRIM on the master decided
    crim = d.control(3).request("crim")
    assert {c: crim["crim"]["components"][c]["state"] for c in roles(d)} == roles(d)
    # No agents here: the old primary's node gets its orders at once, the others' wait out
    # its quiesce confirmation (10 s) in their outboxes -- and nothing else waits for it.
    answer = d.control(2).request("operator", action="switchover", target=primary, timeout=30)
    assert not answer["refused"], answer
    d.wait(lambda: roles(d)[primary] != "primary", 10, "primary moved away")
    refused = d.control(1).request("operator", action="lock", target="no-such-thing")
    assert refused["refused"] and "unknown target" in refused["reason"]  # decided meanwhile
    assert "primary" not in roles(d).values()  # the new primary is still held back
    d.wait(lambda: sorted(roles(d).values()) == ["primary", "secondary", "spare"], 15, "2N")
    history = d.control(3).request("history", limit=100)["history"]  # not the master
    assert any("switchover" in str(e.get("reason", "")) for e in history)


def test_new_master_resyncs_every_node_after_a_take_over(three: tuple[Cluster, Daemons]) -> None:
    cluster, d = three
    for n in (1, 2, 3):
        announce(d, n)
    d.wait(lambda: sorted(roles(d).values()) == ["primary", "secondary", "spare"], 10, "2N set")
    cluster.kill(1)  # the master and its member of the group
    d.wait(
        lambda: sorted(roles(d, (2, 3)).values()) == ["primary", "secondary"],
        15,
        "n2 and n3 hold primary and secondary after n1's loss",
    )
    crim = d.control(2).request("crim")
    assert crim["master"] == "n2"
    assert crim["crim"]["components"][comp(1)]["state"] == "offline"
