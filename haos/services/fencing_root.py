"""The one place that picks how a node's cluster daemon fences: from ``[fencing]``.

:func:`build_fencing` turns the parsed :class:`~haos.config.model.FencingSpec` into the
daemon's :class:`~haos.cluster.fencing.types.Fencer` and its optional
:class:`~haos.cluster.fencing.watchdog.SelfFencer`; ``haos-clusterd`` calls it once at
start and hands both to the CMM. Nothing else chooses a fencing implementation.

* Each node gets the device its table says: a fence agent (all agent nodes share one
  :class:`~haos.cluster.fencing.agent.FenceAgentFencer`), a command
  (:class:`~haos.cluster.fencing.command.CommandFencer`) or none
  (:class:`~haos.cluster.fencing.compose.NoDevice`: the node stays "to be fenced").
* Every fencing waits :func:`~haos.cluster.cmm.policy.fence_delay` first, with the delays
  the daemon holds *now* (they may change while it runs, from the repository's settings).
* Self-fencing arms the watchdog the section names; by default the image's
  ``/dev/watchdog-haos`` (softdog) where it exists, and nothing where it does not.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from haos.cluster.cmm.policy import fence_delay
from haos.cluster.fencing.agent import AgentDevice, FenceAgentFencer
from haos.cluster.fencing.command import CommandFencer
from haos.cluster.fencing.compose import Delayed, NoDevice, PerNode, Sleep
from haos.cluster.fencing.types import FenceAction, Fencer, check_action
from haos.cluster.fencing.watchdog import DevWatchdog, SelfFencer, Watchdog
from haos.config.model import ClusterConfig, FenceDeviceSpec, NodeSpec, SelfFenceSpec
from haos.errors import ConfigError, ConfigProblem

log = logging.getLogger(__name__)

Delays = Callable[[], tuple[float, float]]
"""The delays in force now: (base delay, two-node priority delay), in seconds."""


@dataclass(frozen=True)
class Fencing:
    """What the CMM is built with. ``described``: one line per node, for the start log;
    ``unfenced``: the nodes without a device."""

    fencer: Fencer
    action: FenceAction
    self_fencer: SelfFencer | None
    self_fence_after: float | None
    described: tuple[str, ...]
    unfenced: frozenset[str] = frozenset()

    @property
    def has_devices(self) -> bool:
        return len(self.unfenced) < len(self.described)


def build_fencing(
    config: ClusterConfig,
    me: NodeSpec,
    delays: Delays,
    *,
    exists: Callable[[str], bool] = os.path.exists,
    watchdog: Callable[[str, int], Watchdog] = DevWatchdog,
    sleep: Sleep = asyncio.sleep,
) -> Fencing:
    """The fencer and self-fencer of node ``me``; ConfigError when a required watchdog is
    missing. ``exists``, ``watchdog`` and ``sleep`` reach the world (tests pass their own)."""
    spec = config.fencing
    agents: dict[str, AgentDevice] = {}
    fencers: dict[str, Fencer] = {}
    described = []
    for node in config.nodes:
        device = spec.device_of(node.name)
        described.append(f"{node.name}: {_describe(device)}")
        if device.kind == "agent":
            agents[node.name] = AgentDevice(device.agent, device.params, device.password_file)
        elif device.kind == "command":
            fencers[node.name] = CommandFencer(device.command, timeout=spec.timeout)
    if agents:
        shared = FenceAgentFencer(agents, timeout=spec.timeout)
        fencers.update((name, shared) for name in agents)

    def delay_for(target: NodeSpec) -> float:
        base, priority = delays()
        return fence_delay(config.nodes, me, target, base, priority)

    fencer = Delayed(PerNode(fencers, NoDevice()), delay_for, sleep)
    self_fencer = _self_fencer(config, spec.self_fence, exists, watchdog)
    after = spec.self_fence.after if self_fencer is not None and spec.self_fence else None
    unfenced = frozenset(n.name for n in config.nodes if spec.device_of(n.name).kind == "none")
    action = check_action(spec.action)
    built = Fencing(fencer, action, self_fencer, after, tuple(described), unfenced)
    _log(built, config)
    return built


def _describe(device: FenceDeviceSpec) -> str:
    if device.kind == "agent":
        options = AgentDevice(device.agent, device.params, device.password_file).redacted()
        return f"agent {device.agent} {options}".rstrip()
    if device.kind == "command":
        return "command " + " ".join(device.command)
    return "none"


def _self_fencer(
    config: ClusterConfig,
    spec: SelfFenceSpec | None,
    exists: Callable[[str], bool],
    watchdog: Callable[[str, int], Watchdog],
) -> SelfFencer | None:
    if spec is None:
        log.info("self-fencing is off ([fencing] self_fence = false)")
        return None
    if not exists(spec.device):
        if spec.required:
            reason = f"no watchdog device {spec.device} on this node"
            raise ConfigError([ConfigProblem(config.source, "fencing.self_fence.device", reason)])
        log.info("self-fencing is off: no watchdog %s on this node", spec.device)
        return None
    log.info(
        "self-fencing on: inquorate for %g s stops petting %s (timeout %g s)",
        spec.after,
        spec.device,
        spec.timeout,
    )
    device = watchdog(spec.device, math.ceil(spec.timeout))
    return SelfFencer(device, self_fence_after=spec.after, required=spec.required)


def _log(built: Fencing, config: ClusterConfig) -> None:
    if not built.has_devices:
        log.error(
            "NO FENCING CONFIGURED (no [fencing] agent or command in %s): a node that departs "
            "stays 'to be fenced' and its work is NOT taken over",
            config.source or "the configuration",
        )
        return
    for line in built.described:
        log.info("fencing %s (action %s)", line, built.action)
    for name in sorted(built.unfenced):
        log.warning("%s has no fence device: its work is not taken over when it departs", name)
