"""The CRC service: checkpoints with named sections, replicated where the standbys run.

Use::

    crc = CheckpointService(transport)       # its own group, e.g. CpgTransport "haos-crc"
    ckpt = await crc.open("svc-db", Role.ACTIVE)       # the active, to write
    await ckpt.write("sessions", data)                 # sync: stored by every standby
    ...
    ckpt = await crc.open("svc-db", Role.STANDBY)      # a standby: gets the content
    ckpt.read("sessions")                              # the last delivered data
    await ckpt.set_role(Role.ACTIVE)                   # take-over: read, then write on

A synchronous write returns once the writer's own copy applied it (it is ordered) and every
standby that held the checkpoint at that point of the order acknowledged storing it (a
standby that leaves or closes is no longer waited for); UnavailableError, naming the silent
standbys, if they did not within ``ack_timeout``. An asynchronous write returns once sent.

A member opens a checkpoint only once its directory has *settled* (see :attr:`settled`), or
after ``settle_timeout``: a member that booted alone founded a directory of its own, and one
that opened a checkpoint before the other side's directory was merged would hold an empty
replica of its own beside the real one, and drop the real holders' writes.
See ``checkpoint.replica`` for the state and its rules.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Collection

from haos.cluster.dss.checkpoint import wire
from haos.cluster.dss.checkpoint.replica import (
    AckTracker,
    Close,
    Directory,
    DirEvent,
    HolderChange,
    Members,
    Open,
    Replica,
    Role,
    Write,
)
from haos.cluster.dss.corosync.trace import EVENT
from haos.cluster.dss.messaging.group import GroupLink, LinkedService
from haos.cluster.dss.messaging.statesync import Outcome, Step, SyncTracker
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter, Service
from haos.errors import HaosError, UnavailableError, UsageError

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 5.0  # seconds an open waits for the directory to settle, then goes on
ACK_TIMEOUT = 10.0  # seconds a synchronous write waits for its standbys' acknowledgements


class Checkpoint:
    """A handle on a checkpoint this member opened (:meth:`CheckpointService.open`)."""

    def __init__(self, service: CheckpointService, name: str, role: Role) -> None:
        self._service = service
        self.name = name
        self.role = role
        self.closed = False

    def read(self, section: str) -> bytes | None:
        """The section's data as of the last delivered write; None if it has none."""
        return self._replica().read(section)

    def sections(self) -> dict[str, bytes]:
        return {name: s.data for name, s in sorted(self._replica().sections.items())}

    @property
    def replicas(self) -> tuple[int, ...]:
        """The standbys that synchronous writes wait for (as of the last delivered change)."""
        return tuple(sorted(self._service.directory.standbys(self.name)))

    async def write(self, section: str, data: bytes, *, sync: bool = True) -> None:
        wire.validate_name(section, "section")
        self._replica()
        await self._service._write(self.name, section, data, sync)

    async def delete(self, section: str, *, sync: bool = True) -> None:
        wire.validate_name(section, "section")
        self._replica()
        await self._service._write(self.name, section, None, sync)

    async def set_role(self, role: Role) -> None:
        """Change this member's role (e.g. STANDBY → ACTIVE on take-over); returns once sent."""
        self._replica()
        self.role = role
        await self._service._send(wire.OpenMsg(self.name, role))

    async def close(self) -> None:
        """Stop holding the checkpoint; its writes still waiting fail. Idempotent."""
        if not self.closed:
            self.closed = True
            self._service._handles.pop(self.name, None)
            await self._service._send(wire.CloseMsg(self.name))

    def _replica(self) -> Replica:
        if self.closed:
            raise UsageError(f"checkpoint {self.name} is closed")
        return self._service._replica(self.name)


class CheckpointService(LinkedService):
    """See the module docstring."""

    def __init__(
        self,
        transport: GroupTransport,
        *,
        drops: DropCounter | None = None,
        settle_timeout: float = SETTLE_TIMEOUT,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self._settle_timeout = settle_timeout
        self._ack_timeout = ack_timeout
        self._link = GroupLink(transport, Service.CRC, self, drops=drops)
        self.directory = Directory()
        self._dir_sync: SyncTracker[DirEvent] = SyncTracker(transport.node_id)
        self._in_sync = asyncio.Event()
        self._dir_changed = asyncio.Event()  # set on every view and directory transfer step
        # Members that joined this member's view and might hold a directory of their own (the
        # other side of a healed partition): until their side's offer (or their NEED, from a
        # fresh joiner) arrives, this member's directory may lack their checkpoints.
        self._unaccounted: set[int] = set()
        self._replicas: dict[str, Replica] = {}
        self._handles: dict[str, Checkpoint] = {}
        self._opening: dict[str, asyncio.Future[None]] = {}
        self._acks = AckTracker()
        self._writes: dict[int, asyncio.Future[None]] = {}
        self._next_write = secrets.randbits(62)
        self.late_acks = 0  # acks for writes no longer waited for (benign)

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
        self, name: str, role: Role = Role.STANDBY, *, covering: Collection[int] = ()
    ) -> Checkpoint:
        """Open (creating if new) checkpoint ``name``; return once this member holds its
        content. Opening an open checkpoint with another role changes the role.

        A new open first waits (at most ``settle_timeout``) until the directory has settled
        with every node of ``covering`` in the view (e.g. the membership another group
        already sees), so this member joins the checkpoint's real holders."""
        wire.validate_name(name)
        await self.wait_ready()
        if name not in self._handles and name not in self._opening:
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
        handle = self._handles.get(name)
        if handle is None and name in self._opening:
            await asyncio.shield(self._opening[name])
            handle = self._handles.get(name)
        if handle is not None:
            if handle.role is not role:
                await handle.set_role(role)
            return handle
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
        match wire.decode(kind, body):
            case wire.OpenMsg(name, role):
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

    def on_view(self, view: View) -> None:
        had_directory = self._dir_sync.in_sync
        self._deliver_dir(DirEvent(0, Members(view.members)))
        self._follow_dir(self._dir_sync.membership(view.members, view.joined, view.left))
        self._unaccounted &= set(view.members)
        if had_directory:
            self._unaccounted |= set(view.joined) - {self.node_id}
        elif not self._dir_sync.in_sync and view.joined:
            self._post(wire.NeedMsg())
        self._dir_changed.set()

    def _account(self, nodes: set[int]) -> None:
        if self._unaccounted & nodes:
            self._unaccounted -= nodes
            self._dir_changed.set()

    def on_stop(self, error: HaosError | None) -> None:
        self._in_sync.set()
        self._dir_changed.set()
        reason = error or UnavailableError("the CRC service was closed")
        for future in [*self._writes.values(), *self._opening.values()]:
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
        for write_id in self._acks.left(change.name, change.left):
            self._complete(write_id)
        me = self.node_id
        replica = self._replicas.get(change.name)
        if me in change.left:
            self._replicas.pop(change.name, None)
            self._fail_opening(change.name, "the checkpoint was closed while opening")
            return
        if me in change.joined and replica is None:
            replica = self._replicas[change.name] = Replica(change.name, me)
        if replica is not None:
            step = replica.sync.membership(change.holders, change.joined, change.left)
            self._follow_replica(replica, step)

    # -- content -----------------------------------------------------------------------------

    def _on_write(self, sender: int, msg: wire.WriteMsg) -> None:
        if sender == self.node_id and msg.write_id in self._writes:
            standbys = self.directory.standbys(msg.name) - {self.node_id}
            if self._acks.expect(msg.write_id, msg.name, standbys):
                self._complete(msg.write_id)
        replica = self._replicas.get(msg.name)
        if replica is None:
            return  # not a holder: nothing to store
        if self.directory.role(msg.name, sender) is None:
            self._link.drop("unexpected-write", sender, f"node {sender} does not hold {msg.name}")
            return
        write = Write(sender, msg.write_id, msg.section, msg.data, msg.sync)
        if replica.sync.deliver(write):
            self._apply_write(replica, write)

    def _apply_write(self, replica: Replica, write: Write) -> None:
        replica.apply(write)
        me = self.node_id
        if (
            write.sync
            and write.writer != me
            and self.directory.role(replica.name, me) is Role.STANDBY
        ):
            sys.audit(EVENT, "crc.applied", write.write_id)
            self._post(wire.AckMsg(write.writer, write.write_id, replica.name))

    def _on_ack(self, sender: int, msg: wire.AckMsg) -> None:
        if msg.writer != self.node_id:
            return  # for another writer
        if self._acks.ack(msg.write_id, sender):
            sys.audit(EVENT, "crc.acked", msg.write_id)
            self._complete(msg.write_id)
        elif msg.write_id not in self._acks:
            self.late_acks += 1

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

    def _follow_replica(self, replica: Replica, step: Step[Write]) -> None:
        for write in step.replay:
            self._apply_write(replica, write)
        if step.offer is not None:
            self._post(wire.ContentMsg(replica.name, step.offer, replica.snapshot()))
        if replica.sync.in_sync:
            future = self._opening.pop(replica.name, None)
            if future is not None and not future.done():
                future.set_result(None)

    # -- for Checkpoint ----------------------------------------------------------------------

    def _replica(self, name: str) -> Replica:
        self._link.check_running()
        replica = self._replicas.get(name)
        if replica is None or not replica.sync.in_sync:
            raise UnavailableError(f"this member does not hold checkpoint {name}")
        return replica

    async def _write(self, name: str, section: str, data: bytes | None, sync: bool) -> None:
        self._next_write += 1
        write_id = self._next_write
        msg = wire.WriteMsg(write_id, name, section, data, sync)
        if not sync:
            await self._send(msg)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes[write_id] = future
        sys.audit(EVENT, "crc.write", write_id)
        try:
            await self._send(msg)
            try:
                async with asyncio.timeout(self._ack_timeout):
                    await future  # cancelled at the deadline: nobody else waits for it
            except TimeoutError:
                silent = sorted(self._acks.waiting(write_id))
                raise UnavailableError(
                    f"synchronous write of {name}/{section}: no acknowledgement from"
                    f" node(s) {silent} within {self._ack_timeout:g} s"
                ) from None
            sys.audit(EVENT, "crc.done", write_id)
        finally:
            del self._writes[write_id]
            self._acks.forget(write_id)

    async def _send(self, msg: wire.Msg) -> None:
        kind, body = wire.encode(msg)
        await self._link.send(kind, body)

    def _post(self, msg: wire.Msg) -> None:
        kind, body = wire.encode(msg)
        self._link.post(kind, body)

    def _complete(self, write_id: int) -> None:
        future = self._writes.get(write_id)
        if future is not None and not future.done():
            future.set_result(None)

    def _fail_opening(self, name: str, why: str) -> None:
        future = self._opening.pop(name, None)
        if future is not None and not future.done():
            future.set_exception(UnavailableError(why))
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.closed = True
