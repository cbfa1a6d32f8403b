"""A seeded random fault schedule for the simulator.

Faults are booked at random times (exponential gaps); each picks its target when it fires,
from what is running then, so every fault hits something real. Operator actions that take
something away (lock, off-line) are undone a while later, so the cluster can heal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from haos.cluster.crim import events as ev
from haos.model.states import AvailabilityState

if TYPE_CHECKING:
    from haos.sim.engine import Simulation

# kind -> weight
FAULT_MIX: dict[str, int] = {
    "crash": 34,
    "hang": 18,
    "node-loss": 14,
    "switchover": 10,
    "lock": 8,
    "lock-node": 4,
    "offline": 6,
    "self-offline": 6,
    "broken-everywhere": 2,
}


class FaultInjector:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rng = sim.rng
        self._kinds = list(FAULT_MIX)
        self._weights = list(FAULT_MIX.values())

    def schedule(self, count: int) -> float:
        """Book ``count`` faults; return the time of the last one."""
        t = 1.0
        for _ in range(count):
            t += self.rng.expovariate(1.0 / self.sim.s.mean_gap)
            kind = self.rng.choices(self._kinds, self._weights)[0]
            self.sim.at(t, f"fault {kind}", lambda k=kind: self._fire(k))  # type: ignore[misc]
        return t

    def _fire(self, kind: str) -> None:
        fire = getattr(self, "_" + kind.replace("-", "_"))
        if fire():
            self.sim.result.faults[kind] += 1
        else:
            self.sim.result.faults[kind + " (no target)"] += 1

    def _pick(self, items: list[str]) -> str | None:
        return self.rng.choice(sorted(items)) if items else None

    def _crash(self) -> bool:
        target = self._pick(
            [c for c in self.sim.world.runnable() if c in self.sim.topo.group_of] + self._unhosted()
        )
        if target is None:
            return False
        self.sim.world.broken[target] = self.rng.random() < self.sim.world.t.broken_probability
        self.sim.crash(target)
        return True

    def _unhosted(self) -> list[str]:
        w = self.sim.world
        return [
            c
            for c, node in self.sim.topo.host_of.items()
            if node is None and c in self.sim.topo.group_of and w.proc[c].value == "running"
        ]

    def _broken_everywhere(self) -> bool:
        """One component's program goes missing on every node: every start of any member
        fails with a hard error until an operator fixes it, and its primaries die (so the
        fault shows at once: their restarts fail, as does every later start of a member)."""
        w = self.sim.world
        groups = [
            g
            for g, spec in self.sim.topo.groups.items()
            if all(self.sim.topo.host_of.get(m) is not None for m in spec.members)
            and not w.unrunnable & set(spec.members)
        ]
        group = self._pick(groups)
        if group is None:
            return False
        members = self.sim.topo.groups[group].members
        w.unrunnable.update(members)
        for m in members:
            if self.sim.state.components[m].state is AvailabilityState.PRIMARY:
                self.sim.crash(m)
        return True

    def _hang(self) -> bool:
        audited = [c for c in self.sim.world.runnable() if c in self.sim._audited]
        target = self._pick(audited)
        if target is None:
            return False
        self.sim.hang(target)
        return True

    def _node_loss(self) -> bool:
        up = [n for n, u in self.sim.world.node_up.items() if u]
        if len(up) <= 1:
            return False  # keep one node: a whole-cluster outage is not this simulator's topic
        node = self._pick(up)
        assert node is not None
        self.sim.node_down(node, reboot=False)
        back = self.rng.uniform(5.0, 30.0)
        self.sim.at(back, f"node {node} returns", lambda: self.sim.node_up(node))
        return True

    def _switchover(self) -> bool:
        target = self._pick(list(self.sim.topo.instances))
        if target is None:
            return False
        self.sim.deliver(ev.OperatorSwitchover(target))
        return True

    def _lock(self) -> bool:
        target = self._pick(list(self.sim.topo.group_of))
        return self._lock_for_a_while(target)

    def _lock_node(self) -> bool:
        return self._lock_for_a_while(self._pick(list(self.sim.topo.nodes)))

    def _lock_for_a_while(self, target: str | None) -> bool:
        if target is None:
            return False
        self.sim.deliver(ev.OperatorLock(target))
        self.sim.at(
            self.rng.uniform(3.0, 20.0),
            f"unlock {target}",
            lambda: self.sim.deliver(ev.OperatorUnlock(target)),
        )
        return True

    def _offline(self) -> bool:
        candidates = [
            c for c in self.sim.topo.group_of if self.sim.state.components[c].offline_by is None
        ]
        target = self._pick(candidates)
        if target is None:
            return False
        self.sim.deliver(ev.OperatorOffline(target))
        self.sim.at(
            self.rng.uniform(3.0, 20.0),
            f"online {target}",
            lambda: self.sim.deliver(ev.OperatorOnline(target)),
        )
        return True

    def _self_offline(self) -> bool:
        running = [
            c
            for c in self.sim.world.runnable()
            if c in self.sim.topo.group_of
            and self.sim.state.components[c].state is not AvailabilityState.OFFLINE
        ]
        target = self._pick(running)
        if target is None:
            return False
        self.sim.deliver(ev.OfflineRequested(target, "diagnostics"))

        def back() -> None:
            rt = self.sim.state.components[target]
            if rt.offline_by is not None and rt.offline_by.value == "self":
                self.sim.start(target, 0.0)

        self.sim.at(self.rng.uniform(2.0, 10.0), f"{target} back from diagnostics", back)
        return True
