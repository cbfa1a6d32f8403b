"""The cluster half of a boot commit: wait until the cluster has proven the release on trial.

After ``Booted`` and ``UnitsHealthy``, a release on trial whose policy names the cluster
gates is committed only once this node's cluster daemon reports it rejoined and then proven
(:mod:`haos.services.bootgates`, the ``boot_gates`` control request). The daemon is asked
every ``poll`` seconds; each gate goes to the boot policy once, when it first holds. When the
proving time is up first, the policy decides: a reboot into the next try, or on the last try
the fall back to the committed release.

Observe, decide, act: every turn re-reads the boot loader's state, so a commit or fall back
made meanwhile (by the operator, say) ends the wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from haos.bootctl.loader import BootLoader, execute
from haos.bootctl.policy import (
    BootPolicy,
    BootProgress,
    ClusterProven,
    ClusterRejoined,
    Decision,
    Event,
    Gate,
    ProvingTimeout,
    decide,
    next_deadline,
)
from haos.errors import HaosError

log = logging.getLogger(__name__)

CLUSTER_GATES = frozenset({Gate.CLUSTER_REJOINED, Gate.CLUSTER_PROVEN})


@dataclass(frozen=True)
class GateAnswer:
    rejoined: bool
    proven: bool
    why: str


class GateSource(Protocol):
    def read(self) -> GateAnswer:
        """The daemon's gates now; HaosError when it cannot be asked."""


class DaemonGates:
    """The gates from this node's cluster daemon over its control socket."""

    def __init__(self, request: Callable[[str], dict[str, Any]]) -> None:
        self._request = request

    def read(self) -> GateAnswer:
        answer = self._request("boot_gates")
        return GateAnswer(
            bool(answer.get("rejoined")), bool(answer.get("proven")), str(answer.get("why", ""))
        )


def prove(
    loader: BootLoader,
    policy: BootPolicy,
    progress: BootProgress,
    gates: GateSource,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    reboot_fn: Callable[[str], None],
    poll: float = 1.0,
) -> list[Decision]:
    """Feed the cluster gates to the policy until the trial is committed, ends, or runs out
    of proving time; the decisions taken, in order (each already carried out)."""
    decisions: list[Decision] = []
    if not policy.gates & CLUSTER_GATES:
        return decisions
    said = ""
    while True:
        snap = loader.read()
        deadline = next_deadline(policy, snap, progress)
        if deadline is None:
            return decisions  # not on trial (any more): committed, or fallen back
        now = clock()
        event: Event | None = None
        if now >= deadline:
            event = ProvingTimeout()
        else:
            try:
                answer = gates.read()
            except HaosError as e:
                answer = GateAnswer(False, False, f"the cluster daemon cannot be asked: {e}")
            if answer.why != said:
                log.info("cluster gates: %s", answer.why or "proven")
                said = answer.why
            if answer.rejoined and Gate.CLUSTER_REJOINED not in progress.met:
                event = ClusterRejoined()
            elif answer.proven and Gate.CLUSTER_PROVEN not in progress.met:
                booted = progress.booted
                release = snap.slot(booted).release if booted is not None else None
                event = ClusterProven(release or "?")
        if event is not None:
            d = decide(policy, snap, progress, event, now)
            decisions.append(d)
            log.info("%s", d.reason)
            execute(loader, d, reboot_fn)
            progress = d.progress
            if isinstance(event, ProvingTimeout) or d.refused:
                return decisions
            continue  # at once: the next gate may hold already
        sleep(min(poll, max(0.0, deadline - now)))
