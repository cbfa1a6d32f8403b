"""The CCR's write path: the sequencer orders TXNs, members apply ORDERs and report APPLIED,
and a write commits once durable on a majority (see :mod:`.protocol` for the whole design).

:class:`WritePath` is a mixin of :class:`~haos.cluster.dss.ccr.protocol.Replica`; it owns no
state of its own, only the methods that move writes forward.
"""

from __future__ import annotations

from collections.abc import Sequence

from haos.cluster.dss.ccr.actions import (
    Action,
    CcrConfig,
    Note,
    Persist,
    Phase,
    Release,
    Reset,
    Resolve,
    Send,
)
from haos.cluster.dss.ccr.errors import OutcomeUnknownError
from haos.cluster.dss.ccr.model import Compare, Entry, RequestId
from haos.cluster.dss.ccr.state import KvState
from haos.cluster.dss.ccr.sync import batches
from haos.cluster.dss.ccr.wire import Applied, Order, Reject, RejectReason, Txn
from haos.cluster.dss.wire import DropCounter
from haos.errors import ConflictError, HaosError, UnavailableError


class WritePath:
    """The write-path methods of a replica (state lives in the Replica)."""

    node_id: int
    config: CcrConfig
    state: KvState
    drops: DropCounter
    phase: Phase
    members: tuple[int, ...]
    writable: bool
    epoch: int
    commit: int
    released: int
    generation: int
    _queue: list[Txn]
    _durable: dict[int, int]
    _pending: dict[RequestId, int | None]
    _delivered: set[RequestId]
    _applied_sent: int
    _applied_in_flight: bool

    def _start(self) -> Send:
        raise NotImplementedError

    def _majority(self) -> int:
        raise NotImplementedError

    def _on_txn(self, sender: int, txn: Txn) -> list[Action]:
        if txn.request.node != sender:
            self.drops.drop("forged origin")
            return []
        if txn.request in self._pending:
            self._delivered.add(txn.request)
        if self.node_id != min(self.members):
            return []  # the sequencer orders it
        if self.phase is not Phase.NORMAL:
            self._queue.append(txn)
            return []
        if not self.writable:
            return [Send(Reject(txn.request, RejectReason.NOT_QUORATE))]
        return self._order([txn])

    def _order_own(self, txn: Txn) -> list[Action]:
        """As the sequencer of a writable view: order a write made here, without its TXN.

        The TXN's round trip would only bring it back to this member, to be ordered against
        the same copy; a failed compare is answered here instead of by a REJECT.
        """
        result = self.state.evaluate(txn.compares, txn.ops)
        if isinstance(result, Compare):
            return self._fail(txn.request, self._conflict(result))
        return self._order_entries(
            [self.state.apply(self.state.revision + 1, self.epoch, txn.request, result)]
        )

    def _order(self, txns: Sequence[Txn]) -> list[Action]:
        """As the sequencer: apply the TXNs that pass their compares, in delivery order."""
        entries: list[Entry] = []
        rejects: list[Action] = []
        for txn in txns:
            result = self.state.evaluate(txn.compares, txn.ops)
            if isinstance(result, Compare):
                item = self.state.get(result.key)
                found = item.mod_revision if item else 0
                reject = Reject(
                    txn.request, RejectReason.CONFLICT, result.key, result.mod_revision, found
                )
                rejects.append(Send(reject))
                continue
            entries.append(
                self.state.apply(self.state.revision + 1, self.epoch, txn.request, result)
            )
        if not entries:
            return rejects
        return [*self._order_entries(entries), *rejects]

    def _order_entries(self, entries: Sequence[Entry]) -> list[Action]:
        # ORDER leaves before the sequencer's own append: both proceed at once. The append
        # completes before this member counts itself or says APPLIED, because the service
        # carries out these actions in order, and none of another event in between.
        return [
            *[Send(Order(b)) for b in batches(entries)],
            *self._applied(entries),
            *self._report_applied(),
        ]

    def _conflict(self, failed: Compare) -> ConflictError:
        item = self.state.get(failed.key)
        found = item.mod_revision if item else 0
        return ConflictError(
            f"{failed.key}: expected mod_revision {failed.mod_revision}, found {found}"
        )

    def _on_order(self, sender: int, msg: Order) -> list[Action]:
        if sender == self.node_id:
            return []  # applied when ordered
        entries = msg.entries
        if not self.writable or sender != min(self.members) or entries[0].epoch != self.epoch:
            self.drops.drop("stale")
            return []
        if entries[0].revision != self.state.revision + 1:
            self.drops.drop("out of order")
            return [self._start(), Note("an ORDER does not follow this copy: syncing again")]
        for entry in entries:
            self.state.append(entry)
        # Not a word about the sequencer's disk: its ORDER left before its own append, and its
        # APPLIED says when that is durable.
        return [*self._applied(entries), *self._report_applied()]

    def _applied(self, entries: Sequence[Entry]) -> list[Action]:
        """Entries just applied here: make them durable, then see what got committed."""
        for entry in entries:
            if entry.request in self._pending:
                self._pending[entry.request] = entry.revision
                self._delivered.discard(entry.request)
        self._durable[self.node_id] = self.state.revision
        return [Persist(tuple(entries)), *self._advance_commit()]

    def _on_reject(self, msg: Reject) -> list[Action]:
        self._delivered.discard(msg.request)
        if msg.reason is RejectReason.CONFLICT:
            error: HaosError = ConflictError(
                f"{msg.key}: expected mod_revision {msg.expected}, found {msg.found}"
            )
        else:
            error = UnavailableError("not quorate: the partition refused the write")
        return self._fail(msg.request, error)

    def _fail(self, request: RequestId, error: HaosError) -> list[Action]:
        if self._pending.pop(request, False) is False:
            return []  # not ours, or the caller gave up
        return [Resolve(request, error=error)]

    def _report_applied(self) -> list[Action]:
        """APPLIED for what this member just made durable (the actions before this one),
        unless one is on its way: it is sent again when that one is delivered, if needed."""
        if self._applied_in_flight or not self.writable or len(self.members) == 1:
            return []  # alone, nobody needs to know
        if self.state.revision <= self._applied_sent:
            return []
        self._applied_in_flight = True
        self._applied_sent = self.state.revision
        return [Send(Applied(self.epoch, self.state.revision))]

    def _on_applied(self, sender: int, msg: Applied) -> list[Action]:
        out: list[Action] = []
        if sender == self.node_id:
            self._applied_in_flight = False
            out += self._report_applied()
        if self.writable and msg.epoch == self.epoch:
            self._durable[sender] = max(self._durable.get(sender, 0), msg.revision)
            out += self._advance_commit()
        return out

    def _advance_commit(self) -> list[Action]:
        if not self.writable:
            return []
        revisions = sorted(self._durable.values(), reverse=True)
        majority = self._majority()
        if len(revisions) < majority or revisions[majority - 1] <= self.commit:
            return []
        self.commit = revisions[majority - 1]
        return self._settle()

    def _settle(self) -> list[Action]:
        """Tell watchers and callers about everything committed up to ``self.commit``."""
        out: list[Action] = []
        if self.commit > self.released:
            if self.released < self.state.base.revision:
                self.generation += 1
                out.append(Reset(self.generation, "changes left the log before release"))
            else:
                entries = self.state.entries_after(self.released)
                out.append(Release(tuple(e for e in entries if e.revision <= self.commit)))
            self.released = self.commit
        for rid, rev in list(self._pending.items()):
            if rev is not None and rev <= self.commit:
                del self._pending[rid]
                entry = self.state.entry_at(rev)
                if entry is not None and entry.request == rid:
                    out.append(Resolve(rid, revision=rev))
                else:
                    out.append(Resolve(rid, error=OutcomeUnknownError("replaced by a sync")))
        return out

    def _recheck_pending(self) -> list[Action]:
        """Fail the applied, unconfirmed requests that a catch-up replaced."""
        out: list[Action] = []
        for rid, rev in list(self._pending.items()):
            if rev is None:
                continue
            entry = self.state.entry_at(rev)
            if entry is None or entry.request != rid:
                out += self._fail(rid, OutcomeUnknownError("replaced by a sync"))
        return out
