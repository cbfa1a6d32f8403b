"""The boot policy against a pure model of systemd-boot: trials, fallbacks, gates, refusals."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haos.bootctl import firmware as fw
from haos.bootctl import names
from haos.bootctl.loader import LoaderAction, ModelBootLoader, execute
from haos.bootctl.model import BootSnapshot, Slot, SlotState
from haos.bootctl.policy import (
    ALL_GATES,
    ENTRY_ACTIONS,
    LOCAL_GATES,
    Bless,
    Booted,
    BootPolicy,
    BootProgress,
    ClusterProven,
    ClusterRejoined,
    Decision,
    Event,
    Gate,
    InstallRequested,
    MarkBad,
    OperatorMarkBad,
    OperatorMarkGood,
    OperatorSwitch,
    ProvingTimeout,
    Reboot,
    Refused,
    SetDefault,
    SetOneshot,
    SetTrial,
    UnitsHealthy,
    WriteEntry,
    decide,
    install_target,
    next_deadline,
)
from haos.errors import ConfigError

A, B = Slot.A, Slot.B
CLUSTER = BootPolicy(gates=ALL_GATES)


def fresh_esp() -> fw.Esp:
    """A freshly provisioned node: release 1.0 committed in slot A, slot B empty."""
    return fw.Esp(entries=(fw.EspEntry("haos-a.conf", "1.0"),), loader_default="haos-a.conf")


class _CheckingLoader(ModelBootLoader):
    """The fake loader, asserting before every action that the committed entry is not touched."""

    def apply(self, action: LoaderAction) -> None:
        snap = self.read()
        if isinstance(action, ENTRY_ACTIONS):
            assert action.slot is not snap.committed, (action, snap)
        super().apply(action)


@dataclass
class Node:
    """A node: the policy, the fake boot loader, this boot's progress and a clock."""

    policy: BootPolicy = field(default_factory=BootPolicy)
    loader: ModelBootLoader = field(default_factory=lambda: _CheckingLoader(fresh_esp()))
    progress: BootProgress = field(default_factory=BootProgress)
    now: float = 0.0
    up: bool = False
    reboot_pending: bool = False
    log: list[str] = field(default_factory=list)

    @property
    def snap(self) -> BootSnapshot:
        return self.loader.read()

    def send(self, event: Event) -> Decision:
        d = decide(self.policy, self.snap, self.progress, event, self.now)
        self.log.append(f"{event} -> {d.reason}")
        if not d.refused:
            self.progress = d.progress
            execute(self.loader, d, self._reboot)
        return d

    def _reboot(self, reason: str) -> None:
        self.reboot_pending = True
        self.up = False

    def boot(self, *, ok: bool = True) -> Slot | None:
        """Power on. ``ok``: the system comes up and reports Booted; else it dies (panic, hang
        and a watchdog reset) before userspace could say anything."""
        self.now += 100.0
        self.reboot_pending = False
        self.progress = BootProgress()
        chosen = self.loader.power_on()
        assert chosen is not None, "nothing could boot"
        slot = names.slot_of(chosen, "haos")
        self.log.append(f"power on -> {chosen} ({'up' if ok else 'dies'})")
        self.up = ok and slot is not None
        if self.up:
            assert slot is not None
            self.send(Booted(slot))
        return slot

    def install(self, release: str = "1.1") -> Decision:
        d = self.send(InstallRequested(release))
        assert not d.refused, d.reason
        return d


def booted_node(policy: BootPolicy | None = None) -> Node:
    node = Node(policy=policy or BootPolicy())
    assert node.boot() is A
    return node


# --- fresh install, install, trials --------------------------------------------------------


def test_fresh_install_boots_its_committed_release() -> None:
    node = booted_node()
    snap = node.snap
    assert (snap.booted, snap.committed, snap.default, snap.fallback) == (A, A, A, A)
    assert snap.a.state is SlotState.COMMITTED and snap.a.release == "1.0"
    assert snap.b.state is SlotState.EMPTY
    assert snap.problems == ()
    assert "booted committed release 1.0 in slot A" in node.log[-1]


def test_install_writes_the_other_slot_with_three_tries_and_starts_its_trial() -> None:
    node = booted_node()
    d = node.install("1.1")
    assert d.actions == (WriteEntry(B, "1.1", 3), SetTrial(B))
    assert "installing release 1.1 into slot B with 3 tries" in d.reason
    snap = node.snap
    assert snap.b.entry == "haos-b+3.conf" and snap.b.state is SlotState.TRYING
    assert (snap.trial, snap.default, snap.fallback, snap.committed) == (B, B, A, A)


def test_new_release_boots_uncommitted_and_counts_its_tries() -> None:
    node = booted_node()
    node.install()
    assert node.boot() is B
    snap = node.snap
    assert snap.booted is B
    assert snap.b.entry == "haos-b+2-1.conf"
    assert snap.b.state is SlotState.TRYING
    assert (snap.b.tries_left, snap.b.tries_done) == (2, 1)
    assert snap.committed is A
    assert "trial of release 1.1 in slot B, try 1 of 3" in node.log[-1]


@pytest.mark.parametrize("ok", [False, True], ids=["dies-before-userspace", "never-proven"])
def test_release_failing_three_times_falls_back_to_the_committed_one(ok: bool) -> None:
    node = booted_node()
    node.install()
    seen = []
    for _ in range(3):
        assert node.boot(ok=ok) is B
        seen.append(node.snap.b.entry)
        if ok:  # it came up but never proved itself: the proving timer reboots it
            node.now += node.policy.proving_timeout
            node.send(ProvingTimeout())
            assert node.reboot_pending
    assert seen == ["haos-b+2-1.conf", "haos-b+1-2.conf", "haos-b+0-3.conf"]
    assert node.boot() is A
    snap = node.snap
    assert snap.b.state is SlotState.BAD
    assert snap.committed is A and snap.trial is None and snap.default is A
    assert snap.problems == ()
    assert node.boot() is A  # and it stays there


def test_fallback_after_exhausted_tries_clears_the_trial_setting() -> None:
    node = booted_node()
    node.install()
    for _ in range(3):
        node.boot(ok=False)
    assert node.snap.trial is B  # LoaderEntryDefault still holds the dead pattern
    assert node.boot() is A
    assert node.loader.applied[-1] == SetDefault(A)
    assert "trial of release 1.1 in slot B failed after 3 tries" in node.log[-1]
    assert "fell back to committed release 1.0 in slot A" in node.log[-1]
    assert node.snap.trial is None


def test_trial_that_recovers_on_a_later_try_is_committed() -> None:
    node = booted_node()
    node.install()
    node.boot(ok=False)
    node.boot(ok=False)
    assert node.boot() is B  # third and last try
    assert node.snap.b.entry == "haos-b+0-3.conf"
    assert node.snap.b.state is SlotState.TRYING  # last try, not bad: it is running
    d = node.send(UnitsHealthy())
    assert d.actions == (Bless(B), SetDefault(B))
    assert node.snap.b.entry == "haos-b.conf"
    assert node.snap.committed is B


# --- gates ---------------------------------------------------------------------------------


def test_local_policy_commits_when_units_are_healthy() -> None:
    node = booted_node()
    node.install()
    node.boot()
    d = node.send(UnitsHealthy())
    assert d.actions == (Bless(B), SetDefault(B))
    assert d.reason == "committed release 1.1 in slot B: all gates met (units-healthy)"
    snap = node.snap
    assert (snap.committed, snap.fallback, snap.default, snap.trial) == (B, B, B, None)
    assert snap.a.state is SlotState.COMMITTED  # the previous release stays as a fallback
    assert node.boot() is B


GATE_EVENTS: dict[Gate, Event] = {
    Gate.UNITS_HEALTHY: UnitsHealthy(),
    Gate.CLUSTER_REJOINED: ClusterRejoined(),
    Gate.CLUSTER_PROVEN: ClusterProven("1.1"),
}


@pytest.mark.parametrize(
    "order", list(itertools.permutations(GATE_EVENTS)), ids=lambda o: ">".join(o)
)
def test_blessed_only_after_every_gate_whatever_their_order(order: tuple[Gate, ...]) -> None:
    node = booted_node(CLUSTER)
    node.install()
    node.boot()
    for i, gate in enumerate(order):
        d = node.send(GATE_EVENTS[gate])
        assert not d.refused
        last = i == len(order) - 1
        assert (d.actions == (Bless(B), SetDefault(B))) is last, (gate, d)
        if not last:
            assert d.actions == ()
            assert "still waiting for" in d.reason
            assert node.snap.b.state is SlotState.TRYING


def test_mark_good_only_after_rejoining_the_cluster_with_cluster_gates() -> None:
    node = booted_node(CLUSTER)
    node.install()
    node.boot()
    node.send(UnitsHealthy())
    node.send(ClusterProven("1.1"))
    assert node.snap.b.state is SlotState.TRYING
    d = node.send(ClusterRejoined())
    assert Bless(B) in d.actions


def test_gates_of_an_earlier_boot_do_not_count() -> None:
    node = booted_node(CLUSTER)
    node.install()
    node.boot()
    node.send(UnitsHealthy())
    node.send(ClusterRejoined())
    node.boot()  # rebooted (power cut) before the cluster proved it
    d = node.send(ClusterProven("1.1"))
    assert d.actions == ()
    assert "still waiting for: cluster-rejoined, units-healthy" in d.reason


def test_cluster_proving_another_release_is_refused() -> None:
    node = booted_node(CLUSTER)
    node.install("1.1")
    node.boot()
    d = node.send(ClusterProven("1.2"))
    assert d.refused and d.actions == ()
    assert "proved release 1.2, but slot B runs 1.1" in d.reason


def test_gate_before_booted_is_refused() -> None:
    node = Node()
    node.loader.power_on()
    d = node.send(UnitsHealthy())
    assert d.refused and "before any Booted event" in d.reason


def test_gate_on_a_committed_boot_changes_nothing() -> None:
    node = booted_node()
    d = node.send(UnitsHealthy())
    assert d.actions == () and not d.refused
    assert "slot A is committed" in d.reason


def test_booted_from_another_slot_than_the_loader_says_is_refused() -> None:
    node = booted_node()
    d = node.send(Booted(B))
    assert d.refused and "the boot loader says A" in d.reason


# --- the committed slot is never written ---------------------------------------------------


def _snap(
    a: str | None,
    b: str | None,
    *,
    booted: Slot | None,
    default: str = "haos-a.conf",
    efi_default: str | None = None,
) -> BootSnapshot:
    entries = tuple(fw.EspEntry(n, f"r-{n}") for n in (a, b) if n is not None)
    selected = {A: a, B: b}.get(booted) if booted else None
    return fw.snapshot_of(
        fw.Esp(entries=entries, loader_default=default, efi_default=efi_default, selected=selected)
    )


@pytest.mark.parametrize(
    ("snap", "target"),
    [
        pytest.param(_snap("haos-a.conf", None, booted=A), B, id="committed-A-running-B-empty"),
        pytest.param(_snap("haos-a.conf", "haos-b.conf", booted=A), B, id="B-holds-previous"),
        pytest.param(_snap("haos-a.conf", "haos-b+0-3.conf", booted=A), B, id="B-bad"),
        pytest.param(_snap("haos-a.conf", "haos-b+3.conf", booted=A), B, id="B-pending-trial"),
        pytest.param(_snap("haos-a.conf", None, booted=None), B, id="running-slot-unknown"),
        pytest.param(
            _snap("haos-a.conf", "haos-b.conf", booted=B, default="haos-b.conf"),
            A,
            id="B-committed-running",
        ),
    ],
)
def test_install_target_is_neither_committed_nor_running(snap: BootSnapshot, target: Slot) -> None:
    assert install_target(snap) is target
    d = decide(BootPolicy(), snap, BootProgress(), InstallRequested("2.0"), 0.0)
    assert d.actions[0] == WriteEntry(target, "2.0", 3)


@pytest.mark.parametrize(
    ("snap", "why"),
    [
        pytest.param(
            _snap("haos-a.conf", "haos-b+2-1.conf", booted=B, efi_default="haos-b+[1-9]*"),
            "slot A holds the committed release and slot B is running",
            id="trial-running",
        ),
        pytest.param(
            _snap("haos-a.conf", "haos-b.conf", booted=B),
            "slot A holds the committed release and slot B is running",
            id="previous-release-running-once",
        ),
        pytest.param(
            _snap(None, "haos-b+2-1.conf", booted=B, default="haos-b.conf"),
            "no committed release",
            id="nothing-committed",
        ),
    ],
)
def test_install_is_refused_when_only_committed_or_running_slots_are_left(
    snap: BootSnapshot, why: str
) -> None:
    with pytest.raises(Refused, match=why):
        install_target(snap)
    d = decide(BootPolicy(), snap, BootProgress(), InstallRequested("2.0"), 0.0)
    assert d.refused and d.actions == () and why in d.reason


def test_second_install_goes_to_the_slot_of_the_previous_release() -> None:
    node = booted_node()
    node.install("1.1")
    node.boot()
    node.send(UnitsHealthy())  # 1.1 committed in B
    d = node.install("1.2")
    assert d.actions[0] == WriteEntry(A, "1.2", 3)
    assert node.snap.b.entry == "haos-b.conf" and node.snap.b.release == "1.1"


@pytest.mark.parametrize("release", ["", "1.0 beta", "../x", "a" * 65, "1.0\n"])
def test_install_of_a_malformed_release_is_refused(release: str) -> None:
    node = booted_node()
    d = node.send(InstallRequested(release))
    assert d.refused and "not a version string" in d.reason


def test_install_can_reboot_into_the_trial() -> None:
    node = booted_node()
    d = node.send(InstallRequested("1.1", reboot=True))
    assert isinstance(d.actions[-1], Reboot)
    assert node.reboot_pending


# --- operator: switch, mark-good, mark-bad --------------------------------------------------


@pytest.mark.parametrize(
    ("b", "slot", "why"),
    [
        (None, None, "slot B is empty"),
        ("haos-b+0-3.conf", None, "slot B is bad"),
        ("haos-b+0.conf", B, "slot B is bad"),
        ("haos-b.conf", A, "slot A is already running"),
    ],
)
def test_switch_is_refused(b: str | None, slot: Slot | None, why: str) -> None:
    snap = _snap("haos-a.conf", b, booted=A)
    d = decide(BootPolicy(), snap, BootProgress(), OperatorSwitch(slot), 0.0)
    assert d.refused and d.actions == ()
    assert why in d.reason


def test_switch_boots_the_other_committed_slot_once() -> None:
    node = booted_node()
    node.install("1.1")
    node.boot()
    node.send(UnitsHealthy())  # B committed (1.1), A holds 1.0
    d = node.send(OperatorSwitch())
    assert d.actions[0] == SetOneshot(A) and isinstance(d.actions[1], Reboot)
    assert "booting release 1.0 in slot A (committed) once; the default stays slot B" in d.reason
    assert node.snap.oneshot is A
    assert node.boot() is A
    assert "booted earlier committed release 1.0 in slot A once" in node.log[-1]
    assert node.boot() is B


def test_switch_to_a_pending_trial_counts_a_try() -> None:
    node = booted_node()
    node.install()
    d = node.send(OperatorSwitch(B))
    assert d.actions[0] == SetOneshot(B)
    assert node.boot() is B
    assert node.snap.b.entry == "haos-b+2-1.conf"


def test_mark_good_overrides_the_gates_and_says_which() -> None:
    node = booted_node(CLUSTER)
    node.install()
    node.boot()
    node.send(UnitsHealthy())
    d = node.send(OperatorMarkGood())
    assert d.actions == (Bless(B), SetDefault(B))
    assert d.reason == (
        "operator committed release 1.1 in slot B, overriding unconfirmed gates: "
        "cluster-proven, cluster-rejoined"
    )
    assert node.snap.committed is B


def test_mark_good_on_the_committed_default_changes_nothing() -> None:
    node = booted_node()
    d = node.send(OperatorMarkGood())
    assert not d.refused and d.actions == ()
    assert "already committed and the default" in d.reason


def test_mark_good_on_the_previous_release_makes_it_the_default() -> None:
    node = booted_node()
    node.install("1.1")
    node.boot()
    node.send(UnitsHealthy())
    node.send(OperatorSwitch(A))
    node.boot()
    d = node.send(OperatorMarkGood())
    assert d.actions == (SetDefault(A),)
    assert node.boot() is A


def test_mark_good_without_knowing_the_running_slot_is_refused() -> None:
    snap = _snap("haos-a.conf", "haos-b+2-1.conf", booted=None)
    d = decide(BootPolicy(), snap, BootProgress(), OperatorMarkGood(), 0.0)
    assert d.refused and "LoaderEntrySelected" in d.reason


def test_mark_bad_on_a_trial_falls_back_to_the_committed_release() -> None:
    node = booted_node()
    node.install()
    node.boot()
    d = node.send(OperatorMarkBad())
    assert d.actions[:2] == (SetDefault(A), MarkBad(B))
    assert isinstance(d.actions[2], Reboot)
    assert d.reason == (
        "operator rejected trial release 1.1 in slot B; "
        "falling back to committed release 1.0 in slot A"
    )
    assert node.snap.b.entry == "haos-b+0-1.conf"
    assert node.boot() is A
    assert node.snap.b.state is SlotState.BAD


def test_mark_bad_on_a_committed_release_rolls_back_to_the_previous_one() -> None:
    node = booted_node()
    node.install("1.1")
    node.boot()
    node.send(UnitsHealthy())
    d = node.send(OperatorMarkBad())
    assert d.actions[:2] == (SetDefault(A), MarkBad(B))
    assert node.snap.b.entry == "haos-b+0.conf"  # no tries done since it was blessed
    assert node.boot() is A


def test_mark_bad_on_the_only_committed_release_is_refused() -> None:
    node = booted_node()
    d = node.send(OperatorMarkBad())
    assert d.refused and d.actions == ()
    assert "slot B is empty, not a committed release to fall back to" in d.reason


# --- proving timeout ------------------------------------------------------------------------


def test_proving_timeout_waits_for_its_deadline() -> None:
    node = booted_node(CLUSTER)
    node.install()
    node.boot()
    deadline = next_deadline(node.policy, node.snap, node.progress)
    assert deadline == node.now + node.policy.proving_timeout
    node.now = deadline - 1
    d = node.send(ProvingTimeout())
    assert d.refused and "not up (1 s left)" in d.reason
    node.now = deadline
    d = node.send(ProvingTimeout())
    assert d.actions == (Reboot(d.reason),)
    assert "not proven within 900 s (missing: cluster-proven, cluster-rejoined, units-healthy)" in (
        d.reason
    )
    assert "2 tries left" in d.reason


def test_proving_timeout_on_the_last_try_gives_up_on_the_release() -> None:
    node = booted_node()
    node.install()
    node.boot(ok=False)
    node.boot(ok=False)
    node.boot()
    node.now += node.policy.proving_timeout
    d = node.send(ProvingTimeout())
    assert d.actions[:2] == (SetDefault(A), MarkBad(B))
    assert "on its last try; gave up on release 1.1 in slot B" in d.reason


def test_no_proving_deadline_on_a_committed_boot() -> None:
    node = booted_node()
    assert next_deadline(node.policy, node.snap, node.progress) is None
    d = node.send(ProvingTimeout())
    assert d.actions == () and "nothing to prove" in d.reason


@pytest.mark.parametrize("kwargs", [{"tries": 0}, {"tries": 10}, {"proving_timeout": 0.0}], ids=str)
def test_bad_policy_settings_are_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BootPolicy(**kwargs)  # type: ignore[arg-type]


def test_default_policy_leaves_the_cluster_gates_off() -> None:
    assert BootPolicy().gates == LOCAL_GATES == {Gate.UNITS_HEALTHY}
    assert frozenset(Gate) == ALL_GATES


# --- property: any sequence of boots, failures and events ------------------------------------

STEPS = st.sampled_from(
    [
        "boot",
        "boot-dies",
        "units",
        "rejoined",
        "proven",
        "proven-other",
        "timeout",
        "mark-good",
        "mark-bad",
        "switch",
        "switch-A",
        "switch-B",
        "install",
        "install-reboot",
    ]
)


def _step(node: Node, step: str, n: int) -> None:
    if step in ("boot", "boot-dies") or not node.up:
        node.boot(ok=step != "boot-dies")
        return
    running = node.snap.slot(node.progress.booted or A).release or "?"
    events: dict[str, Event] = {
        "units": UnitsHealthy(),
        "rejoined": ClusterRejoined(),
        "proven": ClusterProven(running),
        "proven-other": ClusterProven("9.9"),
        "timeout": ProvingTimeout(),
        "mark-good": OperatorMarkGood(),
        "mark-bad": OperatorMarkBad(),
        "switch": OperatorSwitch(),
        "switch-A": OperatorSwitch(A),
        "switch-B": OperatorSwitch(B),
        "install": InstallRequested(f"2.{n}"),
        "install-reboot": InstallRequested(f"2.{n}", reboot=True),
    }
    if step == "timeout":
        node.now += node.policy.proving_timeout
    d = node.send(events[step])
    if any(isinstance(a, Bless) for a in d.actions) and step != "mark-good":
        assert node.policy.gates <= d.progress.met, d
        assert d.actions[0] == Bless(d.progress.booted), d  # type: ignore[arg-type]


def _committed_entry(snap: BootSnapshot) -> tuple[Slot, str | None, str | None]:
    assert snap.committed is not None, snap
    info = snap.slot(snap.committed)
    return info.slot, info.entry, info.release


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=st.booleans(), steps=st.lists(STEPS, max_size=40))
def test_always_a_committed_untouched_slot_and_something_bootable(
    cluster: bool, steps: list[str]
) -> None:
    node = booted_node(CLUSTER if cluster else None)
    for n, step in enumerate(steps):
        before = _committed_entry(node.snap)
        _step(node, step, n)
        snap = node.snap
        after = _committed_entry(snap)
        if after[0] is before[0]:
            assert after == before, "\n".join(node.log)  # committed entry never modified
        chosen = fw.select(node.loader.esp, oneshot=False)
        assert chosen is not None
        chosen_slot = names.slot_of(chosen, "haos")
        assert chosen_slot is not None and snap.slot(chosen_slot).bootable, "\n".join(node.log)
        assert any(i.bootable for i in snap.slots)
    # However it ended: with no operator, the node settles on a committed release.
    for _ in range(node.policy.tries + 2):
        node.boot(ok=False)
    assert node.boot() is node.snap.committed
