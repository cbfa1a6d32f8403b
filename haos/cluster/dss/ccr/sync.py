"""The pure pieces of a sync round and of ordering: who is chosen, what is sent, what fits.

See :mod:`.protocol` for the round itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from haos.cluster.dss.ccr.model import MAX_TXN_BYTES, Entry, Version
from haos.cluster.dss.ccr.state import KvState
from haos.cluster.dss.ccr.wire import Data, Nonce, Sync, Transfer, chunks, encode_transfer


@dataclass
class Round:
    """One sync round as a member sees it; the same on every member at the same point."""

    nonce: Nonce
    members: tuple[int, ...]
    syncs: dict[int, Sync] = field(default_factory=dict)
    chosen: int = 0
    epoch: int = 0
    laggards: frozenset[int] = frozenset()
    chunks: list[bytes] = field(default_factory=list)
    readies: dict[int, bool] = field(default_factory=dict)

    def decide(self) -> None:
        """With every member's SYNC in: the chosen member (highest version, then lowest node
        id), the round's epoch (above every promise and version), and who lags behind it
        (another version, or the same version with other content)."""
        self.chosen = max(self.syncs, key=lambda n: (self.syncs[n].version, -n))
        best = self.syncs[self.chosen]
        self.epoch = 1 + max(max(s.promised_epoch, s.version.epoch) for s in self.syncs.values())
        self.laggards = frozenset(
            n for n, s in self.syncs.items() if (s.version, s.hash) != (best.version, best.hash)
        )


def transfer_for(state: KvState, r: Round, chunk_bytes: int) -> list[Data]:
    """As the chosen member: the DATA chunks that bring every laggard to ``state``.

    A delta from the oldest lagging version that lies on this history; a snapshot as well if
    some lagging copy does not (another branch, older than the log, or damaged).
    """
    behind = [r.syncs[n].version for n in r.laggards]
    fitting = [v for v in behind if v != state.version and state.fits(v)]
    base = min(fitting, default=state.version)
    image = state.image() if len(fitting) < len(behind) else None
    data = encode_transfer(Transfer(base, state.entries_after(base.revision), image))
    pieces = chunks(data, chunk_bytes)
    return [Data(r.nonce, i, len(pieces), p) for i, p in enumerate(pieces)]


def delta_for(mine: Version, chosen: Version, t: Transfer) -> tuple[Entry, ...] | None:
    """The entries of ``t`` that continue a copy at ``mine``; None if the delta does not fit
    it (then the snapshot must be used)."""
    if mine == chosen:
        return None  # same version, other content: only the snapshot repairs it
    if mine == t.base:
        return t.entries
    i = mine.revision - t.base.revision - 1
    if 0 <= i < len(t.entries) and Version(t.entries[i].epoch, mine.revision) == mine:
        return t.entries[i + 1 :]
    return None


def batches(entries: Sequence[Entry]) -> list[tuple[Entry, ...]]:
    """``entries`` in ORDER-sized groups (each TXN fits one message; a queue of them may not)."""
    out: list[tuple[Entry, ...]] = []
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        weight = 64 + sum(len(c.key) * 4 + len(c.value or b"") + 16 for c in entry.changes)
        if batch and size + weight > MAX_TXN_BYTES:
            out.append(tuple(batch))
            batch, size = [], 0
        batch.append(entry)
        size += weight
    return [*out, tuple(batch)] if batch else out
