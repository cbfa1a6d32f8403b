"""What ``haosctl lab up`` will boot: the user's cluster.toml, checked for this machine's lab.

Pure: no I/O beyond reading the configuration file, nothing started. :func:`plan` checks the
file with haos' own loader (the same :class:`~haos.errors.ConfigError` a node's daemon would
give, naming the file, the key and the reason), then what the lab needs on top of it:

* node ``K`` of the lab is the configuration's node with ``node_id = K``, named ``nK`` (as
  the appliance names a board from its node number, ``haos.services.nodesetup``), for
  ``K = 1..N``: the lab's corosync.conf and addresses (``10.10.0.K``, ``10.11.0.K``) are its
  own, so the node ids must be exactly ``1..N``;
* ``--nodes``, when given, must agree with the configuration's node count.

Without a configuration the lab boots its demo cluster (nodes ``n1..nN``, the 2N counter):
:func:`haoslab.demo.cluster.demo_toml` in nspawn nodes, the guests' own
:func:`haoslab.vm.guestconfig.guest_cluster_toml` in QEMU.

A configuration without ``[fencing]`` gets the lab's fencer: the fence bridge of
:class:`~haoslab.harness.systemd_cluster.SystemdCluster` for nspawn nodes (it adds it
itself), the guests' own ``fence_haos_qmp`` over QMP for QEMU guests (:func:`vm_toml`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from haos.config.loader import load_config, parse_config
from haos.config.model import ClusterConfig
from haos.errors import ConfigError, ConfigProblem, UsageError
from haoslab.harness.config import ClusterSpec
from haoslab.harness.netns import MAX_NODES

DEFAULT_NODES = 3
MAX_GUESTS = 8  # haoslab.vm.machine.Cluster's bound
BUILTIN = "the lab's demo cluster"


@dataclass(frozen=True)
class LabPlan:
    """A checked configuration and the lab cluster that runs it."""

    nodes: int
    toml: str  # the configuration as the nodes get it (before the lab's fencer is added)
    source: str  # the file, or BUILTIN
    fencing: bool  # whether the configuration has a [fencing] of its own

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"n{k}" for k in range(1, self.nodes + 1))


def plan(config: Path | None, nodes: int | None, *, vm: bool) -> LabPlan:
    """The lab cluster for ``config`` (None: the built-in demo) and ``--nodes``; ConfigError
    or UsageError naming what is wrong."""
    limit = MAX_GUESTS if vm else MAX_NODES
    if nodes is not None and not 1 <= nodes <= limit:
        where = "QEMU guests" if vm else "nspawn nodes"
        raise UsageError(f"--nodes must be 1..{limit} for {where}, not {nodes}")
    if config is None:
        return _builtin(nodes or DEFAULT_NODES, vm=vm)
    parsed = load_config(config)
    text = config.read_text(encoding="utf-8")  # load_config read it as UTF-8 just now
    check_nodes(parsed, str(config))
    if nodes is not None and nodes != len(parsed.nodes):
        raise UsageError(
            f"--nodes {nodes} disagrees with {config}, which has {len(parsed.nodes)} "
            "[[nodes]]: drop --nodes or change the configuration"
        )
    if len(parsed.nodes) > limit:
        raise ConfigError([ConfigProblem(str(config), "nodes", f"the lab runs 1..{limit}")])
    return LabPlan(len(parsed.nodes), text, str(config), "fencing" in tomllib.loads(text))


def check_nodes(config: ClusterConfig, source: str) -> None:
    """ConfigError unless the nodes are ``n1..nN`` with ``node_id`` 1..N (see the module
    docstring)."""
    problems = []
    count = len(config.nodes)
    for i, node in enumerate(config.nodes):
        if not 1 <= node.node_id <= count:
            reason = f"must be 1..{count} in the lab (one per node, its corosync node id)"
            problems.append(ConfigProblem(source, f"nodes[{i}].node_id", reason))
        elif node.name != f"n{node.node_id}":
            reason = (
                f"the lab names node_id {node.node_id} 'n{node.node_id}' (as a board names "
                f"itself from its node number), not {node.name!r}"
            )
            problems.append(ConfigProblem(source, f"nodes[{i}].name", reason))
    if problems:
        raise ConfigError(problems)


def _builtin(nodes: int, *, vm: bool) -> LabPlan:
    spec = ClusterSpec(nodes=nodes)
    if vm:
        from haoslab.vm.guestconfig import guest_cluster_toml

        toml = guest_cluster_toml(spec, "lab")
    elif nodes >= 2:
        from haoslab.demo.cluster import demo_toml

        toml = demo_toml(spec)
    else:
        from haoslab.harness.systemd_cluster import cluster_toml

        toml = cluster_toml(spec, "lab")
    parse_config(toml, BUILTIN)  # the lab's own configurations must pass the loader too
    return LabPlan(nodes, toml, BUILTIN, "fencing" in tomllib.loads(toml))


def vm_toml(lab: LabPlan) -> str:
    """The configuration the guests get: with ``fence_haos_qmp`` over QMP as ``[fencing]``
    unless it has one of its own; checked by the loader again (ConfigError if the two
    collide)."""
    from haoslab.vm.guestconfig import fencing_toml

    if lab.fencing:
        return lab.toml
    toml = lab.toml.rstrip("\n") + "\n\n" + fencing_toml(ClusterSpec(nodes=lab.nodes))
    parse_config(toml, f"{lab.source} with the lab's QMP fencing")
    return toml
