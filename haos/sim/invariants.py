"""Invariants the simulator checks after every step.

Each check returns human sentences naming what is wrong; an empty list means it holds.
They read the CRIM's state (what it decided) and the simulated world (what is true).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def within_capacity(topo: Topology, state: CrimState, now: float) -> list[str]:
    """No member holds more roles than its group's capacity while another could take the
    excess: an eligible spare off probation (when the model wants more members in that
    role) or a holder with room. Placement follows the model, not the order in which the
    members became available."""
    work = Work(topo, state, now)  # read-only use: its eligibility rules are the CRIM's
    out = []
    for group, spec in topo.groups.items():
        if not topo.spreads(group):
            continue
        shape = topo.shapes[group]
        for role, cap, wanted in (
            (_P, shape.primary_capacity, spec.active),
            (AvailabilityState.SECONDARY, shape.standby_capacity, spec.standby),
        ):
            holders = [m for m in spec.members if state.components[m].state is role]
            over = [
                m
                for m in holders
                if len(state.components[m].instances) > cap
                and state.components[m].health is Health.HEALTHY
            ]
            free = [m for m in holders if len(state.components[m].instances) < cap]
            if len(holders) < wanted:
                free += [
                    m
                    for m in spec.members
                    if state.components[m].state is AvailabilityState.SPARE
                    and not work.on_probation(m)
                ]
            free = [m for m in free if work.eligible(m)]
            if over and free:
                n = len(state.components[over[0]].instances)
                out.append(
                    f"{over[0]} is {role} of {n} instances of {group} (capacity {cap}) "
                    f"while {free[0]} could take one"
                )
    return out


@dataclass
class _Outage:
    began: float  # first seen unserved
    seen: float  # last observed
    could: tuple[str, ...]  # members that could serve it when last observed
    counted: float = 0.0  # seconds of the outage during which some member could serve it
    flagged: bool = False


class ServedWhenPossible:
    """No instance stays without a healthy primary, for longer than its group's grace in
    all, while a member of its group could serve it.

    ``usable(member)`` is the world's word (its node is up, nothing keeps it from running, no
    operator or held fault keeps it out). Within one outage the time during which some member
    was usable adds up, so a stream of faults that now and then leaves no member usable does
    not hide an outage the CRIM should have ended; the grace covers detection and the
    recovery ladder. Each outage past its grace is reported once. This catches a CRIM that
    loses track of a member (holds it absent while the world runs it, or never starts it
    again), which no check of the CRIM's own state sees.
    """

    def __init__(self, grace: Mapping[str, float]) -> None:
        self.grace = grace  # group -> seconds
        self.outages: dict[str, _Outage] = {}  # instance -> its current outage

    def observe(
        self, topo: Topology, state: CrimState, usable: Callable[[str], bool], now: float
    ) -> list[str]:
        out = []
        for inst, spec in topo.instances.items():
            if _served(topo, state, inst):
                self.outages.pop(inst, None)
                continue
            could = tuple(m for m in topo.groups[spec.group].members if usable(m))
            o = self.outages.setdefault(inst, _Outage(now, now, could))
            if o.could:
                o.counted += now - o.seen
            o.seen, o.could = now, could
            grace = self.grace[spec.group]
            if o.counted > grace and not o.flagged:
                o.flagged = True
                out.append(
                    f"{inst} unserved since {o.began:.3f} s, {o.counted:.3f} s of it while a "
                    f"member could serve it (grace {grace:g} s); now usable: "
                    f"{', '.join(could) or 'none'}"
                )
        return out

    def next_due(self, topo: Topology) -> float | None:
        """When the earliest outage being watched would run out of grace."""
        due = [
            o.seen + self.grace[topo.instances[i].group] - o.counted
            for i, o in self.outages.items()
            if o.could and not o.flagged
        ]
        return min(due) if due else None


def _served(topo: Topology, state: CrimState, inst: str) -> bool:
    return any(state.components[m].health is Health.HEALTHY for m in state.primaries(inst, topo))


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
