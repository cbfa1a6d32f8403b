"""The CRC service: checkpoints with named sections, replicated where the standbys run.

Use::

    crc = CheckpointService(transport)       # its own group, e.g. CpgTransport "haos-crc"
    ckpt = await crc.open("svc-db", Role.ACTIVE)       # the active, to write
    await ckpt.write("sessions", data)                 # sync: stored by every fresh standby
    ...
    ckpt = await crc.open("svc-db", Role.STANDBY)      # a standby: gets the content
    ckpt.read("sessions")                              # the last delivered data
    await ckpt.set_role(Role.ACTIVE)                   # take-over: read, then write on

A synchronous write returns once the writer's own copy applied it (it is ordered) and every
standby that held the checkpoint at that point of the order, and was not stale, acknowledged
storing it or was *dropped* for not doing so within ``drop_after`` (see ``checkpoint.writes``:
a slow standby costs one write ``drop_after``, not a stall). A standby that leaves or closes
is no longer waited for. UnavailableError if the write, or its DROP, is not delivered within
``ack_timeout``. An asynchronous write returns once sent.

A dropped replica is *stale* for every member from the DROP's place in the order: it forgets
its content, takes a fresh state transfer from a holder that is not stale, then multicasts
SYNCED, from which point writes wait for it again. Until then its reads and writes raise
UnavailableError, it acknowledges nothing, and it cannot become ACTIVE: a take-over
(:meth:`Checkpoint.set_role` to ACTIVE, or an ACTIVE open) first lets everything ordered
before it arrive, then waits for the resynchronisation (at most ``settle_timeout``), and raises
UnavailableError if it does not come -- at once when no holder that is not stale is left (the
writer died first: acknowledged writes may be on no member; once every stale holder closed
it, a persistent checkpoint starts again from its durable copy). :meth:`Directory.synced`
lists the holders that are not stale.

A member opens a checkpoint only once its directory has *settled* (see :attr:`settled`), or
after ``settle_timeout``: a member that booted alone founded a directory of its own, and one
that opened a checkpoint before the other side's directory was merged would hold an empty
replica of its own beside the real one, and drop the real holders' writes.

Persistent checkpoints (``open(..., persistent=True)``, with a ``durable`` store given): the
writer saves the whole checkpoint to the store in the background (see ``checkpoint.durable``:
saves are serialised and coalesced), starting once its own copy applied a write. The durable
copy is a replica too, and a slow one degrades writes rather than stalling them: a synchronous
write also waits, besides the above, for a save covering it, but at most ``durable_wait`` from
its delivery (the same clock as the standbys' ``drop_after``, so a stalled standby and a
stalled store cost one bound together), and not at all while the store is known stuck. A
write that returns without its save leaves the copy *behind* (:attr:`Checkpoint.durable_behind`,
one warning per such period) until a save covers it. So a whole-cluster power loss keeps every
synchronous write acknowledged while the copy was not behind; those acknowledged while it is
behind (the store stalled or unreachable) are lost if every node loses power before it
catches up. A save the store refuses with a UsageError (the sections are larger than it
keeps) fails the synchronous writes it covered, as it would never succeed. An asynchronous
write is saved in the background. A persistent checkpoint opened or taken ACTIVE that has
never been written since it was created in memory starts from the durable copy (e.g. after
the whole cluster lost power, and its standbys opened it empty), written to every holder like
any write.

Sizes: a section holds at most :data:`~haos.limits.MAX_CHECKPOINT_SECTION` bytes (16 MiB);
a larger write is refused (UsageError naming the limit) before anything is sent. A message
larger than a CPG message should be (a large WRITE, a state transfer) travels in fragments and
takes effect where its last fragment sits in the order (see ``checkpoint.fragments``), so such
a write is visible on every replica at once, all or nothing, and counts its acknowledgements
and drops from there like any write.

See ``checkpoint.replica`` for the state and its rules, ``checkpoint.resync`` for drops and
take-overs, ``checkpoint.persist`` for the durable copy.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Callable, Collection, Iterator

from haos.clock import Clock, MonotonicClock
from haos.cluster.dss.checkpoint import fragments, wire
from haos.cluster.dss.checkpoint.durable import DurableStore
from haos.cluster.dss.checkpoint.fragments import Assembler
from haos.cluster.dss.checkpoint.handle import Checkpoint
from haos.cluster.dss.checkpoint.persist import Persisting
from haos.cluster.dss.checkpoint.replica import (
    Close,
    Directory,
    DirEvent,
    HolderChange,
    Members,
    Open,
    Replica,
    Role,
    Synced,
    Write,
)
from haos.cluster.dss.checkpoint.resync import Resyncing
from haos.cluster.dss.checkpoint.writes import Writes
from haos.cluster.dss.corosync.trace import EVENT
from haos.cluster.dss.memory import Trimmer
from haos.cluster.dss.messaging.group import GroupLink, LinkedService
from haos.cluster.dss.messaging.statesync import Outcome, Step, SyncTracker
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter, Service
from haos.errors import HaosError, UnavailableError, UsageError

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 5.0  # seconds an open waits for the directory to settle, then goes on
ACK_TIMEOUT = 10.0  # seconds a synchronous write may take in all (delivery, acks or drops)
# Seconds a synchronous write waits for a standby's acknowledgement before dropping it. Above
# every acknowledgement a live standby gives: the write's p99 (delivery to acknowledgement
# included) is ~5 ms on a quiet 3-node, 2-core harness and was 17-134 ms per run with the
# machine saturated (load 6-9 on its 2 cores; BENCHMARKS.md), and a full garbage collection
# pauses a daemon 4-17 ms. Below what a user notices as an outage (the demo's client gives
# up after 300 ms) and far below the 5 s watchdog that ends a stopped daemon for good.
DROP_AFTER = 0.25
# Seconds a persistent synchronous write waits for a save covering it, from its delivery. A
# save to the repository is one transaction, as fast as a checkpoint write (p99 under 10 ms on
# a quiet harness, BENCHMARKS.md), so a healthy store never comes near it; the same bound as
# DROP_AFTER because the store is judged like a standby, and a client gives up after 300 ms.
DURABLE_WAIT = 0.25

__all__ = [
    "ACK_TIMEOUT",
    "DROP_AFTER",
    "DURABLE_WAIT",
    "SETTLE_TIMEOUT",
    "Checkpoint",
    "CheckpointService",
]


class CheckpointService(Resyncing, Persisting, LinkedService):
    """See the module docstring."""

    def __init__(
        self,
        transport: GroupTransport,
        *,
        drops: DropCounter | None = None,
        settle_timeout: float = SETTLE_TIMEOUT,
        ack_timeout: float = ACK_TIMEOUT,
        drop_after: float = DROP_AFTER,
        clock: Clock | None = None,
        durable: DurableStore | None = None,
        durable_wait: float = DURABLE_WAIT,
        trimmer: Trimmer | None = None,
    ) -> None:
        if not 0 < drop_after < ack_timeout:
            raise UsageError(
                f"drop_after ({drop_after:g} s) must be positive and under ack_timeout"
                f" ({ack_timeout:g} s)"
            )
        if not durable_wait > 0:
            raise UsageError(f"durable_wait ({durable_wait:g} s) must be positive")
        self._durable_wait = durable_wait
        self._trimmer = trimmer or Trimmer()  # the heap back after large messages
        self._settle_timeout = settle_timeout
        self._ack_timeout = ack_timeout
        self._drop_after = drop_after
        self._clock: Clock = clock or MonotonicClock()
        self.durable = durable
        self._link = GroupLink(transport, Service.CRC, self, drops=drops)
        self.directory = Directory()
        self._dir_sync: SyncTracker[DirEvent] = SyncTracker(transport.node_id)
        self._in_sync = asyncio.Event()
        self._dir_changed = asyncio.Event()  # set on every view and directory transfer step
        self._waiting: set[asyncio.Event] = set()  # of _until: set on every message and view
        # Members that joined this member's view and might hold a directory of their own (the
        # other side of a healed partition): until their side's offer (or their NEED, from a
        # fresh joiner) arrives, this member's directory may lack their checkpoints.
        self._unaccounted: set[int] = set()
        self._replicas: dict[str, Replica] = {}
        self._handles: dict[str, Checkpoint] = {}
        self._opening: dict[str, asyncio.Future[None]] = {}
        self._writes = Writes(
            transport.node_id,
            self._clock,
            self._until,
            lambda write_id, node, name: self._post(wire.DropMsg(write_id, node, name)),
            drop_after=drop_after,
            ack_timeout=ack_timeout,
        )
        self._opens_sent = 0
        self._opens_seen = 0  # this member's OPENs delivered (a barrier for take-overs)
        self._next_write = secrets.randbits(62)
        self._next_msg = secrets.randbits(62)  # fragmented messages sent
        self._assembler = Assembler()

    @property
    def late_acks(self) -> int:
        """Acknowledgements of writes no longer waited for (benign)."""
        return self._writes.late_acks

    async def wait_ready(self) -> None:
        """Return once this member holds the directory (founded or transferred)."""
        await self._link.wait_ready()
        await self._in_sync.wait()
        self._link.check_running()

    @property
    def settled(self) -> bool:
        """This member holds the directory, and every member that joined its view has either
        said it holds none (NEED) or had its side's directory merged here: a checkpoint this
        member does not list is held by nobody in the view."""
        return self._dir_sync.in_sync and not self._unaccounted

    async def wait_settled(self, covering: Collection[int] = ()) -> None:
        """Return once :attr:`settled` with every node of ``covering`` in the view (e.g. the
        nodes another group already sees: this group's view may lag behind)."""
        await self.wait_ready()
        while not (self.settled and set(covering) <= self._dir_sync.members):
            self._dir_changed.clear()
            await self._dir_changed.wait()
            self._link.check_running()

    async def open(
        self,
        name: str,
        role: Role = Role.STANDBY,
        *,
        covering: Collection[int] = (),
        persistent: bool = False,
    ) -> Checkpoint:
        """Open (creating if new) checkpoint ``name``; return once this member holds its
        content. Opening an open checkpoint with another role changes the role (see
        :meth:`Checkpoint.set_role`); with ``persistent`` it makes the handle persistent.

        A new open first waits (at most ``settle_timeout``) until the directory has settled
        with every node of ``covering`` in the view (e.g. the membership another group
        already sees), so this member joins the checkpoint's real holders. An ACTIVE open
        raises UnavailableError if this member's replica is stale and cannot resynchronise
        (e.g. every holder is stale). ``persistent`` needs the service's durable store."""
        wire.validate_name(name)
        if persistent and self.durable is None:
            raise UsageError(f"checkpoint {name}: persistent, but no durable store is configured")
        await self.wait_ready()
        if name not in self._handles and name not in self._opening:
            await self._settle(name, covering)
        handle = self._handles.get(name)
        if handle is None and name in self._opening:
            await asyncio.shield(self._opening[name])
            handle = self._handles.get(name)
        if handle is None:
            handle = await self._join(name, role)
            if role is Role.ACTIVE:
                try:
                    await self._fresh(name, self._clock.now() + self._settle_timeout)
                except UnavailableError:
                    await handle.close()
                    raise
        elif handle.role is not role:
            await handle.set_role(role)
        if persistent and handle.saver is None:
            handle.saver = self._saver(name)
            if handle.role is Role.ACTIVE:
                await self._restore(handle)
        return handle

    async def _settle(self, name: str, covering: Collection[int]) -> None:
        try:
            async with asyncio.timeout(self._settle_timeout):
                await self.wait_settled(covering)
        except TimeoutError:  # e.g. a member of an older release, which sends no NEED
            log.warning(
                "CRC on node %d: directory not settled after %g s (waiting for %s);"
                " opening %s regardless",
                self.node_id,
                self._settle_timeout,
                sorted(self._unaccounted) or "the view",
                name,
            )

    async def _join(self, name: str, role: Role) -> Checkpoint:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[name] = future
        try:
            await self._send(wire.OpenMsg(name, role))
            await asyncio.shield(future)
        except BaseException:
            self._opening.pop(name, None)
            if name not in self._handles:
                self._post(wire.CloseMsg(name))  # we may have become a holder regardless
            raise
        handle = Checkpoint(self, name, role)
        self._handles[name] = handle
        return handle

    # -- Receiver ----------------------------------------------------------------------------

    def on_message(self, sender: int, kind: int, body: bytes) -> None:
        if kind == wire.Kind.FRAGMENT:
            frag = wire.decode(kind, body)
            assert isinstance(frag, wire.FragmentMsg)
            whole = self._assembler.add(sender, frag)
            if whole is None:
                return  # handled where its last fragment sits in the order
            kind, body = whole
            self._trimmer.note(len(body))
        elif self._assembler.interrupted(sender):
            self._link.drop("cut-off", sender, "a fragmented message was cut off")
        self._handle(sender, wire.decode(kind, body))
        self._progressed()

    def _handle(self, sender: int, msg: wire.Msg) -> None:
        match msg:
            case wire.OpenMsg(name, role):
                if sender == self.node_id:
                    self._opens_seen += 1
                self._deliver_dir(DirEvent(sender, Open(name, role)))
            case wire.CloseMsg(name):
                self._deliver_dir(DirEvent(sender, Close(name)))
            case wire.WriteMsg() as msg:
                self._on_write(sender, msg)
            case wire.AckMsg() as msg:
                self._on_ack(sender, msg)
            case wire.ContentMsg() as msg:
                self._on_content(sender, msg)
            case wire.SyncMsg() as msg:
                self._on_dir_sync(sender, msg)
            case wire.NeedMsg():
                self._account({sender})
            case wire.DropMsg() as msg:
                self._on_drop(sender, msg)
            case wire.SyncedMsg(name):
                self._deliver_dir(DirEvent(sender, Synced(name)))

    def on_view(self, view: View) -> None:
        self._assembler.forget(view.left)
        had_directory = self._dir_sync.in_sync
        self._deliver_dir(DirEvent(0, Members(view.members)))
        self._follow_dir(self._dir_sync.membership(view.members, view.joined, view.left))
        self._unaccounted &= set(view.members)
        if had_directory:
            self._unaccounted |= set(view.joined) - {self.node_id}
        elif not self._dir_sync.in_sync and view.joined:
            self._post(wire.NeedMsg())
        self._dir_changed.set()
        self._progressed()

    def _account(self, nodes: set[int]) -> None:
        if self._unaccounted & nodes:
            self._unaccounted -= nodes
            self._dir_changed.set()

    def on_stop(self, error: HaosError | None) -> None:
        self._in_sync.set()
        self._dir_changed.set()
        self._progressed()
        reason = error or UnavailableError("the CRC service was closed")
        self._writes.fail_all(reason)
        for future in self._opening.values():
            if not future.done():
                future.set_exception(reason)
        for handle in self._handles.values():
            handle.closed = True

    # -- the directory -----------------------------------------------------------------------

    def _deliver_dir(self, event: DirEvent) -> None:
        if self._dir_sync.deliver(event):
            for change in self.directory.apply(event):
                self._holders_changed(change)

    def _on_dir_sync(self, sender: int, msg: wire.SyncMsg) -> None:
        if sender != self.node_id:  # the sender's side: merged or installed below
            self._account({sender, *msg.offer.synced})
        step = self._dir_sync.on_offer(sender, msg.offer)
        if step.outcome is Outcome.INSTALL:
            self.directory.install(msg.directory)
        elif step.outcome is Outcome.MERGE:
            for change in self.directory.merge(msg.directory):
                self._holders_changed(change)
        elif step.outcome is Outcome.REJECT:
            self._link.drop("unexpected-sync", sender, step.reason)
        self._follow_dir(step)
        self._dir_changed.set()

    def _follow_dir(self, step: Step[DirEvent]) -> None:
        if step.reason:
            log.info("CRC on node %d: %s", self.node_id, step.reason)
        for event in step.replay:
            for change in self.directory.apply(event):
                self._holders_changed(change)
        if step.offer is not None:
            self._post(wire.SyncMsg(step.offer, self.directory.snapshot()))
        if self._dir_sync.in_sync:
            self._in_sync.set()

    def _holders_changed(self, change: HolderChange) -> None:
        self._writes.release(change.name, change.left + change.stale)
        me = self.node_id
        replica = self._replicas.get(change.name)
        if me in change.left:
            self._replicas.pop(change.name, None)
            self._fail_opening(change.name, "the checkpoint was closed while opening")
            return
        if me in change.joined and replica is None:
            replica = self._replicas[change.name] = Replica(change.name, me)
        if replica is not None:
            joined = change.joined + self._rejoined(replica, change.stale)
            step = replica.sync.membership(change.holders, joined, change.left)
            self._follow_replica(replica, step)

    # -- content -----------------------------------------------------------------------------

    def _on_write(self, sender: int, msg: wire.WriteMsg) -> None:
        me = self.node_id
        pending = None
        if sender == me:
            standbys = self.directory.standbys(msg.name) - {me}
            pending = self._writes.delivered(msg.write_id, standbys)
        replica = self._replicas.get(msg.name)
        if replica is None:
            return  # not a holder: nothing to store
        if self.directory.role(msg.name, sender) is None:
            self._link.drop("unexpected-write", sender, f"node {sender} does not hold {msg.name}")
            return
        write = Write(sender, msg.write_id, msg.section, msg.data, msg.sync)
        if replica.sync.deliver(write):
            self._apply_write(replica, write)
        if pending is not None:
            pending.version = replica.version
            if pending.persist:  # saved while the standbys acknowledge
                self._save_later(msg.name, replica.version)
        elif sender == me and not msg.sync:
            self._save_later(msg.name, replica.version)

    def _apply_write(self, replica: Replica, write: Write) -> None:
        replica.apply(write)
        me, name = self.node_id, replica.name
        if (
            write.sync
            and write.writer != me
            and self.directory.role(name, me) is Role.STANDBY
            and not self.directory.is_stale(name, me)  # not waited for; acks once resynced
        ):
            sys.audit(EVENT, "crc.applied", write.write_id)
            self._post(wire.AckMsg(write.writer, write.write_id, name))

    def _on_ack(self, sender: int, msg: wire.AckMsg) -> None:
        if msg.writer != self.node_id:
            return  # for another writer
        if self._writes.acked(msg.write_id, sender):
            sys.audit(EVENT, "crc.acked", msg.write_id)

    def _on_content(self, sender: int, msg: wire.ContentMsg) -> None:
        replica = self._replicas.get(msg.name)
        if replica is None:
            return  # for the holders of a checkpoint we do not hold
        step = replica.sync.on_offer(sender, msg.offer)
        if step.outcome is Outcome.INSTALL:
            replica.install(msg.content)
        elif step.outcome is Outcome.MERGE:
            replica.merge(msg.content)
        elif step.outcome is Outcome.REJECT:
            self._link.drop("unexpected-content", sender, step.reason)
        self._follow_replica(replica, step)
        me = self.node_id
        if (
            step.outcome is Outcome.INSTALL
            and self.directory.is_stale(msg.name, me)
            and not self.directory.is_stale(msg.name, sender)  # a fresh copy
        ):
            log.info(
                "CRC on node %d: checkpoint %s resynchronised from node %d",
                me,
                msg.name,
                sender,
            )
            self._post(wire.SyncedMsg(msg.name))

    def _follow_replica(self, replica: Replica, step: Step[Write]) -> None:
        for write in step.replay:
            self._apply_write(replica, write)
        if step.offer is not None:
            self._post(wire.ContentMsg(replica.name, step.offer, replica.snapshot()))
        if step.outcome is Outcome.FOUND and self.directory.is_stale(replica.name, self.node_id):
            log.warning(
                "CRC on node %d: checkpoint %s: this replica is stale and no holder that is"
                " not is left to resynchronise from; it stays stale until closed",
                self.node_id,
                replica.name,
            )
        if replica.sync.in_sync:
            future = self._opening.pop(replica.name, None)
            if future is not None and not future.done():
                future.set_result(None)

    # -- for Checkpoint ----------------------------------------------------------------------

    def _replica(self, name: str, *, fresh: bool = True) -> Replica:
        self._link.check_running()
        replica = self._replicas.get(name)
        if replica is None or not replica.sync.in_sync:
            if replica is not None and fresh and self.directory.is_stale(name, self.node_id):
                raise UnavailableError(self._stale_text(name))
            raise UnavailableError(f"this member does not hold checkpoint {name}")
        if fresh and self.directory.is_stale(name, self.node_id):
            raise UnavailableError(self._stale_text(name))
        return replica

    async def _send(self, msg: wire.Msg) -> None:
        """Multicast ``msg``; return once its last fragment was handed to the transport."""
        last: tuple[int, bytes] | None = None
        for frame in self._frames(msg):
            if last is not None:
                self._link.post(*last)
            last = frame
        assert last is not None
        await self._link.send(*last)

    def _post(self, msg: wire.Msg) -> None:
        for kind, body in self._frames(msg):
            self._link.post(kind, body)

    def _frames(self, msg: wire.Msg) -> Iterator[tuple[int, bytes]]:
        """``msg`` as one message, or as FRAGMENTs made one at a time if it is larger than
        one should be (see ``checkpoint.fragments``)."""
        if isinstance(msg, wire.OpenMsg):
            self._opens_sent += 1
        kind, parts = wire.encode_parts(msg)
        if fragments.size(parts) <= fragments.FRAGMENT_BYTES:
            yield kind, b"".join(parts)
            return
        self._next_msg += 1
        self._trimmer.note(fragments.size(parts))
        for body in fragments.split(self._next_msg, kind, parts):
            yield wire.Kind.FRAGMENT, body

    async def _until(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait (on the clock) until ``predicate`` holds, re-checked after every delivered
        message and view; False at ``deadline``."""
        woken = asyncio.Event()  # one per waiter: no waiter clears another's wake-up
        self._waiting.add(woken)
        try:
            while not predicate():
                self._link.check_running()
                if self._clock.now() >= deadline:
                    return False
                await self._clock.wait(woken, deadline)
                woken.clear()
            return True
        finally:
            self._waiting.discard(woken)

    def _progressed(self) -> None:
        for woken in self._waiting:
            woken.set()

    # -- writing -----------------------------------------------------------------------------

    async def _write(
        self, handle: Checkpoint, section: str, data: bytes | None, sync: bool, *, save: bool = True
    ) -> None:
        name = handle.name
        self._next_write += 1
        write_id = self._next_write
        msg = wire.WriteMsg(write_id, name, section, data, sync)
        if not sync:
            await self._send(msg)  # a persistent one is saved once delivered (_save_later)
            return
        pending = self._writes.start(write_id, name)
        pending.persist = save and handle.saver is not None
        sys.audit(EVENT, "crc.write", write_id)
        try:
            await self._send(msg)
            await self._writes.wait(write_id, f"{name}/{section}")
            sys.audit(EVENT, "crc.done", write_id)
        finally:
            self._writes.finish(write_id)
        if pending.persist and handle.saver is not None and pending.delivered_at is not None:
            await handle.saver.through(pending.version, pending.delivered_at + self._durable_wait)

    def _fail_opening(self, name: str, why: str) -> None:
        future = self._opening.pop(name, None)
        if future is not None and not future.done():
            future.set_exception(UnavailableError(why))
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.closed = True
