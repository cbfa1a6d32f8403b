"""The deterministic simulator: real policy cores, seeded faults, invariants every step."""

from __future__ import annotations

import dataclasses

import pytest

from haos.cluster.crim import events as ev
from haos.cluster.crim import policy as crim_policy
from haos.cluster.crim.actions import Decision, RebootNode
from haos.config.examples import builtin_examples, load_builtin_example
from haos.model.reports import ErrorKind
from haos.services import crimbrain
from haos.sim import engine, faults
from haos.sim.engine import SimSettings, Simulation

SEEDS = range(12)


@pytest.mark.parametrize("example", builtin_examples())
@pytest.mark.parametrize("seed", SEEDS)
def test_no_invariant_is_violated(example: str, seed: int) -> None:
    result = Simulation(load_builtin_example(example), SimSettings(faults=150, seed=seed)).run()
    assert [str(v) for v in result.violations] == []
    assert sum(result.faults.values()) == 150
    assert result.report is not None and 0.0 <= result.report.overall <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("example", builtin_examples())
def test_a_thousand_faults_leave_no_violation(example: str) -> None:
    result = Simulation(load_builtin_example(example), SimSettings(faults=1000, seed=99)).run()
    assert [str(v) for v in result.violations[:5]] == []
    # the run exercised every rung of the ladder, and components broken on every node
    assert {"restart", "soft-reset", "failover", "repair"} <= set(result.recoveries)
    assert result.faults["broken-everywhere"] > 0


def test_same_seed_same_run() -> None:
    cfg = load_builtin_example("mixed-models")
    a = Simulation(cfg, SimSettings(faults=100, seed=5))
    b = Simulation(cfg, SimSettings(faults=100, seed=5))
    ra, rb = a.run(), b.run()
    assert a.trace == b.trace and ra.faults == rb.faults and ra.sim_time == rb.sim_time


def _broken(drop: type) -> object:
    """A CRIM that forgets to carry out one kind of action."""

    def decide(*args: object) -> Decision:
        d = crim_policy.decide(*args)  # type: ignore[arg-type]
        kept = tuple(a for a in d.actions if not isinstance(a, drop))
        return dataclasses.replace(d, actions=kept)

    return decide


def test_simulator_catches_a_crim_that_ignores_returning_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = crim_policy.decide

    def deaf(topo, state, event, now):  # type: ignore[no-untyped-def]
        if isinstance(event, ev.NodeJoined) and now > 1.0:
            return Decision(state, (), "join ignored")
        return real(topo, state, event, now)

    monkeypatch.setattr(crimbrain, "decide", deaf)
    result = Simulation(load_builtin_example("small-2n"), SimSettings(faults=60, seed=1)).run()
    assert "converged" in {v.invariant for v in result.violations}
    details = [v.detail for v in result.violations]
    assert any("member=False" in d for d in details), details


def test_simulator_catches_recoveries_left_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    real = crim_policy.decide

    def no_ticks(topo, state, event, now):  # type: ignore[no-untyped-def]
        if isinstance(event, ev.Tick):
            return Decision(state, (), "tick ignored")
        return real(topo, state, event, now)

    monkeypatch.setattr(crimbrain, "decide", no_ticks)
    settings = SimSettings(faults=200, seed=4, stop_at_first_violation=True)
    result = Simulation(load_builtin_example("small-2n"), settings).run()
    assert "bounded-recovery" in {v.invariant for v in result.violations}


def test_simulator_catches_two_primaries(monkeypatch: pytest.MonkeyPatch) -> None:
    from haos.cluster.crim import assign

    original = assign._pick_primary

    def greedy(work, group, inst, avoid, exclude):  # type: ignore[no-untyped-def]
        # Ignores the primary already serving the instance: a classic split-brain bug.
        return original(work, group, inst, avoid, exclude) or None

    def fill(work, group, inst, want, avoid):  # type: ignore[no-untyped-def]
        pick = greedy(work, group, inst, avoid, set())
        if pick is not None:
            rt = work.rt(pick)
            work.set_role(pick, assign._P, rt.instances | {inst})

    monkeypatch.setattr(assign, "_fill_primaries", fill)
    result = Simulation(load_builtin_example("small-2n"), SimSettings(faults=60, seed=2)).run()
    assert "one-primary" in {v.invariant for v in result.violations}


def test_simulator_catches_undetected_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.Simulation, "report_error", lambda self, report: None)
    result = Simulation(load_builtin_example("small-2n"), SimSettings(faults=40, seed=3)).run()
    assert "detected" in {v.invariant for v in result.violations}


@pytest.mark.parametrize("example", builtin_examples())
def test_a_component_broken_on_every_node_is_held_out_of_service_and_reboots_no_node(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faults, "FAULT_MIX", {"broken-everywhere": 1})
    sim = Simulation(load_builtin_example(example), SimSettings(faults=30, seed=7))
    result = sim.run()
    assert [str(v) for v in result.violations] == []
    assert result.faults["broken-everywhere"] > 0
    assert "reboot-node" not in result.recoveries
    trace = "\n".join(sim.trace)
    assert "taken out of service until an operator brings it on-line (hard error" in trace
    assert "its fault (hard error reported by ocf" in trace  # the operator cleared it


def test_simulator_catches_a_crim_that_reboots_nodes_for_a_component_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = crim_policy.decide

    def rebooting(topo, state, event, now):  # type: ignore[no-untyped-def]
        d = real(topo, state, event, now)
        if isinstance(event, ev.ErrorReported) and event.report.kind is ErrorKind.HARD:
            node = topo.host_of[event.report.component]
            return dataclasses.replace(d, actions=(*d.actions, RebootNode(node, "bad")))
        return d

    monkeypatch.setattr(crimbrain, "decide", rebooting)
    monkeypatch.setattr(faults, "FAULT_MIX", {"broken-everywhere": 1})
    settings = SimSettings(faults=5, seed=1, stop_at_first_violation=True)
    result = Simulation(load_builtin_example("small-2n"), settings).run()
    assert "one-node-per-component-fault" in {v.invariant for v in result.violations}


def test_every_simulated_decision_is_made_by_the_daemons_availability_core() -> None:
    """The simulator drives the daemon's Brain: it numbers every decision the run checked,
    its availability records are the run's figures, and its state is one a daemon's
    availability service restores from its checkpoint."""
    cfg = load_builtin_example("mixed-models")
    sim = Simulation(cfg, SimSettings(faults=80, seed=3))
    result = sim.run()
    assert result.violations == [] and result.steps > 80
    assert sim.brain.seq == result.steps
    assert result.report == sim.brain.asr.report(sim.now)
    assert sim.state == sim.brain.crim and sim.brain.news == []
    restored = crimbrain.Brain.decode(sim.topo, cfg.correlation, sim.brain.encode())
    assert restored.seq == sim.brain.seq and restored.crim == sim.brain.crim
    assert restored.asr.report(sim.now) == result.report
