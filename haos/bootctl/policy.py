"""The boot policy: the two-phase commit of a release over slots A and B.

``decide(policy, snapshot, progress, event, now) -> Decision``. Pure: no I/O, no clock reads,
no logging. ``snapshot`` is the boot loader's state as read once; ``progress`` is what this boot
has proven so far (kept in memory by the caller, reset by :class:`Booted`).

The rules, each with a test:

* A new release is written only into a slot that holds neither the committed release nor the
  running system, with a boot counter (``+N``), and is tried through ``LoaderEntryDefault``
  with a tries-left pattern. ``loader.conf``'s ``default`` keeps naming the committed release,
  so a release that fails to boot or hangs (a watchdog resets the board) falls back to it by
  itself once systemd-boot has counted its tries down.
* A release is blessed (committed) only (a) when booted from its slot, (b) after every gate in
  ``BootPolicy.gates`` has been reported this boot. The gates are "all haos units healthy",
  "the node rejoined the cluster" and "the cluster reports the release proven". The
  appliance takes its gates from cluster.toml's ``[boot]``, all of them (:data:`ALL_GATES`)
  by default: the house rule "mark a boot slot good only after the node has rejoined the
  cluster" (:mod:`haos.bootctl.proving`). ``BootPolicy()`` alone checks only the first
  (:data:`LOCAL_GATES`), for a node outside a cluster.
* A trial that is not proven within ``proving_timeout`` reboots to use its next try; on its last
  try it is marked bad and the node falls back to the committed release.
* The operator may mark the running release good (overriding the gates, and saying which ones
  it overrides), bad (only if the other slot holds a committed release to fall back to), or
  boot the other slot once (never an empty or bad one).
* Whenever the committed default moves, the new default is set before the old entry is touched,
  so at every single step some committed release stays the default and unmodified.

A refused event gives ``Decision(refused=True)`` with the reason and no actions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from haos.bootctl.model import BootSnapshot, Slot, SlotInfo, SlotState
from haos.errors import ConfigError, ConfigProblem


class Gate(StrEnum):
    UNITS_HEALTHY = "units-healthy"
    CLUSTER_REJOINED = "cluster-rejoined"
    CLUSTER_PROVEN = "cluster-proven"


LOCAL_GATES = frozenset({Gate.UNITS_HEALTHY})
ALL_GATES = frozenset(Gate)


@dataclass(frozen=True)
class BootPolicy:
    """Which gates a release must pass before it is committed, its tries, its proving time."""

    gates: frozenset[Gate] = LOCAL_GATES
    tries: int = 3
    proving_timeout: float = 900.0

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.tries <= 9:
            # One digit keeps the trial pattern "+[1-9]*" exact and the counter readable.
            problems.append(ConfigProblem("boot policy", "tries", "must be 1..9"))
        if not self.proving_timeout > 0:
            problems.append(ConfigProblem("boot policy", "proving_timeout", "must be > 0 s"))
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class BootProgress:
    """What this boot has shown so far: which slot, since when, which gates were met."""

    booted: Slot | None = None
    booted_at: float | None = None
    met: frozenset[Gate] = frozenset()


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Booted:
    """The system came up from ``slot`` (starts a new :class:`BootProgress`)."""

    slot: Slot


@dataclass(frozen=True)
class UnitsHealthy:
    """All haos units are active (boot-complete.target was reached)."""


@dataclass(frozen=True)
class ClusterRejoined:
    """The node is a member of the cluster again."""


@dataclass(frozen=True)
class ClusterProven:
    """The cluster reports ``release`` proven on this node."""

    release: str


@dataclass(frozen=True)
class OperatorMarkGood:
    """The operator commits the running release now, whatever the gates say."""


@dataclass(frozen=True)
class OperatorMarkBad:
    """The operator rejects the running release: fall back to the other, committed one."""


@dataclass(frozen=True)
class InstallRequested:
    """Write ``release``'s entry into the writable slot and start its trial."""

    release: str
    reboot: bool = False


@dataclass(frozen=True)
class OperatorSwitch:
    """Boot ``slot`` (default: the one not running) once, on the next boot only."""

    slot: Slot | None = None


@dataclass(frozen=True)
class ProvingTimeout:
    """The running trial's proving time is up (the caller's timer; see :func:`next_deadline`)."""


Event = (
    Booted
    | UnitsHealthy
    | ClusterRejoined
    | ClusterProven
    | OperatorMarkGood
    | OperatorMarkBad
    | InstallRequested
    | OperatorSwitch
    | ProvingTimeout
)


# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bless:
    """Remove the boot counter from ``slot``'s entry: its release is committed."""

    slot: Slot


@dataclass(frozen=True)
class SetDefault:
    """Make ``slot``'s committed entry the default (``loader.conf``) and end any trial."""

    slot: Slot


@dataclass(frozen=True)
class SetTrial:
    """Boot ``slot`` while it has tries left (``LoaderEntryDefault``), then the default."""

    slot: Slot


@dataclass(frozen=True)
class SetOneshot:
    """Boot ``slot``'s current entry on the next boot only (``LoaderEntryOneShot``)."""

    slot: Slot


@dataclass(frozen=True)
class WriteEntry:
    """Replace ``slot``'s entry by one for ``release`` with ``tries`` tries left."""

    slot: Slot
    release: str
    tries: int


@dataclass(frozen=True)
class MarkBad:
    """Set ``slot``'s tries left to 0 (``+0-DONE``): systemd-boot will not choose it."""

    slot: Slot


@dataclass(frozen=True)
class Reboot:
    reason: str


Action = Bless | SetDefault | SetTrial | SetOneshot | WriteEntry | MarkBad | Reboot

# The actions that change a slot's entry file (the others touch settings only).
ENTRY_ACTIONS = (Bless, WriteEntry, MarkBad)


@dataclass(frozen=True)
class Decision:
    """The actions to carry out in order, why, and the progress to keep."""

    actions: tuple[Action, ...]
    reason: str
    progress: BootProgress
    refused: bool = False


class Refused(Exception):
    """Raised inside a handler to refuse the event; nothing changes."""


@dataclass(frozen=True)
class _Ctx:
    policy: BootPolicy
    snap: BootSnapshot
    progress: BootProgress
    now: float


_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}")


def decide(
    policy: BootPolicy,
    snapshot: BootSnapshot,
    progress: BootProgress,
    event: Event,
    now: float,
) -> Decision:
    handler: Callable[[_Ctx, Any], Decision] = _HANDLERS[type(event)]
    try:
        return handler(_Ctx(policy, snapshot, progress, now), event)
    except Refused as e:
        return Decision((), f"refused: {e}", progress, refused=True)


def next_deadline(
    policy: BootPolicy, snapshot: BootSnapshot, progress: BootProgress
) -> float | None:
    """When :class:`ProvingTimeout` is due: only while the running slot is on trial."""
    if progress.booted is None or progress.booted_at is None:
        return None
    if snapshot.slot(progress.booted).state is not SlotState.TRYING:
        return None
    return progress.booted_at + policy.proving_timeout


def install_target(snapshot: BootSnapshot) -> Slot:
    """The slot a new release may be written to; raises :class:`Refused` saying why not.

    Never the committed slot, never the running one (with two slots: only the other slot, and
    only while the node runs the committed release or nothing known).
    """
    committed = snapshot.committed
    if committed is None:
        raise Refused("no committed release to fall back to; provision the node first")
    booted = snapshot.booted
    free = [s for s in Slot if s is not committed and s is not booted]
    if not free:
        running = snapshot.slot(booted).describe() if booted else "?"
        raise Refused(
            f"slot {committed} holds the committed release and slot {booted} is running "
            f"({running}); commit or abandon it first"
        )
    return free[0]


# --- handlers ----------------------------------------------------------------------------


def _rel(info: SlotInfo) -> str:
    return f"release {info.release or '?'} in slot {info.slot}"


def _running(c: _Ctx) -> SlotInfo:
    booted = c.snap.booted or c.progress.booted
    if booted is None:
        raise Refused("the boot loader did not say which slot is running (LoaderEntrySelected)")
    info = c.snap.slot(booted)
    if info.state is SlotState.EMPTY:
        raise Refused(f"running from slot {booted}, but it has no loader entry")
    return info


def _gates(gates: frozenset[Gate]) -> str:
    return ", ".join(sorted(gates)) or "none"


def _on_booted(c: _Ctx, e: Booted) -> Decision:
    if c.snap.booted is not None and c.snap.booted is not e.slot:
        raise Refused(f"booted from slot {e.slot}, but the boot loader says {c.snap.booted}")
    info = c.snap.slot(e.slot)
    if info.state is SlotState.EMPTY:
        raise Refused(f"booted from slot {e.slot}, but it has no loader entry")
    progress = BootProgress(booted=e.slot, booted_at=c.now)
    if info.state is SlotState.TRYING:
        return Decision(
            (),
            f"trial of {_rel(info)}, try {info.tries_done} of {info.total_tries}; "
            f"commit waits for: {_gates(c.policy.gates)}",
            progress,
        )
    other = c.snap.slot(e.slot.other)
    if c.snap.trial is other.slot and other.state is SlotState.BAD:
        return Decision(
            (SetDefault(e.slot),),
            f"trial of {_rel(other)} failed after {other.tries_done} tries; "
            f"fell back to committed {_rel(info)}",
            progress,
        )
    if c.snap.committed is not e.slot:
        return Decision(
            (),
            f"booted earlier committed {_rel(info)} once; the default stays slot {c.snap.default}",
            progress,
        )
    return Decision((), f"booted committed {_rel(info)}", progress)


def _on_gate(c: _Ctx, gate: Gate, note: str = "") -> Decision:
    p = c.progress
    if p.booted is None:
        raise Refused(f"{gate} before any Booted event this boot")
    progress = dataclasses.replace(p, met=p.met | {gate})
    info = c.snap.slot(p.booted)
    if info.state is not SlotState.TRYING:
        return Decision((), f"{gate}{note}; slot {p.booted} is {info.state}", progress)
    missing = c.policy.gates - progress.met
    if missing:
        return Decision(
            (), f"{gate}{note} for {_rel(info)}; still waiting for: {_gates(missing)}", progress
        )
    return Decision(
        (Bless(info.slot), SetDefault(info.slot)),
        f"committed {_rel(info)}: all gates met ({_gates(c.policy.gates)})",
        progress,
    )


def _on_units(c: _Ctx, e: UnitsHealthy) -> Decision:
    return _on_gate(c, Gate.UNITS_HEALTHY)


def _on_rejoined(c: _Ctx, e: ClusterRejoined) -> Decision:
    return _on_gate(c, Gate.CLUSTER_REJOINED)


def _on_proven(c: _Ctx, e: ClusterProven) -> Decision:
    booted = c.progress.booted
    if booted is not None:
        running = c.snap.slot(booted).release
        if running != e.release:
            raise Refused(
                f"the cluster proved release {e.release}, but slot {booted} runs {running}"
            )
    return _on_gate(c, Gate.CLUSTER_PROVEN, f" ({e.release})")


def _on_mark_good(c: _Ctx, e: OperatorMarkGood) -> Decision:
    info = _running(c)
    if info.state is SlotState.TRYING:
        missing = c.policy.gates - c.progress.met
        override = f", overriding unconfirmed gates: {_gates(missing)}" if missing else ""
        return Decision(
            (Bless(info.slot), SetDefault(info.slot)),
            f"operator committed {_rel(info)}{override}",
            c.progress,
        )
    if info.state is SlotState.BAD:
        raise Refused(f"slot {info.slot} is marked bad")
    if c.snap.fallback is info.slot and c.snap.trial is None:
        return Decision((), f"{_rel(info)} is already committed and the default", c.progress)
    cancels = f"; cancels the trial of slot {c.snap.trial}" if c.snap.trial else ""
    return Decision(
        (SetDefault(info.slot),),
        f"operator made committed {_rel(info)} the default{cancels}",
        c.progress,
    )


def _fallback_to_other(c: _Ctx, info: SlotInfo, what: str) -> Decision:
    other = c.snap.slot(info.slot.other)
    if other.state is not SlotState.COMMITTED:
        raise Refused(
            f"slot {other.slot} is {other.state}, not a committed release to fall back to; "
            f"marking slot {info.slot} bad would leave nothing bootable"
        )
    reason = f"{what} {_rel(info)}; falling back to committed {_rel(other)}"
    # The default moves first: at every step a committed, untouched entry is the default.
    return Decision(
        (SetDefault(other.slot), MarkBad(info.slot), Reboot(reason)), reason, c.progress
    )


def _on_mark_bad(c: _Ctx, e: OperatorMarkBad) -> Decision:
    info = _running(c)
    if info.state is SlotState.BAD:
        raise Refused(f"slot {info.slot} is already marked bad")
    what = "operator rejected trial" if info.state is SlotState.TRYING else "operator rejected"
    return _fallback_to_other(c, info, what)


def _on_install(c: _Ctx, e: InstallRequested) -> Decision:
    if not _RELEASE.fullmatch(e.release):
        raise Refused(f"release {e.release!r} is not a version string (letters, digits, ._+~-)")
    target = install_target(c.snap)
    committed = c.snap.slot(c.snap.committed or target.other)
    reason = (
        f"installing release {e.release} into slot {target} with {c.policy.tries} tries; "
        f"committed {_rel(committed)} stays the fallback"
    )
    actions: tuple[Action, ...] = (WriteEntry(target, e.release, c.policy.tries), SetTrial(target))
    if e.reboot:
        actions += (Reboot(reason),)
    return Decision(actions, reason, c.progress)


def _on_switch(c: _Ctx, e: OperatorSwitch) -> Decision:
    booted = c.snap.booted or c.progress.booted
    target = e.slot or (booted.other if booted else None)
    if target is None:
        raise Refused("the running slot is unknown; say which slot to boot")
    if target is booted:
        raise Refused(f"slot {target} is already running")
    info = c.snap.slot(target)
    if info.state in (SlotState.EMPTY, SlotState.BAD):
        raise Refused(f"slot {target} is {info.state}; it cannot be booted")
    reason = f"booting {_rel(info)} ({info.state}) once; the default stays slot {c.snap.default}"
    return Decision((SetOneshot(target), Reboot(reason)), reason, c.progress)


def _on_timeout(c: _Ctx, e: ProvingTimeout) -> Decision:
    p = c.progress
    if p.booted is None or p.booted_at is None:
        raise Refused("proving timeout before any Booted event this boot")
    info = c.snap.slot(p.booted)
    if info.state is not SlotState.TRYING:
        return Decision((), f"nothing to prove: slot {p.booted} is {info.state}", p)
    deadline = p.booted_at + c.policy.proving_timeout
    if c.now < deadline:
        raise Refused(f"proving time of slot {p.booted} is not up ({deadline - c.now:.0f} s left)")
    missing = _gates(c.policy.gates - p.met)
    what = f"{_rel(info)} not proven within {c.policy.proving_timeout:.0f} s (missing: {missing})"
    if (info.tries_left or 0) > 0:
        reason = f"{what}; rebooting, {info.tries_left} tries left"
        return Decision((Reboot(reason),), reason, p)
    return _fallback_to_other(c, info, f"{what} on its last try; gave up on")


_HANDLERS: dict[type, Callable[[_Ctx, Any], Decision]] = {
    Booted: _on_booted,
    UnitsHealthy: _on_units,
    ClusterRejoined: _on_rejoined,
    ClusterProven: _on_proven,
    OperatorMarkGood: _on_mark_good,
    OperatorMarkBad: _on_mark_bad,
    InstallRequested: _on_install,
    OperatorSwitch: _on_switch,
    ProvingTimeout: _on_timeout,
}
