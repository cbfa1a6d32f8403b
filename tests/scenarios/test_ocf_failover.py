"""Unchanged OCF resource agents as 2N components on nodes with a real systemd.

The agents are the node root's own (``image/noderoot.sh`` installs Debian's
``resource-agents`` and ``pacemaker-resource-agents``); no host directory is shown in the
nodes. Each test's agent is the component of a 2N group with a member on each node, and its
``monitor`` is the health check:

* Debian's ``ocf:heartbeat:Dummy``: removing the primary's state file behind the agent's back
  is a failure only the monitor sees, and the ladder moves the service to the secondary;
* the promotable ``ocf:pacemaker:Stateful``: the primary is *promoted*, the secondary started
  *unpromoted*, the spare stopped; a failing monitor of the promoted instance (the agent's
  own ``<state>.rc`` override) demotes it and promotes the secondary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import _ocf as ocf
import pytest
from _ocf import ask, need_agent, two_n_group

from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import SystemdCluster, cluster_toml

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = ClusterSpec(nodes=3)


def member(n: int) -> str:
    return ocf.member("dummy", n)


def state_file(n: int) -> str:
    return f"/run/haos-dummy-{n}.state"


def config(agent: str = "ocf:heartbeat:Dummy", extra: str = "") -> str:
    lines = [cluster_toml(SPEC, "ocf"), "[recovery]", "soft_reset_max = 0", "restart_max = 0"]
    lines += two_n_group(
        SPEC,
        "dummy",
        lambda n: (
            f'{{ kind = "ocf", agent = "{agent}",{extra}'
            f' params = {{ state = "{state_file(n)}" }} }}'
        ),
    )
    return "\n".join(lines) + "\n"


def ocf_cluster(cache: Path, agent: str, toml: str) -> SystemdCluster:
    need_agent(cache, agent)
    return SystemdCluster(SPEC, cache=cache, agent=True, config_toml=toml, fence=True)


@pytest.fixture
def cluster(cache: Path) -> Iterator[SystemdCluster]:
    with ocf_cluster(cache, "ocf:heartbeat:Dummy", config()) as c:
        yield c


STATEFUL = "ocf:pacemaker:Stateful"


@pytest.fixture
def stateful(cache: Path) -> Iterator[SystemdCluster]:
    with ocf_cluster(cache, STATEFUL, config(STATEFUL, " promotable = true,")) as c:
        yield c


def roles(c: SystemdCluster) -> dict[int, str]:
    answer = ask(c, "crim")
    if not answer:
        return {}
    comps = answer["crim"]["components"]
    return {n: comps[member(n)]["state"] for n in SPEC.node_ids}


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


def agent_state(c: SystemdCluster, n: int) -> str:
    """What Stateful's state file on node ``n`` says (Promoted, Unpromoted), or "stopped"."""
    out = c.node(f"n{n}").run(["cat", state_file(n)], check=False)
    return out.stdout.strip() if out.returncode == 0 else "stopped"


def test_promotable_stateful_agent_is_promoted_2n_and_fails_over_when_its_monitor_fails(
    stateful: SystemdCluster,
) -> None:
    c = stateful
    c.wait_for(
        lambda: sorted(roles(c).values()) == ["primary", "secondary", "spare"],
        60.0,
        "Stateful placed: primary, secondary, spare",
    )
    primary, secondary = holder(c, "primary"), holder(c, "secondary")
    spare = holder(c, "spare")
    c.wait_for(
        lambda: (
            (agent_state(c, primary), agent_state(c, secondary), agent_state(c, spare))
            == ("Promoted", "Unpromoted", "stopped")
        ),
        30.0,
        "primary promoted, secondary started unpromoted, spare stopped",
    )
    # The agent's own test hook: its monitor answers what <state>.rc holds (1: generic error).
    c.node(f"n{primary}").run(["sh", "-c", f"echo 1 > {state_file(primary)}.rc"])
    c.wait_for(lambda: roles(c)[primary] != "primary", 60.0, "the monitor failed: fail-over")
    c.node(f"n{primary}").run(["rm", "-f", f"{state_file(primary)}.rc"])
    assert holder(c, "primary") == secondary  # 2N: the secondary takes over
    c.wait_for(lambda: agent_state(c, secondary) == "Promoted", 30.0, "the secondary was promoted")
    history = c.control(f"n{secondary}").request("history", limit=50)["history"]
    assert any("fail-over" in str(e.get("reason", "")) for e in history), history
