"""The cluster gates of a boot commit: what the cluster daemon reports (haos.services.bootgates)
and how the commit feeds it to the boot policy (haos.bootctl.proving), over the pure model of
systemd-boot."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from haos.bootctl import firmware as fw
from haos.bootctl import names
from haos.bootctl.loader import ModelBootLoader, execute
from haos.bootctl.model import Slot, SlotState
from haos.bootctl.policy import (
    ALL_GATES,
    Booted,
    BootPolicy,
    BootProgress,
    InstallRequested,
    UnitsHealthy,
    decide,
)
from haos.bootctl.proving import GateAnswer, prove
from haos.clock import MonoTime
from haos.config.loader import build_config
from haos.errors import ConfigError, UnavailableError
from haos.model.states import AvailabilityState
from haos.services.bootgates import NodeView, ProvingGates

P, S, OFF = AvailabilityState.PRIMARY, AvailabilityState.SECONDARY, AvailabilityState.OFFLINE
EXAMPLES = Path(__file__).resolve().parents[2] / "haos" / "examples"
POLICY = BootPolicy(gates=ALL_GATES, tries=2, proving_timeout=100.0)


def view(**changes: object) -> NodeView:
    base: dict[str, object] = {
        "ready": True,
        "quorate": True,
        "member": True,
        "orders_synced": True,
        "agent": True,
        "roles": {"app1": P, "db1": S},
        "running": {"app1": "primary", "db1": "secondary"},
    }
    return NodeView(**{**base, **changes})  # type: ignore[arg-type]


def test_a_node_is_proven_only_after_running_its_work_for_the_whole_soak() -> None:
    gates = ProvingGates(soak=30.0)
    first = gates.observe(view(), MonoTime(100.0))
    assert first.rejoined and not first.proven and "0 of 30" in first.why
    assert not gates.observe(view(), MonoTime(129.0)).proven
    assert gates.observe(view(), MonoTime(130.0)).proven


@pytest.mark.parametrize(
    ("changes", "rejoined", "why"),
    [
        ({"ready": False}, False, "repository is not in sync"),
        ({"quorate": False}, False, "no quorum"),
        ({"member": False}, False, "not an admitted member"),
        ({"orders_synced": False}, False, "no desired state"),
        ({"agent": False}, False, "no node agent"),
        ({"running": {"app1": "failed", "db1": "secondary"}}, True, "app1 failed"),
        ({"running": {"app1": "spare", "db1": "secondary"}}, True, "app1 runs as spare"),
        ({"running": {"db1": "secondary"}}, True, "app1 runs as nothing known"),
        ({"roles": {"app1": OFF}, "running": {"app1": "offline"}}, True, "app1 is out of service"),
    ],
)
def test_a_break_restarts_the_soak_and_says_what_is_missing(
    changes: dict[str, object], rejoined: bool, why: str
) -> None:
    gates = ProvingGates(soak=10.0)
    assert gates.observe(view(), MonoTime(0.0)).healthy_for == 0.0
    broken = gates.observe(view(**changes), MonoTime(9.0))
    assert (broken.rejoined, broken.proven) == (rejoined, False) and why in broken.why
    again = gates.observe(view(), MonoTime(15.0))  # healthy again: the soak starts over
    assert not again.proven and again.healthy_for == 0.0
    assert gates.observe(view(), MonoTime(25.0)).proven


def test_a_node_without_components_needs_no_agent() -> None:
    gates = ProvingGates(soak=0.0)
    assert gates.observe(view(roles={}, running={}, agent=False), MonoTime(0.0)).proven


# --- the commit's proving loop ------------------------------------------------------------


@dataclass
class Gates:
    """The cluster daemon's answers, one per read (the last one repeats)."""

    answers: list[GateAnswer | Exception]
    reads: int = 0

    def read(self) -> GateAnswer:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class Clock:
    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def read(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def on_trial(tries: int = 2) -> tuple[ModelBootLoader, BootProgress]:
    """A node that installed release 1.1 into slot B and booted it on trial, units healthy."""
    esp = fw.Esp(entries=(fw.EspEntry("haos-a.conf", "1.0"),), loader_default="haos-a.conf")
    loader = ModelBootLoader(esp)
    policy = BootPolicy(gates=ALL_GATES, tries=tries, proving_timeout=100.0)
    progress = decide(policy, loader.read(), BootProgress(), Booted(Slot.A), 0.0).progress
    d = decide(policy, loader.read(), progress, InstallRequested("1.1"), 0.0)
    execute(loader, d, lambda reason: None)
    chosen = loader.power_on()
    assert chosen is not None and names.slot_of(chosen, "haos") is Slot.B
    progress = decide(policy, loader.read(), BootProgress(), Booted(Slot.B), 1000.0).progress
    d = decide(policy, loader.read(), progress, UnitsHealthy(), 1000.0)
    return loader, d.progress


def test_a_trial_is_committed_once_the_cluster_reports_it_rejoined_and_proven() -> None:
    loader, progress = on_trial()
    waiting = GateAnswer(False, False, "no quorum")
    gates = Gates([waiting, waiting, GateAnswer(True, False, "healthy for 0 of 60 s")] * 1)
    gates.answers += [GateAnswer(True, False, "healthy for 30 of 60 s")] * 3
    gates.answers += [GateAnswer(True, True, "")]
    clock = Clock()
    reboots: list[str] = []
    decisions = prove(
        loader, POLICY, progress, gates, lambda: clock.now, clock.sleep, reboots.append
    )
    assert [d.refused for d in decisions] == [False, False]
    assert "cluster-rejoined" in decisions[0].reason and "committed" in decisions[1].reason
    snap = loader.read()
    assert snap.committed is Slot.B and snap.b.state is SlotState.COMMITTED and not reboots
    assert all(s <= 1.0 for s in clock.slept)  # asked every second


def test_a_trial_that_never_rejoins_reboots_into_its_next_try_when_proving_time_is_up() -> None:
    loader, progress = on_trial(tries=2)
    gates = Gates([UnavailableError("node daemon at /run/haos/control.sock: refused")])
    clock = Clock()
    reboots: list[str] = []
    decisions = prove(
        loader, POLICY, progress, gates, lambda: clock.now, clock.sleep, reboots.append
    )
    assert len(reboots) == 1 and "not proven within 100 s" in reboots[0]
    assert "cluster-rejoined" in decisions[-1].reason  # named as missing
    assert 1100.0 <= clock.now < 1102.0
    snap = loader.read()
    assert snap.committed is Slot.A and snap.b.state is SlotState.TRYING


def test_on_its_last_try_a_release_that_never_rejoins_falls_back_to_the_committed_one() -> None:
    loader, progress = on_trial(tries=1)
    gates = Gates([GateAnswer(False, False, "no quorum")])
    clock = Clock()
    reboots: list[str] = []
    policy = BootPolicy(gates=ALL_GATES, tries=1, proving_timeout=100.0)
    decisions = prove(
        loader, policy, progress, gates, lambda: clock.now, clock.sleep, reboots.append
    )
    assert "gave up" in decisions[-1].reason and reboots
    snap = loader.read()
    assert snap.committed is Slot.A and snap.default is Slot.A and snap.b.tries_left == 0


def test_a_committed_release_or_a_local_policy_is_not_held_up_by_the_cluster() -> None:
    loader, progress = on_trial()
    local = BootPolicy(tries=2, proving_timeout=100.0)  # units-healthy only: committed already
    gates = Gates([GateAnswer(False, False, "no quorum")])
    clock = Clock()
    assert prove(loader, local, progress, gates, lambda: clock.now, clock.sleep, print) == []
    assert gates.reads == 0


def test_the_boot_table_of_cluster_toml_sets_the_gates_soak_and_proving_time() -> None:
    base = tomllib.loads((EXAMPLES / "small-2n.toml").read_text())
    assert "boot" not in base
    assert build_config(base, "t").boot.policy().gates == ALL_GATES  # the appliance's default
    spec = build_config(
        {**base, "boot": {"gates": ["units-healthy"], "soak": "5s", "proving_timeout": "2m"}}, "t"
    ).boot
    assert (spec.soak, spec.proving_timeout, spec.tries) == (5.0, 120.0, 3)
    bad = {
        "gates": ["units-healthy", "cluster-proved"],
        "soak": "20m",
        "proving_timeout": "15m",
        "tries": 12,
        "soke": "1s",
    }
    with pytest.raises(ConfigError) as error:
        build_config({**base, "boot": bad}, "t")
    text = str(error.value)
    for needle in ("boot.gates[1]", "cluster-proven", "boot.tries", "boot.soke", "did you mean"):
        assert needle in text, text
    with pytest.raises(ConfigError, match="cluster-proven needs cluster-rejoined"):
        build_config({**base, "boot": {"gates": ["units-healthy", "cluster-proven"]}}, "t")
    with pytest.raises(ConfigError, match=r"boot\.soak"):
        build_config({**base, "boot": {"soak": "20m", "proving_timeout": "15m"}}, "t")
