"""An unchanged OCF resource agent as a 2N component on nodes with a real systemd.

Debian's ``ocf:heartbeat:Dummy`` (the host's ``/usr/lib/ocf``, shown read-only in every node)
is the component of a 2N group with a member on each node. Its agent's ``monitor`` is the
health check: removing the primary's state file behind the agent's back is a failure that
only the monitor sees, and the ladder moves the service to the secondary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from haos.cluster.harness import nspawn
from haos.cluster.harness.config import ClusterSpec
from haos.cluster.harness.systemd_cluster import (
    NODEROOT_CACHE,
    REPO,
    SystemdCluster,
    cluster_toml,
)
from haos.errors import HaosError

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

OCF = Path("/usr/lib/ocf")
SPEC = ClusterSpec(nodes=3)


def member(n: int) -> str:
    return f"shelf1/slot{n}/node/dummy"


def state_file(n: int) -> str:
    return f"/run/haos-dummy-{n}.state"


def config() -> str:
    lines = [cluster_toml(SPEC, "ocf"), "[recovery]", "soft_reset_max = 0", "restart_max = 0"]
    for n in SPEC.node_ids:
        lines += [
            "",
            "[[components]]",
            f'name = "{member(n)}"',
            'class = "application"',
            'manager = { kind = "ocf", agent = "ocf:heartbeat:Dummy",'
            f' params = {{ state = "{state_file(n)}" }} }}',
        ]
    members = ", ".join(f'"{member(n)}"' for n in SPEC.node_ids)
    lines += ["", "[[service_groups]]", 'name = "dummy"', 'redundancy = "2N"']
    lines += [f"members = [{members}]", "", "[[service_instances]]", 'name = "dummy-si"']
    lines += ['group = "dummy"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster() -> Iterator[SystemdCluster]:
    reason = nspawn.unavailable()
    if reason is not None:
        pytest.skip(reason)
    if not (OCF / "resource.d" / "heartbeat" / "Dummy").exists():
        pytest.fail("resource-agents is not installed (scripts/setup.sh installs it)")
    cache = nspawn.build_noderoot(REPO, NODEROOT_CACHE)
    with SystemdCluster(
        SPEC, cache=cache, agent=True, config_toml=config(), fence=True, host_dirs=(OCF,)
    ) as c:
        yield c


def roles(c: SystemdCluster) -> dict[int, str]:
    for name in c.names:
        try:
            comps = c.control(name).request("crim")["crim"]["components"]
        except HaosError:  # any node that answers will do
            continue
        return {n: comps[member(n)]["state"] for n in SPEC.node_ids}
    return {}


def running(c: SystemdCluster, n: int) -> bool:
    """Whether Dummy's resource is started on node ``n`` (its state file exists)."""
    return c.node(f"n{n}").run(["test", "-e", state_file(n)], check=False).returncode == 0


def holder(c: SystemdCluster, role: str) -> int:
    return next(n for n, s in roles(c).items() if s == role)


def test_dummy_agent_is_placed_2n_and_fails_over_when_its_monitor_fails(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    c.wait_for(
        lambda: sorted(roles(c).values()) == ["primary", "secondary", "spare"],
        60.0,
        "Dummy placed: primary, secondary, spare",
    )
    primary, spare = holder(c, "primary"), holder(c, "spare")
    c.wait_for(lambda: running(c, primary), 30.0, "the primary's resource started")
    assert not running(c, spare)  # a spare's resource is stopped
    c.node(f"n{primary}").run(["rm", "-f", state_file(primary)])  # the resource "dies"
    c.wait_for(lambda: roles(c)[primary] != "primary", 60.0, "the monitor noticed, fail-over")
    new = holder(c, "primary")
    assert new != primary
    c.wait_for(lambda: running(c, new), 30.0, "the new primary's resource started")
    history = c.control(f"n{new}").request("history", limit=50)["history"]
    assert any("fail-over" in str(e.get("reason", "")) for e in history), history
