"""Deterministic simulation: the real policy cores over simulated nodes, on a fake clock.

The pipeline is the one the daemons run: faults happen in the :class:`World`; the CMF
(crash reports) and the HM (audits) turn them into error reports; the availability service's
core -- the daemon's own :class:`~haos.services.crimbrain.Brain` -- correlates them (CEC),
decides (CRIM), and feeds the notifications to the ASR and back to the CEC; the decisions'
actions are carried out in the world. The simulated clock stands for the nodes' shared one
(the Brain runs on wall-clock time). Invariants are checked after every CRIM decision.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from haos.clock import WallTime
from haos.cluster.asr.report import AvailabilityReport
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import (
    Action,
    AssignRole,
    Decision,
    Publish,
    RebootNode,
    RecoverComponent,
    Repair,
    TakeOffline,
)
from haos.cluster.crim.state import CrimState, Health, OfflineBy
from haos.cluster.crim.topology import Topology
from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec, ClusterConfig
from haos.model.classes import Method
from haos.model.names import ancestors_of
from haos.model.reports import (
    ComponentOutOfService,
    ErrorKind,
    ErrorReport,
    RecoveryInitiated,
    RecoveryLevel,
)
from haos.model.states import AdminState, AvailabilityState
from haos.services.crimbrain import Brain
from haos.sim import invariants as inv
from haos.sim.world import Proc, Timings, World


@dataclass(frozen=True)
class SimSettings:
    faults: int = 100
    seed: int = 0
    mean_gap: float = 3.0  # mean seconds between faults
    settle: float = 90.0  # quiet time after the last fault before the final checks
    audit_period: float = 1.0
    audit_timeout: float = 0.5
    timings: Timings = field(default_factory=Timings)
    stop_at_first_violation: bool = False


@dataclass
class SimResult:
    steps: int = 0
    sim_time: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    violations: list[inv.Violation] = field(default_factory=list)
    report: AvailabilityReport | None = None


class Simulation:
    def __init__(self, config: ClusterConfig, settings: SimSettings) -> None:
        self.config = config
        self.s = settings
        self.topo = Topology(config)
        self.brain = Brain.initial(self.topo, config.correlation, 0.0)
        # The CRIM's state as of the decision last checked and carried out in the world: the
        # brain's, except while the decisions on one report are carried out one by one.
        self.state: CrimState = self.brain.crim
        self.rng = random.Random(settings.seed)
        self.world = World(self.topo, self.rng, settings.timings)
        self.hm = AuditMonitor()
        self.result = SimResult()
        self.now = 0.0
        self._queue: list[tuple[float, int, str, Callable[[], object]]] = []
        self._seq = 0
        self._told: dict[str, AvailabilityState] = {}
        self._wakes: dict[str, float] = {}
        self._last_event = "start"
        self.trace: list[str] = []
        self._audited = {
            c.name
            for c in self.topo.tree
            if self.topo.classes.is_a(c.cls, "software") and c.name in self.topo.group_of
        }
        # reboots ordered for error reports about members of each group: (time, node)
        self._group_reboots: dict[str, list[tuple[float, str]]] = {}
        self._specs: dict[str, list[AuditSpec]] = {}
        for a in config.audits:
            self._specs.setdefault(a.component, []).append(a)
        self._outages = inv.ServedWhenPossible({g: self.outage_grace(g) for g in self.topo.groups})

    # --- the clock ----------------------------------------------------------------------

    def at(self, delay: float, label: str, fn: Callable[[], object]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + max(0.0, delay), self._seq, label, fn))

    def run(self) -> SimResult:
        from haos.sim.faults import FaultInjector  # the injector drives this engine

        self._boot()
        injector = FaultInjector(self)
        end = injector.schedule(self.s.faults)
        self.at(end + self.s.settle, "final checks", self._final_checks)
        self._done = False
        while self._queue and not self._done:
            t, _, label, fn = heapq.heappop(self._queue)
            self.now = t
            self._last_event = label
            fn()
            if self.s.stop_at_first_violation and self.result.violations:
                break
        self.result.sim_time = self.now
        self.result.report = self.brain.asr.report(self.now)
        return self.result

    def _wake(self, name: str, when: float | None, fn: Callable[[], object]) -> None:
        """Book one wake-up per named timer, keeping only the earliest pending one."""
        if when is None:
            return
        # A timer never fires twice at one instant: a policy that leaves a deadline in the
        # past then shows up as a bounded-recovery violation instead of a livelock.
        when = max(when, self.now + 0.001) if when <= self.now else when
        pending = self._wakes.get(name)
        if pending is not None and pending <= when and pending >= self.now:
            return
        self._wakes[name] = when

        def fire() -> None:
            if self._wakes.get(name) == when:
                del self._wakes[name]
                fn()

        self.at(when - self.now, name, fire)

    # --- start-up -----------------------------------------------------------------------

    def _boot(self) -> None:
        for node in self.topo.nodes:
            self.node_up(node)
        for comp in sorted(self.topo.tree, key=lambda c: (c.name.count("/"), c.name)):
            if self.topo.host_of.get(comp.name) is None and self.world.managed(comp.name):
                self.start(comp.name, 0.0)

    # --- the pipeline -------------------------------------------------------------------

    def deliver(self, event: ev.Event) -> Decision:
        """One CRIM step: decide, check invariants, carry out the actions."""
        decision = self.brain.decide(event, WallTime(self.now))
        self._carry_out([(event, decision)])
        return decision

    def report_error(self, report: ErrorReport) -> None:
        correlation, decisions = self.brain.report(report, WallTime(self.now))
        self.trace.append(f"{self.now:10.3f} cec: {correlation.reason}")
        events = [ev.ErrorReported(r) for r in correlation.reports]
        self._carry_out(list(zip(events, decisions, strict=True)))

    def _tick(self) -> None:
        """What is due now, as the daemon's ticker decides it: released CEC holds, a Tick."""
        now = WallTime(self.now)
        self._carry_out([(e, self.brain.decide(e, now)) for e in self.brain.due(now)])

    def _carry_out(self, decided: list[tuple[ev.Event, Decision]]) -> None:
        """Each decision in turn: check the invariants on its state, carry its actions out in
        the world; then book the brain's next deadline."""
        for event, decision in decided:
            self.state = decision.state
            self.result.steps += 1
            self.trace.append(f"{self.now:10.3f} {self._last_event}: {decision.reason}")
            if decision.refused:
                self.result.refused += 1
            self._check(decision, f"{type(event).__name__} ({self._last_event})")
            if isinstance(event, ev.ErrorReported):
                self._check_reboots(event.report, decision)
            for action in decision.actions:
                self._execute(action)
        self.brain.take_news()  # the cluster's event records: no nodes here to post them to
        self._wake("tick", self.brain.next_deadline(), self._tick)

    def _hm_cycle(self) -> None:
        for spec in self.hm.due(self.now):
            if self.world.proc[spec.component] is Proc.RUNNING:
                self.hm.result(spec.component, spec.name, True, self.now)
        for report in self.hm.tick(self.now):
            self.report_error(report)
        self._wake("hm", self.hm.next_deadline(), self._hm_cycle)

    def _audit(self, component: str, on: bool) -> None:
        if component not in self._audited:
            return
        if on:
            self.hm.unregister(component)
            for spec in self._audits_of(component):
                self.hm.register(spec, self.now)
            self._wake("hm", self.hm.next_deadline(), self._hm_cycle)
        else:
            self.hm.unregister(component)

    # --- the world's reactions ----------------------------------------------------------

    def start(self, comp: str, delay: float, cure: bool = False) -> None:
        """(Re)start a component's process; it reports available when up."""
        w = self.world
        w.incarnation[comp] += 1
        inc = w.incarnation[comp]
        w.proc[comp] = Proc.STARTING
        self._audit(comp, False)

        def up() -> None:
            if w.incarnation[comp] != inc or not w.alive(comp):
                return
            if comp in w.unrunnable:
                self._start_failed(comp)
                return
            if cure:
                w.broken[comp] = False
            w.proc[comp] = Proc.RUNNING
            w.failed_since.pop(comp, None)
            self._audit(comp, True)
            if w.broken[comp]:
                self.at(w.t.broken_recrash, f"recrash {comp}", lambda: self.crash(comp))
            self.deliver(ev.ComponentAvailable(comp))

        self.at(delay, f"start {comp}", up)

    def _start_failed(self, comp: str) -> None:
        """The start failed with a hard error: nothing runs, the agent reports it."""
        self.world.proc[comp] = Proc.STOPPED
        detail = "not installed on this node: start returned OCF_ERR_INSTALLED"
        report = ErrorReport(comp, ErrorKind.HARD, self.now, source="ocf", detail=detail)
        delay = self.world.t.start_failure_report
        self.at(delay, f"start failure report {comp}", lambda: self._if_alive(comp, report))

    def operator_clears(self, comp: str) -> None:
        """An operator looks into a component held out of service, fixes it, brings it on-line."""
        lo, hi = self.world.t.operator_clears

        def clear() -> None:
            self.world.unrunnable.discard(comp)  # what was missing is installed again
            if self.state.components[comp].offline_by is OfflineBy.FAULT:
                self.deliver(ev.OperatorOnline(comp))

        self.at(self.rng.uniform(lo, hi), f"operator clears {comp}", clear)

    def crash(self, comp: str) -> None:
        w = self.world
        if w.proc[comp] not in (Proc.RUNNING, Proc.HUNG) or not w.alive(comp):
            return
        w.incarnation[comp] += 1
        w.proc[comp] = Proc.DEAD
        w.failed_since.setdefault(comp, self.now)
        self._audit(comp, False)
        cls = self.topo.tree.get(comp).cls
        kind = ErrorKind.HARDWARE if self.topo.classes.is_a(cls, "hardware") else ErrorKind.CRASH
        report = ErrorReport(comp, kind, self.now, source="cmf", detail="process died")
        self.at(w.t.crash_report, f"crash report {comp}", lambda: self._if_alive(comp, report))

    def _if_alive(self, comp: str, report: ErrorReport) -> None:
        if self.world.alive(comp):
            self.report_error(report)

    def hang(self, comp: str) -> None:
        w = self.world
        if w.proc[comp] is not Proc.RUNNING:
            return
        w.proc[comp] = Proc.HUNG
        w.failed_since.setdefault(comp, self.now)

    def node_down(self, node: str, reboot: bool) -> None:
        w = self.world
        if not w.node_up[node]:
            return
        w.node_up[node] = False
        w.boot_epoch[node] += 1
        for comp in self.topo.hosted[node]:
            w.incarnation[comp] += 1
            w.proc[comp] = Proc.STOPPED
            w.failed_since.pop(comp, None)
            self._audit(comp, False)
        at = WallTime(self.now)  # the simulated clock stands for the nodes' shared one
        self.at(
            w.t.node_loss_detection,
            f"node {node} lost",
            lambda: self.deliver(ev.NodeLeft(node, at)),
        )
        if reboot:
            self.at(w.t.reboot, f"node {node} rebooted", lambda: self.node_up(node))

    def node_up(self, node: str) -> None:
        w = self.world
        if w.node_up[node]:
            return
        w.node_up[node] = True
        self.deliver(ev.NodeJoined(node))
        for i, comp in enumerate(w.hosted_in_order(node)):
            if w.managed(comp):
                self.start(comp, w.t.restart + 0.01 * i, cure=True)

    def _execute(self, action: Action) -> None:
        w = self.world
        if isinstance(action, AssignRole):
            w.role[action.component] = action.new
        elif isinstance(action, RecoverComponent):
            self.result.recoveries[str(action.level)] += 1
            self._recover(action.component, action.level)
        elif isinstance(action, TakeOffline):
            w.incarnation[action.component] += 1
            w.proc[action.component] = Proc.STOPPED
            w.failed_since.pop(action.component, None)
            self._audit(action.component, False)
        elif isinstance(action, Repair):
            self.result.recoveries["repair"] += 1
            if w.alive(action.component):
                self.start(action.component, w.t.repair, cure=True)
        elif isinstance(action, RebootNode):
            self.result.recoveries["reboot-node"] += 1
            self.node_down(action.node, reboot=True)
        elif isinstance(action, Publish):  # the brain gave it to the ASR and the CEC
            note = action.notification
            if isinstance(note, ComponentOutOfService):
                self.operator_clears(note.component)
            if isinstance(note, RecoveryInitiated) and note.level is RecoveryLevel.FAILOVER:
                self.result.recoveries["failover"] += 1

    def _recover(self, comp: str, level: RecoveryLevel) -> None:
        w = self.world
        w.failed_since.pop(comp, None)
        if level is RecoveryLevel.RESTART:
            self.start(comp, w.t.restart)
            return
        # Soft reset: cures a hang most of the time; cannot revive a dead process.
        self._audit(comp, False)
        proc = w.proc[comp]
        cured = proc is Proc.RUNNING or (
            proc is Proc.HUNG and self.rng.random() < w.t.soft_reset_cures_hang
        )
        if cured:
            self.start(comp, w.t.soft_reset)
        elif proc is Proc.HUNG:
            w.failed_since[comp] = self.now  # still hung: the recovery deadline must catch it

    # --- invariants ---------------------------------------------------------------------

    def _violate(self, name: str, details: list[str], event: str) -> None:
        for d in details:
            self.result.violations.append(
                inv.Violation(self.result.steps, self.now, event, name, d)
            )

    def _check(self, decision: Decision, event: str) -> None:
        s, topo = self.state, self.topo
        self._violate(
            "legal-transitions", inv.legal_transitions(decision.actions, self._told), event
        )
        self._violate("one-primary", inv.single_primary(topo, s), event)
        self._violate("no-idle-spare", inv.no_idle_spare(topo, s, self.now), event)
        self._violate("within-capacity", inv.within_capacity(topo, s, self.now), event)
        self._violate("bounded-recovery", inv.recovery_bounded(topo, s, self.now, 0.01), event)
        self._violate("detected", self._undetected(), event)
        self._watch_outages(event)

    def _watch_outages(self, event: str) -> None:
        found = self._outages.observe(self.topo, self.state, self.usable, self.now)
        self._violate("served-when-possible", found, event)
        due = self._outages.next_due(self.topo)
        self._wake("outage watch", due, lambda: self._watch_outages("outage watch"))

    def usable(self, member: str) -> bool:
        """Whether ``member`` could serve now: its node is up, nothing in the world keeps it
        (or a container of it) from running, and no lock, operator's off-line or held fault
        keeps it out."""
        w, s = self.world, self.state
        if not w.alive(member):
            return False
        node = self.topo.host_of.get(member)
        if node is not None and s.nodes[node].admin is AdminState.LOCKED:
            return False
        if s.groups[self.topo.group_of[member]].admin is AdminState.LOCKED:
            return False
        for comp in (member, *ancestors_of(member)):
            rt = s.components.get(comp)
            if comp in w.unrunnable or w.broken.get(comp, False):
                return False
            # Its own off-line time (diagnostics) is short and ends by itself: not excluded.
            held = rt is not None and rt.offline_by in (OfflineBy.OPERATOR, OfflineBy.FAULT)
            if held or (rt is not None and rt.admin is AdminState.LOCKED):
                return False
        return True

    def outage_grace(self, group: str) -> float:
        """How long an instance of ``group`` may stay unserved while a member could serve it:
        every rung of the recovery ladder detected late and run to its deadline, then a
        repair and a restart."""
        policy = self.topo.groups[group].recovery
        detect = max(self.detection_bound(m) for m in self.topo.groups[group].members)
        rungs = policy.soft_reset_max + policy.restart_max + 1
        t = self.world.t
        return rungs * (policy.recovery_timeout + detect + t.crash_report) + t.repair + t.restart

    def _check_reboots(self, report: ErrorReport, decision: Decision) -> None:
        component = report.component
        reboots = [a.node for a in decision.actions if isinstance(a, RebootNode)]
        group = self.topo.group_of.get(component, component)
        earlier = self._group_reboots.setdefault(group, [])
        # Only a hard error tells the CRIM the program itself is at fault. The crash that
        # first shows a component broken on every node looks like any other: a reboot for it,
        # when the group's earlier fail-overs all stayed on that node, is the ladder's rule
        # (and is still held to one node per fault below).
        everywhere = component in self.world.unrunnable and report.kind is ErrorKind.HARD
        found = inv.component_fault_reboots(
            self.topo, component, reboots, earlier, self.now, everywhere
        )
        self._violate("one-node-per-component-fault", found, f"ErrorReported ({component})")
        earlier.extend((self.now, n) for n in reboots)

    def _audits_of(self, component: str) -> list[AuditSpec]:
        default = AuditSpec(component, "alive", self.s.audit_period, self.s.audit_timeout)
        return self._specs.get(component) or [default]

    def detection_bound(self, component: str) -> float:
        """Latest a hang of ``component`` may be detected: its quickest audit's worst case."""
        hold = self.config.correlation.hold_time
        return min(2 * a.period + a.timeout for a in self._audits_of(component)) + hold + 0.1

    def _undetected(self) -> list[str]:
        out = []
        for comp, since in self.world.failed_since.items():
            bound = self.detection_bound(comp)
            if self.state.components[comp].health is Health.HEALTHY and self.now - since > bound:
                out.append(f"{comp} failed at {since:.3f}s and is still believed healthy")
        for node, up in self.world.node_up.items():
            member = self.state.nodes[node].member
            if member and not up:
                pass  # detection is booked on the clock and checked in _final_checks
        return out

    def _final_checks(self) -> None:
        event = "final checks"
        self.deliver(ev.Tick())
        out = []
        for comp in self._audited | set(self.topo.group_of):
            rt = self.state.components[comp]
            proc = self.world.proc[comp]
            if proc is Proc.RUNNING and rt.health is not Health.HEALTHY:
                out.append(f"{comp} runs but the CRIM holds it {rt.health}")
            if proc is not Proc.RUNNING and rt.health is Health.HEALTHY:
                out.append(f"{comp} is {proc.value} but the CRIM holds it healthy")
        for node, up in self.world.node_up.items():
            if up != self.state.nodes[node].member:
                out.append(f"node {node} up={up} but member={self.state.nodes[node].member}")
        for inst in self.topo.instances:
            group = self.topo.instances[inst].group
            if not self.state.primaries(inst, self.topo) and any(
                self.state.components[m].health is Health.HEALTHY
                and self.state.components[m].admin.value == "unlocked"
                for m in self.topo.groups[group].members
            ):
                out.append(f"{inst} is unserved after the quiet period")
        self._violate("converged", out, event)
        self._done = True


__all__ = ["Method", "SimResult", "SimSettings", "Simulation"]
