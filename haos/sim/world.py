"""The simulated world: nodes and component processes that obey the CRIM's actions.

It stands in for the CMF, systemd and the hardware, with timings close to those measured
on real nodes (a killed unit is reported in ~3 ms, a node loss is detected in ~0.3 s).
It reports back through callbacks, never by reaching into the policy cores.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from haos.cluster.crim.topology import Topology
from haos.model.states import AvailabilityState


class Proc(enum.Enum):
    RUNNING = "running"
    HUNG = "hung"
    DEAD = "dead"
    STOPPED = "stopped"
    STARTING = "starting"


@dataclass(frozen=True)
class Timings:
    """Simulated latencies, in seconds."""

    crash_report: float = 0.003  # systemd -> CMF -> error report
    node_loss_detection: float = 0.32  # corosync token expiry
    soft_reset: float = 0.05
    restart: float = 0.25
    repair: float = 0.5
    reboot: float = 12.0
    soft_reset_cures_hang: float = 0.7  # probability
    broken_probability: float = 0.15  # a crash that recurs right after each restart
    broken_recrash: float = 0.1
    start_failure_report: float = 0.02  # a start that fails -> the agent's error report
    operator_clears: tuple[float, float] = (10.0, 60.0)  # an operator clears a held fault


Schedule = Callable[[float, str, Callable[[], None]], None]


class World:
    """What is really going on; ``schedule(delay, label, fn)`` books future happenings."""

    def __init__(self, topo: Topology, rng: random.Random, timings: Timings) -> None:
        self.topo = topo
        self.rng = rng
        self.t = timings
        self.node_up = dict.fromkeys(topo.nodes, False)
        self.boot_epoch = dict.fromkeys(topo.nodes, 0)
        self.proc = {c.name: Proc.STOPPED for c in topo.tree}
        self.incarnation = dict.fromkeys(self.proc, 0)
        self.broken = dict.fromkeys(self.proc, False)
        # Components whose every start fails with a hard error (say, their program is missing
        # on every node); only an operator's fix makes them runnable again.
        self.unrunnable: set[str] = set()
        self.role: dict[str, AvailabilityState] = {}
        self.failed_since: dict[str, float] = {}  # component -> when it went wrong, undetected

    def alive(self, component: str) -> bool:
        node = self.topo.host_of.get(component)
        return node is None or self.node_up[node]

    def managed(self, component: str) -> bool:
        """Components the simulated CMF starts and watches: everything but node boards."""
        return not self.topo.is_node_component(component)

    def hosted_in_order(self, node: str) -> list[str]:
        """A node's components, parents first."""
        return sorted(self.topo.hosted[node], key=lambda c: (c.count("/"), c))

    def runnable(self) -> list[str]:
        return [
            c
            for c, p in self.proc.items()
            if p is Proc.RUNNING
            and self.managed(c)
            and self.alive(c)
            and self.topo.host_of.get(c) is not None
        ]
