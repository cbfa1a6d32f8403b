"""The demo cluster's configuration: the harness's nodes plus a 2N counter service."""

from __future__ import annotations

from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import cluster_toml

PORT = 7070


def member(n: int) -> str:
    return f"shelf1/slot{n}/node/counter"


def demo_toml(
    spec: ClusterSpec,
    *,
    hold_time: str = "0s",
    restart_max: int = 1,
    audit_period: float = 0.5,
    audit_timeout: float = 0.25,
    component_probation: str = "60s",
) -> str:
    """``cluster_toml`` plus group ``counter`` (2N, a member on every node, one instance, its
    checkpoint persistent: the count survives a power loss of the whole cluster).

    ``hold_time`` is the CEC's hold of reports about contained components (0: a crash goes
    to the CRIM at once); ``restart_max`` restarts in place before the ladder fails over;
    the counter registers an ``alive`` audit every ``audit_period`` s (``audit_timeout``);
    a member that fails again within ``component_probation`` of its fail-over is taken out
    of service.
    """
    lines = [
        cluster_toml(spec, "demo"),
        "[recovery]",
        "soft_reset_max = 0",
        f"restart_max = {restart_max}",
        f'component_probation = "{component_probation}"',
        "failover_max = 100",
        'group_probation = "10s"',
        'recovery_timeout = "10s"',
        "",
        "[correlation]",
        f'hold_time = "{hold_time}"',
    ]
    for n in spec.node_ids:
        lines += [
            "",
            "[[components]]",
            f'name = "{member(n)}"',
            'class = "application"',
            'manager = { kind = "client", command = ["python3", "-m", "haos.apps.counter"],'
            f' environment = {{ HAOS_DEMO_PORT = "{PORT}",'
            f' HAOS_DEMO_AUDIT_PERIOD = "{audit_period}",'
            f' HAOS_DEMO_AUDIT_TIMEOUT = "{audit_timeout}" }} }}',
        ]
    members = ", ".join(f'"{member(n)}"' for n in spec.node_ids)
    lines += [
        "",
        "[[service_groups]]",
        'name = "counter"',
        'redundancy = "2N"',
        f"members = [{members}]",
        "persistent_checkpoint = true",
        "",
        "[[service_instances]]",
        'name = "counter-si"',
        'group = "counter"',
    ]
    return "\n".join(lines) + "\n"
