"""The CCR replication state machine: pure, no I/O, no clock, no logging.

Inputs: a view change, a delivered message, a local write request, a quorum change.
Outputs (:data:`Action`, executed in order by the adapter): store writes (:class:`Persist`,
:class:`Install`, :class:`Promise`) that must be durable before anything after them is done,
messages to multicast, request outcomes, committed entries for watchers, and notes to log.
The ordering is CPG's; nothing here is a consensus protocol of its own. It relies on:

* agreed order + virtual synchrony: members that go through the same views deliver the same
  messages in the same order, so a rule evaluated on the delivered stream gives every member
  the same answer (which sync round counts, who sends the state, when the view turns
  writable, who the sequencer is);
* sender FIFO (causal) delivery: a member that delivered a sender's message delivered all that
  sender's earlier messages of the view, also in the transitional delivery at a partition;
* a majority of the configured nodes (``CcrConfig.nodes``): at most one partition can hold it;
* the quorum source (votequorum) as an extra gate, so its policies (wait_for_all after a cold
  start, a node that lost quorum) hold for the CCR too.

**Sync round** (after every view change, and again when a member's quorum verdict changes):
the lowest member multicasts START; each member answers SYNC (version = epoch of its last
entry + revision, its promised epoch, content hash, quorum verdict). Once every member's SYNC
is delivered, all pick the same *chosen* member: highest version, ties to the lowest node id.
The chosen member multicasts DATA: the log entries after the lowest lagging version that lies
on its history (a delta, so watchers see every change), plus a snapshot if some lagging copy
does not lie on it. Laggards catch up; then every member durably *promises* the round's epoch
(one above every promised epoch in the round) and multicasts READY with its quorum verdict.
At the delivery of the READY that makes READYs with a quorate verdict number a majority of the
configured nodes, the view becomes *writable* in that epoch, at the same point of the stream
for every member. If every READY arrives without that, the round ends read-only.

**Writes**: a request is multicast as TXN. The *sequencer* (the view's lowest member) alone
acts on it: while writable it evaluates the compares against its copy, applies the TXN,
multicasts the entry as ORDER (or a REJECT: a failed compare is a ConflictError for the
origin) and persists it; the other members apply and persist ORDERs. During a round the
sequencer queues TXNs and orders (or refuses) them where the round ends; while read-only it
refuses them ('not quorate'). A write made *on* the sequencer of a writable view skips the TXN
hop: it is ordered at once, exactly as its TXN would have been where it was delivered (the
sequencer's copy and its ORDER stream are the same either way; a view change that overtakes
the ORDER is the same case as for a delivered TXN). Every member, the sequencer included,
multicasts APPLIED (coalesced) once its copy is durable up to a revision -- an ORDER says
nothing about the sequencer's disk, because it leaves before the sequencer's own append. A
write is *committed* once durable on a majority of the configured nodes, and only then is the
caller acknowledged and watchers told. So an acknowledged write survives any crash, restart
or partition that leaves a majority of disks: every later majority holds a member that has it.

Why a sequencer rather than every member applying TXNs in agreed order: at a partition, CPG's
extended virtual synchrony lets the two sides deliver different *subsets* of the view's last
messages (each skips the other side's messages it never received), so two copies could hold
different entries under the same epoch and revision. Entries that all come from one sender
are delivered as a prefix of its stream, so every copy of an epoch is a prefix of the
sequencer's: one epoch, one history, and "equal version, equal content" holds.

**Quorum race**: votequorum's callback and CPG's view change reach each process separately
and in no fixed order, so a member's verdict at a given point of the stream is not something
the others know. That is why the verdict only travels *inside* ordered messages (SYNC, READY)
and a change of verdict starts a new round: the writable point is a function of the delivered
stream. A member that still believes it is quorate (stale) in a minority cannot make it
writable: READYs must come from a majority of the configured nodes, which a minority view
does not have. A stale inquorate verdict only delays writability until its change arrives.

**Epochs** make "highest version wins" safe after crashes. CPG's agreed order may deliver a
message to its sender and to no one else when it fails (or is cut off) right after, so the
sequencer can hold entries that nobody else saw. Each writable epoch is unique (READYs from a
majority that promised it durably; any later majority overlaps them and so picks a higher
epoch), so entries of a dead branch carry an older epoch and lose to the committed history,
never tie with it.

**Two-node rule**: with exactly two configured nodes the majority is both, so a lone node
could never write. corosync's votequorum two_node mode keeps the survivor of a split quorate
and lets fencing decide which side survives; the CCR follows it, but only on proof: once the
adapter reports the peer *confirmed fenced* (:meth:`Replica.peer_fenced`: the CMM published
NodeLeft for it after a successful fencing), the fenced peer's vote counts for this node while
it is alone in its view, so its own disk is the majority: its READY makes the view writable
(a new round is started for that if the view is read-only), and its own durable revision
commits. Reads need nothing new (the node was synced before). The first view that holds the
peer again ends the rule. Why that is safe:

* every write acknowledged before the split was durable on both disks (the majority of 2);
* the rule applies only to a node that is ``synced``, i.e. has completed a round together
  with its peer since it (re)started, so its copy holds every committed write; a node that
  restarted and never synced with its peer (it may hold the stale side) never uses it;
* fencing confirmed means the peer is off, so there is one writer. Once rebooted, the peer is
  inquorate under votequorum's wait_for_all until it sees the survivor, and then syncs from
  it: the survivor's writes carry its newer epoch (a higher version), and the peer's
  unacknowledged leftovers of the older epoch lose to them (had the survivor written nothing,
  both copies lie on that older epoch's history, and the longer holds the shorter). If the
  pair splits again before that sync completes, the rebooted peer is not ``synced`` and
  cannot use the rule. The survivor's epoch is still unique: the peer can promise it in a
  read-only round of its own before it is fenced, but never be writable in it.
* the rule only applies in a view of this node alone, so no other member has to agree on it;
  and a fence confirmed while the peer is still in the view (its departure not delivered yet)
  counts for the next view only if that view lacks the peer: fencing returns once the peer
  is off, and it cannot boot and rejoin in the moment before the notice is handed over.

The price is votequorum's: while the rule holds, a write acknowledged by the survivor is on
its disk alone, until the peer is back and synced.

The quorum source still gates the rule (the node's own READY must say quorate). With three or
more nodes :meth:`Replica.peer_fenced` changes nothing: a fenced node's vote never counts.

**Reads** are served from the local copy once the node completed a round in a view holding a
majority of the configured nodes since it started (before that, UnavailableError): such a
round's chosen state holds every committed write. A read may show a write that is applied but
not yet committed (for the milliseconds until APPLIEDs arrive); watchers see committed writes
only, and an uncommitted write that a later sync replaces resets the node's watchers.
"""

from __future__ import annotations

from collections.abc import Sequence

from haos.cluster.dss.ccr.actions import (
    Action,
    CcrConfig,
    Install,
    Note,
    Persist,
    Phase,
    Promise,
    Reset,
    Send,
    Status,
)
from haos.cluster.dss.ccr.errors import OutcomeUnknownError, WatchLostError
from haos.cluster.dss.ccr.model import (
    MAX_TXN_BYTES,
    Compare,
    Durable,
    Entry,
    Item,
    Op,
    RequestId,
    check_txn,
    validate_key,
    validate_prefix,
)
from haos.cluster.dss.ccr.state import KvState
from haos.cluster.dss.ccr.sync import Round, delta_for, transfer_for
from haos.cluster.dss.ccr.wire import (
    Data,
    Nonce,
    Order,
    Ready,
    Reject,
    RejectReason,
    Start,
    Sync,
    Transfer,
    Txn,
    decode_message,
    decode_transfer,
    encode_message,
)
from haos.cluster.dss.ccr.writes import WritePath
from haos.cluster.dss.transport import View
from haos.cluster.dss.wire import DropCounter, WireError
from haos.errors import UnavailableError, UsageError


class Replica(WritePath):
    """One member's replication state. See the module docstring."""

    def __init__(
        self,
        node_id: int,
        config: CcrConfig,
        durable: Durable,
        *,
        incarnation: int,
        quorate: bool,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.incarnation = incarnation
        self.state = KvState(durable, config.log_limit, config.log_bytes)
        self.promised = durable.promised_epoch
        self.quorate = quorate
        self.drops = DropCounter()
        self.phase = Phase.JOINING
        self.members: tuple[int, ...] = ()
        self.synced = False
        self.writable = False
        self.epoch = 0  # the writable epoch, while writable
        self.commit = 0  # highest revision known committed
        self.released = self.state.revision  # watchers were given every entry up to here
        self.generation = 0  # bumped whenever watchers are reset
        self._round: Round | None = None
        self._reported: bool | None = None  # the quorum verdict sent in this round
        self._queue: list[Txn] = []  # the sequencer's TXNs delivered during the round
        self._durable: dict[int, int] = {}  # member -> revision durable there (this epoch)
        self._pending: dict[RequestId, int | None] = {}  # None: sent; else applied at rev
        self._delivered: set[RequestId] = set()  # own TXNs delivered in this view, unanswered
        self._orphans: set[RequestId] = set()  # own TXNs delivered in an earlier view
        self._seq = 0
        self._rounds = 0
        self._applied_sent = 0
        self._applied_in_flight = False
        self._fenced: int | None = None  # the peer confirmed fenced (two-node rule)

    # -- inputs ------------------------------------------------------------------------------

    def on_view(self, view: View) -> list[Action]:
        out: list[Action] = []
        self.members = view.members
        self.writable = False
        if self._fenced is not None and self._fenced in view.members:
            self._fenced = None  # the peer is back: both disks are needed again
        self._round = None
        self.phase = Phase.WAITING
        # Our TXNs delivered in the old view and not yet answered were seen by the old view's
        # sequencer only: whether it ordered them is known once a round settles.
        self._orphans |= self._delivered & self._pending.keys()
        self._delivered = set()
        self._queue = []
        if self.node_id == min(view.members):
            out.append(self._start())
        out.append(
            Note(
                f"view {list(view.members)} (joined {list(view.joined)}, left "
                f"{list(view.left)}): syncing"
            )
        )
        return out

    def on_message(self, sender: int, payload: bytes) -> list[Action]:
        try:
            msg = decode_message(payload)
        except WireError as e:
            self.drops.drop("malformed")
            return [Note(f"dropped a malformed message from node {sender}: {e}")]
        if self.phase is Phase.JOINING or sender not in self.members:
            self.drops.drop("not from a member")
            return []
        if isinstance(msg, Txn):
            return self._on_txn(sender, msg)
        if isinstance(msg, Start):
            return self._on_start(msg)
        if isinstance(msg, Sync):
            return self._on_sync(sender, msg)
        if isinstance(msg, Data):
            return self._on_data(sender, msg)
        if isinstance(msg, Ready):
            return self._on_ready(sender, msg)
        if isinstance(msg, Order):
            return self._on_order(sender, msg)
        if isinstance(msg, Reject):
            return self._on_reject(msg)
        return self._on_applied(sender, msg)

    def on_quorum(self, quorate: bool) -> list[Action]:
        """The local quorum source changed its verdict: start a round to carry it."""
        self.quorate = quorate
        if self._reported is None or quorate == self._reported or self.phase is Phase.WAITING:
            return []
        self._reported = None  # one START per change is enough
        return [self._start(), Note(f"quorum source says {'' if quorate else 'not '}quorate")]

    def peer_fenced(self, node_id: int) -> list[Action]:
        """The peer ``node_id`` was confirmed fenced: with two configured nodes, this node may
        write alone until the peer is a member again (the two-node rule, module docstring).
        With more nodes this changes nothing.

        The peer may still be in the view: its departure not delivered yet (the CMM saw it
        first), or it came back before its fencing, which kills it anyway. The record then
        stands for the view change without it; a view that holds the peer clears it.
        """
        if self.config.nodes != 2 or node_id == self.node_id:
            return []
        self._fenced = node_id
        out: list[Action] = [Note(f"node {node_id} confirmed fenced: two-node rule")]
        if self._peer_vote() and not self.writable and self.phase is Phase.NORMAL:
            out.append(self._start())  # the last round ended read-only: count again
        return out

    def request(
        self, compares: Sequence[Compare], ops: Sequence[Op]
    ) -> tuple[RequestId, list[Action]]:
        """Start a write: its id and the actions that carry it out. Raises if it cannot be
        accepted. On another member the action is the TXN to multicast; on the sequencer of a
        writable view the write is ordered at once (see :meth:`WritePath._order_own`).
        """
        check_txn(compares, ops)
        if self.phase is Phase.JOINING:
            raise UnavailableError("ccr: not in the group yet")
        if not self.quorate:
            raise UnavailableError("not quorate: so says this node's quorum source")
        if self.phase is Phase.NORMAL and not self.writable:
            raise UnavailableError(
                f"not quorate: this partition {list(self.members)} cannot reach a majority "
                f"of the {self.config.nodes} nodes"
            )
        self._seq += 1
        rid = RequestId(self.node_id, self.incarnation, self._seq)
        txn = Txn(rid, tuple(compares), tuple(ops))
        payload = encode_message(txn)
        if len(payload) > MAX_TXN_BYTES:
            raise UsageError(f"transaction of {len(payload)} bytes exceeds {MAX_TXN_BYTES}")
        self._pending[rid] = None
        if self.phase is Phase.NORMAL and self.writable and self.node_id == min(self.members):
            return rid, self._order_own(txn)
        return rid, [Send(txn)]

    def forget(self, request: RequestId) -> None:
        """The caller gave up waiting for ``request``."""
        self._pending.pop(request, None)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        self._check_readable()
        return self.state.get(validate_key(key))

    def range(self, prefix: str) -> tuple[int, tuple[Item, ...]]:
        self._check_readable()
        return self.state.revision, self.state.range(validate_prefix(prefix))

    def backlog(self, after: int) -> tuple[Entry, ...]:
        """Committed entries after ``after`` for a new watcher (WatchLostError if gone)."""
        self._check_readable()
        if after >= self.released:
            return ()
        if after < self.state.base.revision:
            raise WatchLostError(
                f"revision {after} is no longer in the change log (it starts after "
                f"{self.state.base.revision})"
            )
        return tuple(e for e in self.state.entries_after(after) if e.revision <= self.released)

    def status(self) -> Status:
        return Status(
            self.node_id,
            self.phase,
            self.members,
            self.synced,
            self.writable,
            self.quorate,
            self.epoch,
            self.state.revision,
            self.commit,
            self.state.version,
        )

    def _check_readable(self) -> None:
        if not self.synced:
            raise UnavailableError(
                "ccr: not synced: no state received from a majority since this node started"
            )

    def _peer_vote(self) -> bool:
        """Whether the two-node rule gives this node its fenced peer's vote (module docstring):
        two configured nodes, the peer confirmed fenced, this node alone in its view, and
        synced with the peer since it started (so its copy holds every committed write)."""
        return (
            self._fenced is not None
            and self.config.nodes == 2
            and self.members == (self.node_id,)
            and self.synced
        )

    def _majority(self) -> int:
        """Votes needed: a majority of the configured nodes, less the fenced peer's vote."""
        return self.config.majority - (1 if self._peer_vote() else 0)

    # -- the round ---------------------------------------------------------------------------

    def _start(self) -> Send:
        self._rounds += 1
        return Send(Start(Nonce(self.incarnation, self._rounds), self.members))

    def _on_start(self, msg: Start) -> list[Action]:
        if msg.members != self.members:
            self.drops.drop("stale")
            return []
        self.writable = False
        self._round = Round(msg.nonce, self.members)
        self.phase = Phase.SYNCING
        self._reported = self.quorate
        sync = Sync(msg.nonce, self.promised, self.state.version, self.state.hash(), self.quorate)
        return [Send(sync)]

    def _current(self, nonce: Nonce, phase: Phase) -> Round | None:
        r = self._round
        if r is None or r.nonce != nonce or self.phase is not phase:
            self.drops.drop("stale")
            return None
        return r

    def _on_sync(self, sender: int, msg: Sync) -> list[Action]:
        r = self._current(msg.nonce, Phase.SYNCING)
        if r is None or sender in r.syncs:
            return []
        r.syncs[sender] = msg
        if len(r.syncs) < len(r.members):
            return []
        r.decide()
        if not r.laggards:
            return self._transferred(r, None)
        self.phase = Phase.TRANSFER
        return self._send_transfer(r) if r.chosen == self.node_id else []

    def _send_transfer(self, r: Round) -> list[Action]:
        return [Send(d) for d in transfer_for(self.state, r, self.config.chunk_bytes)]

    def _on_data(self, sender: int, msg: Data) -> list[Action]:
        r = self._current(msg.nonce, Phase.TRANSFER)
        if r is None:
            return []
        if sender != r.chosen or msg.index != len(r.chunks):
            return self._restart(f"unexpected DATA chunk {msg.index} from node {sender}")
        lagging = self.node_id in r.laggards
        r.chunks.append(msg.chunk if lagging else b"")  # a copy not lagging only counts them
        if len(r.chunks) < msg.total:
            return []
        if not lagging:
            return self._transferred(r, None)
        data, r.chunks = b"".join(r.chunks), []
        try:
            transfer = decode_transfer(data)
        except WireError as e:
            return self._restart(f"undecodable transfer: {e}")
        return self._transferred(r, transfer)

    def _restart(self, reason: str) -> list[Action]:
        # Only a bug or a damaged copy gets here. Others may carry on with the round, so this
        # member asks for a new one itself (a duplicate START costs one more round).
        self.drops.drop("broken transfer")
        self._round = None
        self.phase = Phase.WAITING
        return [self._start(), Note(f"sync round restarted: {reason}")]

    def _transferred(self, r: Round, transfer: Transfer | None) -> list[Action]:
        out: list[Action] = []
        if self.node_id in r.laggards:
            assert transfer is not None
            caught_up = self._catch_up(r, transfer)
            if caught_up is None:
                return self._restart("the transfer fits no lagging copy")
            out += caught_up
        self.promised = max(self.promised, r.epoch)
        out.append(Promise(self.promised))
        self.phase = Phase.READY
        # Not the fenced peer's vote here: it lets only a synced node write (module docstring).
        if len(r.members) >= self.config.majority and not self.synced:
            self.synced = True
            out.append(Note(f"synced at revision {self.state.revision}"))
        out += self._recheck_pending()
        self._reported = self.quorate
        out.append(Send(Ready(r.nonce, self.quorate)))
        return out

    def _catch_up(self, r: Round, t: Transfer) -> list[Action] | None:
        entries = delta_for(self.state.version, r.syncs[r.chosen].version, t)
        if entries is not None:
            for entry in entries:
                self.state.append(entry)
            out: list[Action] = [Persist(entries), Note(f"caught up by {len(entries)} entries")]
            if self.state.hash() != r.syncs[r.chosen].hash:
                # Same history, other content (a damaged copy): the next round sees equal
                # versions with unequal hashes and sends this copy a snapshot.
                self.drops.drop("diverged")
                out += [Note("copy differs from the chosen one after the delta"), self._start()]
            return out
        if t.image is None:
            return None
        self.state.install(t.image)
        self.generation += 1
        self.released = self.state.revision
        reason = f"copy replaced by a snapshot at revision {self.state.revision}"
        return [Install(t.image), Reset(self.generation, reason), Note(reason)]

    def _on_ready(self, sender: int, msg: Ready) -> list[Action]:
        r = self._round
        if r is not None and r.nonce == msg.nonce and self.phase is Phase.NORMAL:
            return []  # a READY after the round was decided: nothing left to count
        r = self._current(msg.nonce, Phase.READY)
        if r is None or sender in r.readies:
            return []
        r.readies[sender] = msg.quorate
        quorate = sum(r.readies.values())
        if quorate >= self._majority() and len(r.members) <= self.config.nodes:
            return self._become_writable(r)
        if len(r.readies) == len(r.members):
            return self._become_read_only(r, quorate)
        return []

    def _become_writable(self, r: Round) -> list[Action]:
        self.phase = Phase.NORMAL
        self.writable = True
        self.epoch = r.epoch
        # Every READY sender holds this state durably: it is committed.
        self.commit = self.state.revision
        self._durable = {n: self.state.revision for n in r.readies}
        self._applied_sent = self.state.revision
        self._applied_in_flight = False
        out: list[Action] = [
            Note(
                f"writable in epoch {self.epoch} at revision {self.state.revision} "
                f"with {list(self.members)}, sequencer {min(self.members)}"
            )
        ]
        for rid in self._orphans & self._pending.keys():
            entry = self.state.find(rid)
            if entry is None:
                out += self._fail(
                    rid, OutcomeUnknownError("the group changed before the write was ordered")
                )
            else:
                self._pending[rid] = entry.revision
        self._orphans = set()
        out += self._settle()
        queued, self._queue = self._queue, []
        return out + self._order(queued)

    def _become_read_only(self, r: Round, quorate: int) -> list[Action]:
        self.phase = Phase.NORMAL
        out: list[Action] = [
            Note(
                f"read-only: {quorate} quorate of {len(r.members)} members, "
                f"{self._majority()} of {self.config.nodes} needed"
            )
        ]
        queued, self._queue = self._queue, []
        for txn in queued:
            out.append(Send(Reject(txn.request, RejectReason.NOT_QUORATE)))
        unknown = OutcomeUnknownError("the write could not be confirmed by a majority")
        for rid, rev in list(self._pending.items()):
            if rev is not None or rid in self._orphans:
                out += self._fail(rid, unknown)
        self._orphans = set()
        return out

    # -- writes ------------------------------------------------------------------------------
