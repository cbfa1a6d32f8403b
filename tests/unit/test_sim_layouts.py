"""The simulator over layouts beyond the shipped examples, and the invariants that guard them.

* ``nested``: a 2N group inside members of another 2N group (``haoslab.testing.layouts``);
* ``n_plus_m``: N+M with two active members, one standby and two instances on three nodes.

Each invariant added for them is shown to catch the CRIM behaviour it was written against,
reintroduced on purpose (a mutation test).
"""

from __future__ import annotations

import _layouts as layouts
import pytest

from haos.cluster.crim import assign, ladder, policy
from haos.cluster.crim.actions import TakeOffline
from haos.cluster.crim.state import Health
from haos.cluster.crim.work import Work
from haos.config.model import ClusterConfig
from haos.sim.engine import SimResult, SimSettings, Simulation


def run(config: ClusterConfig, faults: int, seed: int, mean_gap: float = 3.0) -> Simulation:
    sim = Simulation(config, SimSettings(faults=faults, seed=seed, mean_gap=mean_gap))
    sim.run()
    return sim


def invariants(result: SimResult) -> set[str]:
    return {v.invariant for v in result.violations}


def served_at_the_end(sim: Simulation, inst: str) -> bool:
    return any(
        sim.state.components[m].health is Health.HEALTHY
        for m in sim.state.primaries(inst, sim.topo)
    )


def loses_nested_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CRIM as it was: what a container holds is marked absent when the container goes,
    but neither told to stop nor started again when the container is back."""
    real = ladder.lose_contents

    def silent(work: Work, container: str, exclude_self: bool, stop: str = "") -> None:
        before = len(work.actions)
        real(work, container, exclude_self, stop)
        if not stop:
            kept = [a for a in work.actions[before:] if not isinstance(a, TakeOffline)]
            work.actions[before:] = kept

    monkeypatch.setattr(ladder, "lose_contents", silent)
    monkeypatch.setattr(policy, "lose_contents", silent)
    monkeypatch.setattr(policy, "_restart_contents", lambda work, container: None)


# --- nested groups ---------------------------------------------------------------------------


def test_the_reported_nested_run_converges_with_the_nested_group_served() -> None:
    """``simulate --faults 10 --seed 1`` on the nested layout: sub-si stayed absent before."""
    sim = run(layouts.nested(), faults=10, seed=1)
    assert [str(v) for v in sim.result.violations] == []
    assert served_at_the_end(sim, "sub-si")
    assert sim.result.report is not None
    sub = next(i for i in sim.result.report.instances if i.instance == "sub-si")
    assert sub.availability > 0.9  # was 9 %


@pytest.mark.parametrize("seed", range(10))
def test_the_nested_group_converges(seed: int) -> None:
    sim = run(layouts.nested(), faults=300, seed=seed)
    assert [str(v) for v in sim.result.violations[:5]] == []
    assert served_at_the_end(sim, "sub-si") and served_at_the_end(sim, "demo-si")


@pytest.mark.slow
def test_the_nested_group_converges_over_fifty_seeds_of_a_thousand_faults() -> None:
    """About 20 s on one core of the build machine."""
    config = layouts.nested()
    for seed in range(50):
        sim = run(config, faults=1000, seed=seed)
        assert [str(v) for v in sim.result.violations[:5]] == [], f"seed {seed}"
        assert served_at_the_end(sim, "sub-si"), f"seed {seed}"


def test_served_when_possible_catches_the_reported_run_under_the_old_crim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loses_nested_members(monkeypatch)
    sim = run(layouts.nested(), faults=10, seed=1)
    found = [v for v in sim.result.violations if v.invariant == "served-when-possible"]
    assert found and "sub-si unserved since" in found[0].detail
    assert not served_at_the_end(sim, "sub-si")


@pytest.mark.parametrize("seed", range(5))
def test_served_when_possible_alone_catches_the_old_crim_over_longer_runs(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over longer runs the nested group heals now and then (a node rejoining starts what it
    hosts), so the end-of-run check sees nothing; only the running check catches it."""
    fixed = run(layouts.nested(), faults=200, seed=seed, mean_gap=10.0)
    assert invariants(fixed.result) == set()
    loses_nested_members(monkeypatch)
    old = run(layouts.nested(), faults=200, seed=seed, mean_gap=10.0)
    assert invariants(old.result) == {"served-when-possible"}


# --- N+M placement ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_the_n_plus_m_layout_keeps_its_spread(seed: int) -> None:
    sim = run(layouts.n_plus_m(), faults=300, seed=seed)
    assert [str(v) for v in sim.result.violations[:5]] == []
    assert served_at_the_end(sim, "demo-si") and served_at_the_end(sim, "demo-si2")


def test_the_n_plus_m_layout_boots_into_two_primaries_and_one_standby() -> None:
    sim = run(layouts.n_plus_m(), faults=0, seed=0)
    primaries = {m for i in ("demo-si", "demo-si2") for m in sim.state.primaries(i, sim.topo)}
    assert len(primaries) == 2
    assert sim.state.secondaries("demo-si", sim.topo) == sim.state.secondaries("demo-si2", sim.topo)


def test_within_capacity_catches_a_crim_that_places_by_arrival_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(assign, "_spread", lambda work, group, pinned=frozenset(): False)
    sim = run(layouts.n_plus_m(), faults=0, seed=0)
    found = [v for v in sim.result.violations if v.invariant == "within-capacity"]
    assert found and "is primary of 2 instances of demo (capacity 1)" in found[0].detail
