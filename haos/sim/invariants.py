"""Invariants the simulator checks after every step.

Each check returns human sentences naming what is wrong; an empty list means it holds.
They read the CRIM's state (what it decided) and the simulated world (what is true).
"""

from __future__ import annotations

from dataclasses import dataclass

from haos.cluster.crim.actions import Action, AssignRole
from haos.cluster.crim.state import CrimState, Health
from haos.cluster.crim.topology import Topology
from haos.cluster.crim.work import Work
from haos.model.states import AvailabilityState, is_legal

_P = AvailabilityState.PRIMARY


@dataclass(frozen=True)
class Violation:
    step: int
    at: float
    event: str
    invariant: str
    detail: str

    def __str__(self) -> str:
        return (
            f"step {self.step} (t={self.at:.3f}s, after {self.event}): "
            f"invariant '{self.invariant}' violated: {self.detail}"
        )


def legal_transitions(actions: tuple[Action, ...], told: dict[str, AvailabilityState]) -> list[str]:
    """Every AssignRole follows FIG 5 and starts from the state the component was last told."""
    out = []
    for a in actions:
        if not isinstance(a, AssignRole):
            continue
        known = told.get(a.component, AvailabilityState.OFFLINE)
        if a.old is not known:
            out.append(f"{a.component}: told {a.old} -> {a.new} but its state was {known}")
        if a.old is not a.new and not is_legal(a.old, a.new):
            out.append(f"{a.component}: {a.old} -> {a.new} is not an allowed transition")
        told[a.component] = a.new
    return out


def single_primary(topo: Topology, state: CrimState) -> list[str]:
    """No exclusive service instance has two primaries."""
    out = []
    for inst, spec in topo.instances.items():
        if not topo.groups[spec.group].model.exclusive_primary:
            continue
        primaries = state.primaries(inst, topo)
        if len(primaries) > 1:
            out.append(f"{inst} has {len(primaries)} primaries: {', '.join(primaries)}")
    return out


def no_idle_spare(topo: Topology, state: CrimState, now: float) -> list[str]:
    """No instance lacks a primary while a healthy, eligible spare of its group is idle."""
    work = Work(topo, state, now)  # read-only use: its eligibility rules are the CRIM's
    out = []
    for group, instances in topo.instances_of.items():
        spares = [
            m
            for m in topo.groups[group].members
            if state.components[m].state is AvailabilityState.SPARE and work.eligible(m)
        ]
        if not spares:
            continue
        for inst in instances:
            if not state.primaries(inst, topo):
                out.append(f"{inst} has no primary while {spares[0]} is an idle healthy spare")
    return out


def recovery_bounded(topo: Topology, state: CrimState, now: float, slack: float) -> list[str]:
    """No recovery in place outlives its deadline (plus the tick slack)."""
    out = []
    for comp, rt in state.components.items():
        rec = rt.recovery
        if rt.health is Health.RECOVERING and rec is not None and now > rec.deadline + slack:
            out.append(
                f"{comp} still recovering ({rec.level}) {now - rec.deadline:.3f}s past its deadline"
            )
    return out


def component_fault_reboots(
    topo: Topology,
    component: str,
    reboots: list[str],
    earlier: list[tuple[float, str]],
    now: float,
    broken_everywhere: bool,
) -> list[str]:
    """A fault of one component takes at most one node out of service, and a fault that
    follows the component to every node (``broken_everywhere``) none.

    ``component`` is the one the decision's error report is about (not a node's own
    component), ``reboots`` the nodes the decision reboots, and ``earlier`` the reboots
    (time, node) ordered before for reports about the same service group.
    """
    if not reboots or topo.is_node_component(component):
        return []
    if broken_everywhere:
        return [f"a hard error of {component}, broken on every node, rebooted {reboots}"]
    group = topo.group_of.get(component)
    window = topo.recovery_policy(component).group_probation
    nodes = {n for t, n in earlier if now - t < window} | set(reboots)
    if len(nodes) > 1:
        return [
            f"faults of {group or component} rebooted {len(nodes)} nodes within "
            f"{window:g} s: {', '.join(sorted(nodes))}"
        ]
    return []
