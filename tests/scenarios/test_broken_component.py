"""A component that cannot run on any node: out of service everywhere, no node rebooted.

Three nodes with a real systemd; a 2N group whose members are Debian's unchanged
``ocf:heartbeat:conntrackd`` pointed at a program that no node has, so every ``start`` (indeed
every action but ``meta-data``) returns ``OCF_ERR_INSTALLED``. That is a hard error: each
member is taken out of service on its node the first time it is started, with the agent's
reason, and the next one is tried. The cluster must stay quorate with every node up (the same
boot ids, nothing fenced or rebooted), and status and history must say why the component is
out of service. An operator's ``online`` clears the fault of one member; as the program is
still missing, its next start takes it out of service again, and still nothing reboots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _ocf as ocf
import pytest
from _ocf import ask, need_agent, two_n_group

from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import SystemdCluster, cluster_toml

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

AGENT = "ocf:heartbeat:conntrackd"
MISSING = "/usr/sbin/haos-no-such-program"
SPEC = ClusterSpec(nodes=3)


def member(n: int) -> str:
    return ocf.member("broken", n)


MEMBERS = [member(n) for n in SPEC.node_ids]


def config() -> str:
    lines = [cluster_toml(SPEC, "broken")]
    lines += two_n_group(
        SPEC,
        "broken",
        lambda n: (
            f'{{ kind = "ocf", agent = "{AGENT}", promotable = false,'
            f' params = {{ binary = "{MISSING}", config = "/etc/hosts" }} }}'
        ),
    )
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster(cache: Path) -> Iterator[SystemdCluster]:
    need_agent(cache, AGENT)
    with SystemdCluster(SPEC, cache=cache, agent=True, config_toml=config(), fence=True) as c:
        yield c


def components(c: SystemdCluster) -> dict[str, Any]:
    return dict(ask(c, "crim").get("crim", {}).get("components", {}))


def all_out_of_service(c: SystemdCluster) -> bool:
    comps = components(c)
    return bool(comps) and all(comps[m]["offline_by"] == "fault" for m in MEMBERS)


def boot_id(c: SystemdCluster, name: str) -> str:
    """The node's boot id (systemd-nspawn gives every boot of a container a new one)."""
    out = c.node(name).run(["cat", "/proc/sys/kernel/random/boot_id"])
    return str(out.stdout).strip()


def test_a_component_not_installed_anywhere_is_out_of_service_and_no_node_reboots(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    boots = {name: boot_id(c, name) for name in c.names}
    c.wait_for(lambda: all_out_of_service(c), 60.0, "every member out of service")
    comps = components(c)
    for m in MEMBERS:
        rt = comps[m]
        assert (rt["state"], rt["health"]) == ("offline", "failed"), (m, rt)
        assert "hard error" in rt["why"] and "OCF_ERR_INSTALLED" in rt["why"], (m, rt)
    for name in c.names:
        status = c.control(name).request("status")
        assert status["quorate"], (name, status)
    crim = ask(c, "crim")["crim"]
    assert all(rt["member"] for rt in crim["nodes"].values()), crim["nodes"]
    assert crim.get("reboot") is None
    assert {name: boot_id(c, name) for name in c.names} == boots  # nothing rebooted
    history = ask(c, "history", limit=500)["history"]
    reasons = [str(e.get("reason", "")) for e in history]
    assert not [r for r in reasons if "reboot" in r or "fence" in r], reasons
    held = [e for e in history if e.get("note") == "ComponentOutOfService"]
    assert {e["component"] for e in held} == set(MEMBERS), held
    assert all("OCF_ERR_INSTALLED" in e["reason"] for e in held), held

    # haosctl online: the fault is cleared and the member started again; it fails again
    answer = c.control("n1").request("operator", action="online", target=MEMBERS[0])
    assert "cleared" in str(answer), answer
    c.wait_for(
        lambda: len(out_of_service_notes(c, MEMBERS[0])) >= 2,
        30.0,
        "the member started again and was taken out of service again",
    )
    c.wait_for(lambda: all_out_of_service(c), 30.0, "every member out of service again")
    assert {name: boot_id(c, name) for name in c.names} == boots


def out_of_service_notes(c: SystemdCluster, component: str) -> list[dict[str, Any]]:
    history = ask(c, "history", limit=500).get("history", [])
    return [
        e
        for e in history
        if e.get("note") == "ComponentOutOfService" and e.get("component") == component
    ]
