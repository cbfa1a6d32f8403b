"""Three appliance guests serving the 2N demo counter, fenced over QMP: the guest that serves is
powered off (its vCPUs stopped over QMP, as a board that hangs), its peers fence it with their
own ``fence_haos_qmp`` (QEMU quits), and another guest serves the counter.

The guests' cluster.toml comes from the VM tooling (:mod:`haoslab.vm.guestconfig`): ``[fencing]
agent = "fence_haos_qmp"``, action off, each node's monitor at ``10.0.2.100:<4400+N>`` on the
guest's fencing NIC, forwarded on the host to that guest's fencing monitor. A client of the
counter (:mod:`haoslab.demo.probe`) runs in the spare guest throughout; the outage is what it saw:
from the last answer of the stopped guest to the first answer of another (the guest's clock).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from haos.errors import UnavailableError
from haoslab.demo import probe as probe_module
from haoslab.demo.cluster import PORT, member
from haoslab.vm.machine import Cluster, Machine

pytestmark = [pytest.mark.vm, pytest.mark.slow]

N = 3
BOOT_ALL = 600.0  # three TCG guests at once on two cores
PLACED = 300.0  # after the boot: the counter has a primary, a secondary and a spare
FAILOVER = 180.0  # from the power-off until another guest serves
PROBE_LOG = "/run/haos-probe.log"
PROBE_PY = "/run/haos-probe.py"
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(image: Path, workdir: Path) -> Iterator[Cluster]:
    # No hardware watchdog (see test_vm_cluster.py): starved TCG vCPUs are no hang.
    with Cluster(image, workdir, N, memory_mb=768, watchdog=False) as c:
        c.start()
        yield c


def wait_for(
    probe: Callable[[], T | None], timeout: float, what: str, explain: Callable[[], str] = str
) -> T:
    """The first true value of ``probe`` (each call is a guest-agent round trip); on time,
    AssertionError with what ``explain`` says."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}\n{explain()}")
        time.sleep(1.0)


def roles(m: Machine) -> dict[int, str]:
    """node number -> its counter member's state, as the CRIM on ``m``'s cluster says."""
    try:
        out = m.sh("haosctl status --json", check=False)
        components = json.loads(out)["availability"]["crim"]["components"]
        return {n: components[member(n)]["state"] for n in range(1, N + 1)}
    except (UnavailableError, ValueError, KeyError, TypeError):
        return {}


def placed(m: Machine) -> dict[int, str] | None:
    got = roles(m)
    return got if sorted(got.values()) == ["primary", "secondary", "spare"] else None


def daemons(cluster: Cluster) -> str:
    """Each guest's haos units and the end of the cluster daemon's journal, for a failure."""
    script = (
        "systemctl is-active corosync haos-clusterd haos-agentd; "
        "journalctl -u haos-clusterd -u haos-agentd -o cat --no-pager | tail -n 25"
    )
    out = []
    for m in cluster.machines:
        try:
            out.append(f"--- n{m.spec.node}\n{m.sh(script, check=False)}")
        except UnavailableError as e:
            out.append(f"--- n{m.spec.node}: {e}")
    return "\n".join(out)


def answers(m: Machine) -> list[dict[str, Any]]:
    out = m.sh(f"cat {PROBE_LOG}", check=False)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [a for a in lines if "target" in a]


def address(node: int) -> str:
    return f"10.10.0.{node}:{PORT}"


def start_probe(m: Machine) -> None:
    """The demo's client (a lab tool, not in the image), copied into the guest and run there."""
    source = base64.b64encode(Path(probe_module.__file__).read_bytes()).decode()
    m.sh(f"echo {source} | base64 -d > {PROBE_PY}")
    targets = ",".join(address(n) for n in range(1, N + 1))
    probe = (
        f"sleep infinity | python3 {PROBE_PY} --targets {targets}"
        f" --interval 0.05 --timeout 3 --duration 3600 > {PROBE_LOG}"
    )
    m.sh(f"systemd-run --unit=haos-probe --collect sh -c '{probe}'")


@pytest.mark.timeout(BOOT_ALL + PLACED + FAILOVER + 600)
def test_stopped_serving_guest_is_fenced_over_qmp_and_another_serves(cluster: Cluster) -> None:
    started = time.monotonic()
    for m in cluster.machines:
        assert m.reports is not None
        m.reports.wait_event("boot", BOOT_ALL)  # haos' units start after this report

    def explain() -> str:
        return daemons(cluster)

    first = wait_for(lambda: placed(cluster.node(1)), BOOT_ALL + PLACED, "placed", explain)
    print(f"{N} guests up and the counter placed {time.monotonic() - started:.0f} s after start")
    primary = next(n for n, s in first.items() if s == "primary")
    spare = next(n for n, s in first.items() if s == "spare")
    watcher = cluster.node(spare)
    start_probe(watcher)
    wait_for(
        lambda: any(a["target"] == address(primary) for a in answers(watcher)),
        60,
        f"the client in n{spare} served by n{primary}",
    )

    victim = cluster.node(primary)
    stopped_at = time.monotonic()
    victim.qmp().execute("stop")  # the vCPUs stop at once: the guest hangs
    proc = victim.proc
    assert proc is not None
    wait_for(lambda: proc.poll() is not None, FAILOVER, f"n{primary} fenced", explain)
    fenced = time.monotonic() - stopped_at
    assert proc.returncode == 0  # QEMU quit over QMP: not killed, not crashed

    def served_elsewhere() -> tuple[dict[str, Any], dict[str, Any]] | None:
        got = answers(watcher)
        old = [a for a in got if a["target"] == address(primary)]
        new = [a for a in got if old and a["t"] > old[-1]["t"] and a["target"] != old[-1]["target"]]
        return (old[-1], new[0]) if new else None

    last_old, first_new = wait_for(served_elsewhere, FAILOVER, "served elsewhere", explain)
    seen = time.monotonic() - stopped_at
    outage = first_new["t"] - last_old["t"]
    assert first_new["value"] > last_old["value"], "an answered increment was lost"
    survivors = [m for m in cluster.machines if m is not victim]
    journals = " ".join(
        m.sh("journalctl -u haos-clusterd -o cat --no-pager | grep -F 'fenced n' || true")
        for m in survivors
    )
    assert f"fenced n{primary}: fence_haos_qmp off succeeded" in journals, journals[-2000:]
    after = wait_for(lambda: roles(watcher) or None, 60, "the CRIM's view after the fail-over")
    assert after[primary] != "primary" and "primary" in after.values(), after
    print(
        f"n{primary} stopped: fenced (its QEMU quit) {fenced:.1f} s after the power-off; "
        f"the client in n{spare} was served by {first_new['target']} after an outage of "
        f"{outage:.1f} s (seen from the host after {seen:.0f} s)"
    )
