"""What the scenarios with OCF resource agents share: a check that the node root has the
agent, a 2N group of one agent-managed member per node, and asking whichever node answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from haos.errors import HaosError
from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import SystemdCluster

OCF = PurePosixPath("usr/lib/ocf")  # in the node root


def need_agent(cache: Path, agent: str) -> None:
    """Fails the test, naming ``agent`` (``ocf:provider:type``), when the node root lacks it."""
    provider, kind = agent.split(":")[1:]
    if not (cache / OCF / "resource.d" / provider / kind).is_file():
        pytest.fail(f"{agent} is not in the node root {cache} (image/noderoot.sh installs it)")


def member(group: str, n: int) -> str:
    """``group``'s member on node ``n``."""
    return f"shelf1/slot{n}/node/{group}"


def two_n_group(spec: ClusterSpec, group: str, manager: Callable[[int], str]) -> list[str]:
    """TOML lines of a 2N group ``group`` with one member on each node, the one on node ``n``
    managed as ``manager(n)`` says, and its service instance ``<group>-si``."""
    lines = []
    for n in spec.node_ids:
        lines += [
            "",
            "[[components]]",
            f'name = "{member(group, n)}"',
            'class = "application"',
            f"manager = {manager(n)}",
        ]
    members = ", ".join(f'"{member(group, n)}"' for n in spec.node_ids)
    lines += ["", "[[service_groups]]", f'name = "{group}"', 'redundancy = "2N"']
    lines += [f"members = [{members}]", "", "[[service_instances]]", f'name = "{group}-si"']
    lines += [f'group = "{group}"']
    return lines


def ask(c: SystemdCluster, op: str, **args: Any) -> dict[str, Any]:
    """``op`` answered by any node that answers; empty when none does."""
    for name in c.names:
        try:
            return dict(c.control(name).request(op, **args))
        except HaosError:
            continue
    return {}
