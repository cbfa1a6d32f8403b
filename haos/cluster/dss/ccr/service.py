"""The CCR service on one node: the asyncio adapter around :class:`~.protocol.Replica`.

Use::

    async with CcrService.open(transport, SqliteStore(path), quorum, CcrConfig(nodes=3)) as ccr:
        await ccr.wait_ready(timeout=10)
        revision = await ccr.put("/services/web/port", "8080")
        item = await ccr.get("/services/web/port")
        async for tree in follow(ccr, "/services/web"): reconfigure(tree)

One task reads the group transport and feeds the replica; it carries out the replica's actions
in order, so a store write is durable (fsynced) before any message or acknowledgement that
follows it. A write made on the sequencer is ordered by the calling task (no TXN); the actions
of one input -- a message, a view, a local write -- never interleave with another's. A
second task follows the quorum source. Writes return the revision at which they were
committed (durable on a majority) or raise: ConflictError (a compare failed; nothing
applied), UnavailableError (not applied: not quorate, not joined, the group could not be
reached), OutcomeUnknownError (may or may not be applied), UsageError (a malformed request).

When the group transport breaks (corosync stopped, node evicted), the service stops: pending
writes fail with OutcomeUnknownError, watches with UnavailableError, and :meth:`CcrService.run`
returns. If a message cannot be sent, the service (or, for a send that fails after it was
handed over, the transport) leaves the group first, so the other members are not left waiting
for it. A store failure (FatalError) is raised from ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Sequence

from haos.cluster.dss.ccr.actions import (
    Action,
    CcrConfig,
    Install,
    Note,
    Persist,
    Promise,
    Release,
    Reset,
    Resolve,
    Send,
    Status,
)
from haos.cluster.dss.ccr.errors import OutcomeUnknownError
from haos.cluster.dss.ccr.model import (
    Compare,
    Delete,
    DeletePrefix,
    Item,
    Op,
    Put,
    RequestId,
    as_value,
    validate_prefix,
)
from haos.cluster.dss.ccr.protocol import Replica
from haos.cluster.dss.ccr.quorum import QuorumSource
from haos.cluster.dss.ccr.store import Store
from haos.cluster.dss.ccr.watch import Watch, WatchHub
from haos.cluster.dss.ccr.wire import Txn
from haos.cluster.dss.corosync.trace import EVENT
from haos.cluster.dss.memory import Trimmer
from haos.cluster.dss.transport import GroupTransport, View
from haos.cluster.dss.wire import DropCounter
from haos.errors import FatalError, HaosError, UnavailableError, UsageError

# Messages of this many bytes or more are noted for the trimmer (small ones are pymalloc's).
LARGE_MESSAGE = 64 * 1024

log = logging.getLogger(__name__)


class CcrService:
    """See the module docstring. Construct, then :meth:`open` (or :meth:`load` + :meth:`run`)."""

    def __init__(
        self,
        transport: GroupTransport,
        store: Store,
        quorum: QuorumSource,
        config: CcrConfig,
        *,
        incarnation: int | None = None,
        trimmer: Trimmer | None = None,
    ) -> None:
        """Does no I/O. ``incarnation`` (random by default) names this run in request ids;
        ``trimmer`` returns the heap after large messages (a transfer)."""
        self._trimmer = trimmer or Trimmer()
        self._transport = transport
        self._store = store
        self._quorum = quorum
        self.config = config
        self._incarnation = secrets.randbits(63) if incarnation is None else incarnation
        self._core: Replica | None = None
        self._hub = WatchHub(config.watch_queue)
        self._waiters: dict[RequestId, asyncio.Future[int]] = {}
        self._stopped: BaseException | None = None
        self._progress = 0
        self._progressed = asyncio.Event()
        # Held while the replica decides and its actions are carried out, so the actions of
        # one input (a message, a local write) are never interleaved with another's.
        self._serial = asyncio.Lock()
        self._failure: FatalError | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        transport: GroupTransport,
        store: Store,
        quorum: QuorumSource,
        config: CcrConfig,
        *,
        incarnation: int | None = None,
    ) -> AsyncIterator[CcrService]:
        """Load the store, run the service in a task group, stop it when the block exits."""
        service = cls(transport, store, quorum, config, incarnation=incarnation)
        await service.load()
        failed: Exception | None = None
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(service.run())
            try:
                yield service
            except Exception as e:  # re-raised as itself, not inside an ExceptionGroup
                failed = e
            finally:
                runner.cancel()
        if failed is not None:
            raise failed

    @property
    def node_id(self) -> int:
        return self._transport.node_id

    @property
    def drops(self) -> DropCounter:
        """Messages dropped, by reason."""
        return self._live().drops

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the durable copy. Raises FatalError if the store cannot be read."""
        if self._core is None:
            durable = await asyncio.to_thread(self._store.load)
            self._core = Replica(
                self.node_id,
                self.config,
                durable,
                incarnation=self._incarnation,
                quorate=self._quorum.quorate(),
            )

    async def run(self) -> None:
        """Serve until cancelled or the group transport breaks (see the module docstring)."""
        await self.load()
        ended: BaseException = UnavailableError("ccr: the service was stopped")
        failure: FatalError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                quorum = tg.create_task(self._follow_quorum())
                try:
                    ended = await self._pump()
                except FatalError as e:
                    failure = ended = e
                finally:
                    quorum.cancel()
        finally:
            self._stop(ended)
        failure = failure or self._failure
        if failure is not None:
            raise failure

    def _stop(self, reason: BaseException) -> None:
        if self._stopped is not None:
            return
        self._stopped = reason
        log.info("ccr node %d stopped: %s", self.node_id, reason)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(OutcomeUnknownError(f"ccr stopped: {reason}"))
        self._hub.close(UnavailableError(f"ccr stopped: {reason}"))
        self._tick()

    async def _pump(self) -> BaseException:
        core = self._live()
        while True:
            try:
                event = await self._transport.next_event()
            except (UnavailableError, UsageError) as e:  # broken; or closed by a local write
                return self._stopped or e
            async with self._serial:
                if self._stopped is not None:
                    return self._stopped
                if isinstance(event, View):
                    actions = core.on_view(event)
                else:
                    self._noted(event.payload)
                    actions = core.on_message(event.sender, event.payload)
                try:
                    await self._execute(actions)
                except UnavailableError as e:
                    await self._leave(e)
                    return e
            self._tick()

    async def _leave(self, error: HaosError) -> None:
        """A message could not be sent (or the store failed): stop, and leave the group so
        the other members are not left waiting for this one."""
        log.warning("ccr node %d cannot go on, leaving the group: %s", self.node_id, error)
        if isinstance(error, FatalError):
            self._failure = self._failure or error
        self._stop(error)
        await self._transport.close()

    async def _follow_quorum(self) -> None:
        core = self._live()
        seen = core.quorate
        while True:
            seen = await self._quorum.wait_changed(seen)
            if self._stopped is not None:
                return
            try:
                async with self._serial:
                    await self._execute(core.on_quorum(seen))
            except HaosError as e:  # the group broke or was left: the pump stops the service
                log.warning("ccr node %d: quorum change not sent: %s", self.node_id, e)
            self._tick()

    async def peer_fenced(self, node_id: int) -> None:
        """The CMM confirmed node ``node_id`` fenced (NodeLeft after a successful fencing).

        In a two-node cluster this node may then write alone until the peer is back (the
        two-node rule of :mod:`.protocol`); with more nodes nothing changes.
        """
        core = self._live()
        try:
            async with self._serial:
                await self._execute(core.peer_fenced(node_id))
        except HaosError as e:  # the group broke or was left: the pump stops the service
            log.warning(
                "ccr node %d: fencing of node %d not acted on: %s", self.node_id, node_id, e
            )
        self._tick()

    async def _execute(self, actions: Sequence[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                payload = a.payload
                await self._transport.send(payload)
                self._noted(payload)
            elif isinstance(a, Persist):
                # On the loop's thread: an fsynced SQLite append takes ~0.3 ms here, less than
                # the thread hand-offs around it would cost under load.
                sys.audit(EVENT, "ccr.persist", a.entries)
                self._store.append(a.entries)
                sys.audit(EVENT, "ccr.durable", a.entries)
            elif isinstance(a, Install):
                await asyncio.to_thread(self._store.install, a.image)
                self._trimmer.note(sum(len(i.value) for i in a.image.items))
            elif isinstance(a, Promise):
                await asyncio.to_thread(self._store.promise, a.epoch)
            elif isinstance(a, Resolve):
                self._resolve(a)
            elif isinstance(a, Release):
                sys.audit(EVENT, "ccr.release", a.entries)
                self._hub.publish(a.entries)
            elif isinstance(a, Reset):
                self._hub.reset(a.generation, a.reason)
            elif isinstance(a, Note):
                log.info("ccr node %d: %s", self.node_id, a.reason)

    def _noted(self, payload: bytes) -> None:
        if len(payload) >= LARGE_MESSAGE:  # a transfer's chunk, a large value's write
            self._trimmer.note(len(payload))

    def _resolve(self, a: Resolve) -> None:
        waiter = self._waiters.pop(a.request, None)
        if waiter is None or waiter.done():
            return
        if a.error is not None:
            waiter.set_exception(a.error)
        else:
            assert a.revision is not None
            sys.audit(EVENT, "ccr.resolve", a.revision)
            waiter.set_result(a.revision)

    def _tick(self) -> None:
        self._progress += 1
        self._progressed.set()
        self._progressed = asyncio.Event()

    def _live(self) -> Replica:
        if self._stopped is not None:
            raise UnavailableError(f"ccr stopped: {self._stopped}")
        if self._core is None:
            raise UnavailableError("ccr: the service is not started")
        return self._core

    # -- state -------------------------------------------------------------------------------

    def status(self) -> Status:
        if self._core is None:
            raise UnavailableError("ccr: the service is not started")
        return self._core.status()

    @property
    def stopped(self) -> bool:
        return self._stopped is not None

    def content_hash(self) -> bytes:
        """The hash of this node's copy (equal on members that converged)."""
        if self._core is None:
            raise UnavailableError("ccr: the service is not started")
        return self._core.state.hash()

    @property
    def progress(self) -> int:
        """Counts the events handled; see :meth:`wait_progress`."""
        return self._progress

    async def wait_progress(self, seen: int) -> int:
        """Wait until :attr:`progress` is past ``seen``."""
        while self._progress == seen:
            await self._progressed.wait()
        return self._progress

    async def wait_until(self, predicate: Callable[[Status], bool], timeout: float) -> Status:
        """The first status that satisfies ``predicate``; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while True:
                seen = self._progress
                status = self.status()
                if predicate(status):
                    return status
                if self._stopped is not None:
                    raise UnavailableError(f"ccr stopped: {self._stopped}")
                await self.wait_progress(seen)

    async def wait_ready(self, timeout: float) -> Status:
        """Wait until this node serves reads (it received the cluster's state)."""
        return await self.wait_until(lambda s: s.synced, timeout)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        """The key's item, None if absent. UnavailableError before the first sync."""
        return self._live().get(key)

    async def range(self, prefix: str = "/") -> tuple[int, tuple[Item, ...]]:
        """The copy's revision and every item under ``prefix``, sorted by key."""
        return self._live().range(prefix)

    def watch(self, prefix: str = "/", after: int | None = None) -> Watch:
        """Committed changes under ``prefix`` after revision ``after`` (default: from now).

        Raises WatchLostError at once if ``after`` is older than the change log.
        """
        core = self._live()
        validate_prefix(prefix)
        start = core.released if after is None else after
        return self._hub.subscribe(prefix, start, core.generation, core.backlog(start))

    # -- writes ------------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        expect_revision: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Set ``key``; if ``expect_revision`` is given, only if its mod_revision is that
        (0: only if it does not exist). Returns the commit revision."""
        compares = () if expect_revision is None else (Compare(key, expect_revision),)
        return await self.txn(compares, (Put(key, as_value(value)),), timeout=timeout)

    async def delete(
        self, key: str, *, expect_revision: int | None = None, timeout: float | None = None
    ) -> int:
        compares = () if expect_revision is None else (Compare(key, expect_revision),)
        return await self.txn(compares, (Delete(key),), timeout=timeout)

    async def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        return await self.txn((), (DeletePrefix(prefix),), timeout=timeout)

    async def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], *, timeout: float | None = None
    ) -> int:
        """Apply ``ops`` atomically if every compare holds; the commit revision."""
        core = self._live()
        sys.audit(EVENT, "ccr.write", ops)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        deadline = self.config.request_timeout if timeout is None else timeout
        request: RequestId | None = None
        try:
            async with self._serial:
                self._live()
                request, actions = core.request(compares, ops)
                self._waiters[request] = waiter
                await self._start_write(actions)
            self._tick()
            async with asyncio.timeout(deadline):
                return await waiter
        except TimeoutError:
            raise OutcomeUnknownError(f"no outcome within {deadline} s") from None
        finally:
            if request is not None:
                self._waiters.pop(request, None)
                core.forget(request)

    async def _start_write(self, actions: Sequence[Action]) -> None:
        """Carry out a new write's actions: a TXN to send, or (on the sequencer) the write
        ordered, persisted and perhaps already committed."""
        if (
            len(actions) == 1
            and isinstance(actions[0], Send)
            and isinstance(actions[0].message, Txn)
        ):
            try:  # the TXN: nothing applied anywhere yet if it cannot be sent
                await self._transport.send(actions[0].payload)
            except UsageError as e:  # the service left the group meanwhile
                raise UnavailableError(f"ccr stopped: {self._stopped or e}") from e
            return
        try:
            await self._execute(actions)
        except (UnavailableError, UsageError, FatalError) as e:
            # Ordered and maybe persisted here: a later sync may still commit it.
            await self._leave(e)
            raise OutcomeUnknownError(f"ccr stopped while ordering the write: {e}") from e
