"""Several components of every kind on each node, on nodes with a real systemd and corosync.

Every node of a three-node cluster hosts five managed components, all run by its one node
agent: an N-way-active member and an N+M member that are installed systemd services, two
HA-aware applications (counter demos, client components) and an ``ocf:heartbeat:Dummy``
resource. Every service instance must come to be served, every component must run in the
role the cluster's status gives it, and no node agent may have been restarted.

The N+M group's two instances must be spread over two of its members as primaries, with the
third as their secondary, whichever member became available first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ocf import need_agent

from haos.errors import HaosError
from haos.services.agent.clientdriver import unit_name
from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import AGENTD, SystemdCluster, cluster_toml

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = ClusterSpec(nodes=3)
NODES = tuple(f"n{n}" for n in SPEC.node_ids)
DUMMY_STATE = "/run/haos-mixed-dummy.state"
SETTLE = 90.0  # seconds for every instance to be served after the nodes booted
SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n"
# kind of each node's components, by their last name part; the systemd ones' units
UNITS = {"web": "haos-mixed-web.service", "db": "haos-mixed-db.service"}
COUNTERS = {"count-a": 7071, "count-b": 7072}
INSTANCES = ("web-si", "db-1", "db-2", "count-a-si", "count-b-si", "dummy-si")


def comp(n: int, part: str) -> str:
    return f"shelf1/slot{n}/node/{part}"


def manager(part: str) -> str:
    if part in UNITS:
        return f'{{ kind = "systemd", unit = "{UNITS[part]}", stop_timeout = "5s" }}'
    if part in COUNTERS:
        argv = ["python3", "-m", "haos.apps.counter", "--port", str(COUNTERS[part])]
        argv += ["--name", f"demo/{part}"]
        return f'{{ kind = "client", command = [{", ".join(map(quoted, argv))}] }}'
    params = f'params = {{ state = "{DUMMY_STATE}" }}'
    return f'{{ kind = "ocf", agent = "ocf:heartbeat:Dummy", {params} }}'


def quoted(text: str) -> str:
    return f'"{text}"'


def group(name: str, redundancy: str, part: str, *extra: str) -> list[str]:
    members = ", ".join(quoted(comp(n, part)) for n in SPEC.node_ids)
    lines = ["", "[[service_groups]]", f'name = "{name}"', f'redundancy = "{redundancy}"']
    return [*lines, f"members = [{members}]", *extra]


def instance(name: str, of: str, *extra: str) -> list[str]:
    return ["", "[[service_instances]]", f'name = "{name}"', f'group = "{of}"', *extra]


def config() -> str:
    lines = [cluster_toml(SPEC, "mixed"), "[recovery]", "soft_reset_max = 0", "restart_max = 1"]
    for n in SPEC.node_ids:
        for part in (*UNITS, *COUNTERS, "dummy"):
            lines += ["", "[[components]]", f'name = "{comp(n, part)}"']
            lines += ['class = "application"', f"manager = {manager(part)}"]
    lines += group("web", "N-way-active", "web")
    lines += instance("web-si", "web", f"actives = {len(NODES)}")
    lines += group("db", "N+M", "db", "active = 2", "standby = 1")
    lines += instance("db-1", "db", "rank = 0") + instance("db-2", "db", "rank = 1")
    for part in COUNTERS:
        lines += group(part, "2N", part) + instance(f"{part}-si", part)
    lines += group("dummy", "2N", "dummy") + instance("dummy-si", "dummy")
    return "\n".join(lines) + "\n"


class MixedCluster(SystemdCluster):
    """Each node also has the systemd components' services installed."""

    def _node_files(self, name: str, toml: str) -> dict[str, str]:
        files = super()._node_files(name, toml)
        for unit in UNITS.values():
            files[f"/etc/systemd/system/{unit}"] = SERVICE
        return files


@pytest.fixture
def cluster(cache: Path) -> Iterator[SystemdCluster]:
    need_agent(cache, "ocf:heartbeat:Dummy")
    with MixedCluster(SPEC, cache=cache, agent=True, config_toml=config(), fence=True) as c:
        yield c


def crim(c: SystemdCluster) -> dict[str, Any] | None:
    """The master's ``crim`` answer (through any node that answers)."""
    for name in NODES:
        try:
            return c.control(name).request("crim")
        except HaosError:
            continue
    return None


def all_served(c: SystemdCluster, seen: list[dict[str, Any]]) -> bool:
    answer = crim(c)
    if answer is None:
        return False
    seen[:] = [answer]
    return all(answer["instances"][si]["served"] for si in INSTANCES)


def roles(answer: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(node, component) -> the state the CRIM gives it, for every managed component."""
    states = answer["crim"]["components"]
    return {
        (f"n{n}", comp(n, part)): states[comp(n, part)]["state"]
        for n in SPEC.node_ids
        for part in (*UNITS, *COUNTERS, "dummy")
    }


def runs_as_status_says(c: SystemdCluster, answer: dict[str, Any]) -> list[str]:
    """What on the nodes contradicts the roles in ``answer`` (empty: nothing)."""
    wrong = []
    for (node, name), role in roles(answer).items():
        said = (answer["running"].get(node) or {}).get(name, {}).get("state")
        if said != role:
            wrong.append(f"{name}: the CRIM says {role}, its agent says it runs as {said}")
        part = name.rsplit("/", 1)[-1]
        if part in UNITS:  # started while primary, stopped otherwise
            wrong += unit_is(c, node, UNITS[part], role == "primary")
        elif part in COUNTERS:  # its process runs in every role; only the primary listens
            wrong += unit_is(c, node, unit_name(name), role != "offline")
            wrong += listens(c, node, COUNTERS[part], role == "primary")
        else:  # a plain agent's resource runs only while primary
            started = c.node(node).run(["test", "-e", DUMMY_STATE], check=False).returncode
            if (started == 0) != (role == "primary"):
                wrong.append(f"{name} ({role}): Dummy's resource started is {started == 0}")
    return wrong


def unit_is(c: SystemdCluster, node: str, unit: str, active: bool) -> list[str]:
    state = c.node(node).unit_state(unit)
    return [] if (state == "active") == active else [f"{node}: {unit} is {state}"]


def listens(c: SystemdCluster, node: str, port: int, primary: bool) -> list[str]:
    """The counter answers INCR with a number on its primary; nothing listens elsewhere."""
    script = (
        "import socket, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), 5)\n"
        "s.sendall(b'INCR\\n')\n"
        "sys.stdout.write(s.makefile().readline())\n"
    )
    out = c.node(node).run(["python3", "-c", script], check=False)
    answered = out.returncode == 0 and out.stdout.strip().isdigit()
    if answered == primary:
        return []
    return [f"{node}: counter on port {port} answered {out.stdout.strip()!r} {out.stderr[-200:]}"]


def test_two_systemd_two_client_and_an_ocf_component_per_node_all_run(
    cluster: SystemdCluster,
) -> None:
    c = cluster
    seen: list[dict[str, Any]] = []
    took = c.wait_for(lambda: all_served(c, seen), SETTLE, "every service instance served")
    print(f"every instance served {took:.1f} s after the nodes ran")
    wrong: list[str] = []

    def consistent() -> bool:
        answer = crim(c)
        wrong[:] = ["no answer"] if answer is None else runs_as_status_says(c, answer)
        return not wrong

    # a role being carried out while the status is read is no contradiction: read again
    try:
        c.wait_for(consistent, 30.0, "every component runs as the status says")
    except HaosError:
        pytest.fail("\n".join(wrong))
    answer = crim(c)
    assert answer is not None
    placed = roles(answer)
    print("roles:", {name: role for (_, name), role in sorted(placed.items())})
    for n in SPEC.node_ids:  # N-way-active with as many actives as members: all primary
        assert placed[(f"n{n}", comp(n, "web"))] == "primary"
    # N+M (2+1), two instances: spread over two primaries, backed by the third member
    got = sorted(placed[(f"n{n}", comp(n, "db"))] for n in SPEC.node_ids)
    assert got == ["primary", "primary", "secondary"], got
    for part in (*COUNTERS, "dummy"):  # 2N: one primary, one secondary
        got = sorted(placed[(f"n{n}", comp(n, part))] for n in SPEC.node_ids)
        assert got.count("primary") == 1 and got.count("secondary") == 1, (part, got)
    for si in INSTANCES:
        assert answer["instances"][si]["served"], (si, answer["instances"][si])
    for node in NODES:
        assert c.node(node).unit_state(AGENTD) == "active"
        assert c.restarts(node, AGENTD) == 0, c.diagnose(node, [AGENTD])
    # the installed units stop, at a node's shutdown, after the agent has switched them over
    for node in NODES:
        for unit in UNITS.values():
            out = c.node(node).run(["systemctl", "show", "-p", "Before", "-p", "After", unit])
            assert AGENTD in out.stdout.split("Before=")[1].split("\n")[0], (node, unit, out)
            assert "haos-clusterd.service" in out.stdout.split("After=")[1], (node, unit, out)
