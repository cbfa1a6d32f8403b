"""haos-mgmtd on a real 3-node lab cluster: REST, /metrics and who may call.

One :class:`~haoslab.harness.systemd_cluster.SystemdCluster` (real systemd, corosync,
haos-clusterd, haos-agentd and haos-mgmtd as services in nspawn nodes, the 2N demo counter)
for the module. ``[management]`` listens on every address with one token file. Requests are
made inside the nodes with the node's own Python (``urllib``; the node root has no curl):
from n1 to its loopback, which needs no token, and from n2 to n1's address, which does.
``haosctl status --json`` runs on the host against n1's control socket.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from haos.errors import HaosError
from haoslab.demo.cluster import demo_toml
from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import CONTROL_SOCKET, MGMTD, SystemdCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SI = "counter-si"
TOKEN = "lab-token-7f3c9a"
TOKEN_FILE = "/etc/haos/mgmt/noc.token"
PORT = 7080
SETTLE = 90.0  # s until the counter is placed
MOVED = 30.0  # s until a switchover shows in haosctl status
STARTED = 30.0  # s until haos-mgmtd is active (READY=1 sent)

# An HTTP client run inside a node: prints status, headers and body as one JSON object.
CLIENT = r"""
import json, sys, urllib.error, urllib.request
url, method, body, headers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
req = urllib.request.Request(url, method=method, data=body.encode() or None, headers=headers)
try:
    r = urllib.request.urlopen(req, timeout=30)
except urllib.error.HTTPError as e:
    r = e
print(json.dumps({"status": r.status, "headers": dict(r.headers), "body": r.read().decode()}))
"""


def lab_toml(spec: ClusterSpec) -> str:
    return demo_toml(spec) + (
        f'\n[management]\nlisten = "0.0.0.0"\nport = {PORT}\ntoken_files = ["{TOKEN_FILE}"]\n'
    )


@pytest.fixture(scope="module")
def lab(cache: Path) -> Iterator[SystemdCluster]:
    spec = ClusterSpec(nodes=3)
    with SystemdCluster(
        spec,
        cache=cache,
        agent=True,
        mgmt=True,
        fence=True,
        config_toml=lab_toml(spec),
        files={TOKEN_FILE: TOKEN + "\n"},
    ) as c:
        c.wait_for(lambda: placed(c), SETTLE, f"{SI} served with a standby")
        c.wait_for(
            lambda: all(c.node(n).unit_state(MGMTD) == "active" for n in c.names),
            STARTED,
            f"{MGMTD} active on every node",
        )
        yield c


def placed(c: SystemdCluster) -> bool:
    with contextlib.suppress(HaosError, KeyError):
        info = c.control("n1").request("crim")["instances"][SI]
        return bool(info["served"] and info["secondary"])
    return False


def http(
    c: SystemdCluster,
    node: str,
    path: str,
    *,
    to: str = "127.0.0.1",
    method: str = "GET",
    body: object = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    data = "" if body is None else json.dumps(body)
    sent = {"Content-Type": "application/json", **(headers or {})}
    url = f"http://{to}:{PORT}{path}"
    out = c.node(node).run(["python3", "-c", CLIENT, url, method, data, json.dumps(sent)])
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def haosctl_status(c: SystemdCluster) -> dict[str, Any]:
    socket_path = f"/proc/{c.node('n1').leader}/root{CONTROL_SOCKET}"
    argv = [sys.executable, "-m", "haos.cli.main", "status", "--json", "--control", socket_path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def view(instances: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {
        i["name"]: (i["group"], i["served"], i["primaries"], i["secondaries"]) for i in instances
    }


def cli_view(status: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        name: (i["group"], i["served"], i["primary"], i["secondary"])
        for name, i in status["availability"]["instances"].items()
    }


def test_rest_instances_are_what_haosctl_status_json_shows(lab: SystemdCluster) -> None:
    assert lab.node("n1").unit_state(MGMTD) == "active"
    answer = http(lab, "n1", "/instances")
    assert answer["status"] == 200, answer
    assert view(json.loads(answer["body"])) == cli_view(haosctl_status(lab))


def test_a_switchover_through_rest_shows_in_haosctl_status(lab: SystemdCluster) -> None:
    item = http(lab, "n1", f"/instances/{SI}")
    before = json.loads(item["body"])
    etag = item["headers"]["etag"]
    bad = http(lab, "n1", f"/instances/{SI}/switchover", method="POST", body={"timeout": "x"})
    assert bad["status"] == 422 and "body.timeout" in bad["body"]
    done = http(lab, "n1", f"/instances/{SI}/switchover", method="POST", headers={"If-Match": etag})
    assert done["status"] == 200, done
    assert json.loads(done["body"])["refused"] is False

    def moved() -> bool:
        info = haosctl_status(lab)["availability"]["instances"][SI]
        return bool(info["served"] and info["primary"] == before["secondaries"])

    lab.wait_for(moved, MOVED, f"{SI}'s primary moved to {before['secondaries']}")
    stale = http(
        lab, "n1", f"/instances/{SI}/switchover", method="POST", headers={"If-Match": etag}
    )
    assert stale["status"] == 412, stale
    assert haosctl_status(lab)["availability"]["instances"][SI]["primary"] == before["secondaries"]


def test_metrics_parse_with_the_prometheus_text_parser(lab: SystemdCluster) -> None:
    answer = http(lab, "n1", "/metrics")
    assert answer["status"] == 200
    samples = [s for f in text_string_to_metric_families(answer["body"]) for s in f.samples]
    served = [s.value for s in samples if s.name == "haos_instance_served"]
    masters = [s.labels["node"] for s in samples if s.name == "haos_node_master" and s.value]
    members = [s.value for s in samples if s.name == "haos_node_member"]
    assert served == [1.0] and len(masters) == 1 and members == [1.0, 1.0, 1.0]
    assert masters == [haosctl_status(lab)["availability"]["master"]]


def test_another_nodes_request_needs_the_token(lab: SystemdCluster) -> None:
    assert lab.topo is not None
    n1 = lab.topo.names.address(1, 0)
    denied = http(lab, "n2", "/cluster", to=n1)
    assert denied["status"] == 401, denied
    wrong = http(lab, "n2", "/cluster", to=n1, headers={"Authorization": "Bearer wrong"})
    assert wrong["status"] == 401
    refused = http(
        lab, "n2", f"/instances/{SI}/switchover", to=n1, method="POST", body={"timeout": 5}
    )
    assert refused["status"] == 401
    allowed = http(lab, "n2", "/cluster", to=n1, headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed["status"] == 200 and json.loads(allowed["body"])["quorate"] is True
