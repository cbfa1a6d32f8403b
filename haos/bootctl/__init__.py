"""A/B root slots with systemd-boot boot counting, and the two-phase commit of a release.

* :mod:`~haos.bootctl.model`: slots A/B, each slot's release and state (committed, trying,
  bad, empty), the :class:`BootSnapshot` the policy decides on.
* :mod:`~haos.bootctl.policy`: the pure policy, ``decide(policy, snapshot, progress, event,
  now) -> Decision``; :class:`BootPolicy` says which commit gates apply. The cluster gates
  (rejoined, proven) are off by default until the cluster layer reports them; turn them on
  with ``BootPolicy(gates=ALL_GATES)``.
* :mod:`~haos.bootctl.names`: entry file names and boot counters, exactly as systemd-boot
  parses and renames them; the glob patterns haos sets.
* :mod:`~haos.bootctl.firmware`: a pure model of systemd-boot's choice and counting, the
  source of the snapshot and the simulator for tests ("boot N times").
* :mod:`~haos.bootctl.loader`: the :class:`BootLoader` Protocol, its in-memory fake and the
  executor of a decision.
* :mod:`~haos.bootctl.systemd_boot`, :mod:`~haos.bootctl.entries`,
  :mod:`~haos.bootctl.efivars`: the backend over an ESP directory and EFI variables.

A new release boots uncommitted (``haos-b+3.conf`` tried through ``LoaderEntryDefault``),
is blessed only after the gates, and otherwise systemd-boot falls back to the committed entry
named by ``loader.conf`` once its tries are used up; the committed entry is never rewritten.
"""

from haos.bootctl.model import BootSnapshot, Slot, SlotInfo, SlotState
from haos.bootctl.policy import ALL_GATES, LOCAL_GATES, BootPolicy, BootProgress, Decision, decide

__all__ = [
    "ALL_GATES",
    "LOCAL_GATES",
    "BootPolicy",
    "BootProgress",
    "BootSnapshot",
    "Decision",
    "Slot",
    "SlotInfo",
    "SlotState",
    "decide",
]
