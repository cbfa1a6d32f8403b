"""The boot check's wait for the haos units (haos.bootctl.appliance.check_timeout): on a
release on trial it is bounded by the proving time, so a release whose cluster daemon never
gets ready (it cannot rejoin) fails its boot once that time is up, over the pure model of
systemd-boot."""

from __future__ import annotations

from haos.bootctl import firmware as fw
from haos.bootctl.appliance import check_timeout
from haos.bootctl.loader import ModelBootLoader, execute
from haos.bootctl.model import Slot, SlotState
from haos.bootctl.policy import (
    ALL_GATES,
    Booted,
    BootPolicy,
    BootProgress,
    InstallRequested,
    decide,
)

CHECK = 300.0  # haos-boot-check's own --timeout


def loader_on(slot: Slot, tries: int = 1) -> ModelBootLoader:
    """Release 1.0 committed in A; with ``slot`` B, release 1.1 installed there and booted."""
    esp = fw.Esp(entries=(fw.EspEntry("haos-a.conf", "1.0"),), loader_default="haos-a.conf")
    loader = ModelBootLoader(esp)
    if slot is Slot.A:
        loader.power_on()
        return loader
    policy = BootPolicy(tries=tries)
    progress = decide(policy, loader.read(), BootProgress(), Booted(Slot.A), 0.0).progress
    execute(loader, decide(policy, loader.read(), progress, InstallRequested("1.1"), 0.0), print)
    loader.power_on()
    return loader


def test_a_release_on_trial_waits_for_its_units_at_most_the_proving_time() -> None:
    snap = loader_on(Slot.B).read()
    assert snap.booted is Slot.B and snap.b.state is SlotState.TRYING
    short = BootPolicy(gates=ALL_GATES, proving_timeout=45.0)
    assert check_timeout(short, snap, CHECK) == 45.0
    assert check_timeout(BootPolicy(gates=ALL_GATES), snap, CHECK) == CHECK  # 900 s: the check's


def test_a_committed_release_waits_the_checks_own_time_whatever_the_proving_time() -> None:
    snap = loader_on(Slot.A).read()
    assert snap.booted is Slot.A and snap.a.state is SlotState.COMMITTED
    assert check_timeout(BootPolicy(gates=ALL_GATES, proving_timeout=45.0), snap, CHECK) == CHECK
