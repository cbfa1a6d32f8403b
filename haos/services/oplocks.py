"""Operation locks (COpCo) in the CCR: the adapter of :mod:`haos.cluster.copco.leases`.

Every lease is one key, ``/haos/oplocks/lease/<sub-tree, URL-quoted>``, holding the lease as
JSON. Acquisitions are serialised by one more key, ``/haos/oplocks/turn``: an acquisition
reads the whole prefix at one revision, decides, and writes its leases and the turn in one
transaction only if the turn (and every expired lease it deletes) still has the revision it
read. So two nodes racing for overlapping sub-trees cannot both win: the loser's compare
fails, it reads again and is refused, naming the winner. Renewals, releases and breaks
compare on the lease's own key (a lease that expired and was taken meanwhile is not brought
back).

:meth:`OpLocks.hold` is how an operation takes its locks::

    async with oplocks.hold(["shelf1/slot2"], "extraction", "replace the line card"):
        ...  # renewed every ttl/3 while this runs; released at the end

Leases of a node that left the cluster are dropped by every node when its membership
service says so (:meth:`OpLocks.drop_node`; each deletes with a compare, so the first wins
and the rest find nothing); expired leases are ignored by every decision and deleted by
:meth:`OpLocks.clean`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol
from urllib.parse import quote

from haos.clock import Clock, MonotonicClock, wall_now, within
from haos.cluster.copco import leases as core
from haos.cluster.copco.leases import Lease, LockedError, LockLostError, Owner
from haos.cluster.dss.ccr.model import Compare, Delete, Item, Op, Put
from haos.errors import ConflictError, HaosError, UsageError

log = logging.getLogger(__name__)

ROOT = "/haos/oplocks"
LEASES = f"{ROOT}/lease"
TURN = f"{ROOT}/turn"
TTL = 30.0  # s an operation's lock lasts unless renewed
ATTEMPTS = 5  # reads and writes before a contended acquisition gives up


class Repository(Protocol):
    async def range(self, prefix: str = "/") -> tuple[int, tuple[Item, ...]]: ...

    async def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], *, timeout: float | None = None
    ) -> int: ...


def key_of(subtree: str) -> str:
    return f"{LEASES}/{quote(subtree, safe='')}"


class _View:
    """The locks as read at one revision: each lease with its key's revision."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.turn = 0
        self.revisions: dict[str, int] = {}
        self.leases: list[Lease] = []
        for item in items:
            if item.key == TURN:
                self.turn = item.mod_revision
            elif item.key.startswith(LEASES + "/"):
                try:
                    found = core.decode(item.value)
                except UsageError as e:
                    log.warning("ignoring %s: %s", item.key, e)
                    continue
                self.leases.append(found)
                self.revisions[found.subtree] = item.mod_revision

    def compare(self, lease: Lease) -> Compare:
        return Compare(key_of(lease.subtree), self.revisions[lease.subtree])


class OpLocks:
    """One node's access to the cluster's operation locks (see the module docstring).

    ``wall`` dates leases (wall-clock seconds, shared by every node); ``clock`` times the
    waits between renewals."""

    def __init__(
        self,
        ccr: Repository,
        node: str,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = wall_now,
        ttl: float = TTL,
    ) -> None:
        self._ccr = ccr
        self.node = node
        self._clock = clock or MonotonicClock()
        self._wall = wall
        self.ttl = ttl

    async def _read(self) -> _View:
        _, items = await self._ccr.range(ROOT)
        return _View(items)

    async def leases(self) -> tuple[Lease, ...]:
        """The live leases, by sub-tree."""
        return core.live((await self._read()).leases, self._wall())

    async def acquire(
        self,
        subtrees: Sequence[str],
        kind: str,
        reason: str,
        *,
        operation: str | None = None,
        ttl: float | None = None,
    ) -> tuple[Lease, ...]:
        """Leases on every sub-tree of ``subtrees``, or none: LockedError naming the holder
        of one of them; UsageError for a bad sub-tree, kind or reason."""
        owner = Owner(self.node, operation or f"{kind}-{secrets.token_hex(4)}")
        if not subtrees:
            return ()
        for _ in range(ATTEMPTS):
            view, now = await self._read(), self._wall()
            wants = [core.lease(s, owner, kind, reason, now, ttl or self.ttl) for s in subtrees]
            decision = core.acquire(view.leases, wants, now)
            if isinstance(decision, core.Refused):
                raise LockedError(decision.reason)
            compares = [Compare(TURN, view.turn), *(view.compare(c) for c in decision.clean)]
            ops: list[Op] = [Delete(key_of(c.subtree)) for c in decision.clean]
            ops += [Put(key_of(w.subtree), w.encode()) for w in decision.leases]
            ops.append(Put(TURN, owner.operation.encode()))
            try:
                await self._ccr.txn(compares, ops)
            except ConflictError:
                continue  # another acquisition (or a renewal) went first: decide again
            for w in decision.leases:
                log.info("locked %s for %s (%s): %s", w.subtree, owner, kind, reason)
            return decision.leases
        raise LockedError(f"the locks of {', '.join(subtrees)} stayed contended; try again")

    async def renew(self, mine: Lease, ttl: float | None = None) -> Lease:
        """``mine`` lasting ``ttl`` more seconds; LockLostError if it is no longer held."""
        view, now = await self._read(), self._wall()
        renewed = core.renew(view.leases, mine, now + (ttl or self.ttl), now)
        if isinstance(renewed, core.Lost):
            raise LockLostError(renewed.reason)
        try:
            await self._ccr.txn(
                (view.compare(renewed),), (Put(key_of(mine.subtree), renewed.encode()),)
            )
        except ConflictError:
            raise LockLostError(f"the lock on {mine.subtree} changed while being renewed") from None
        return renewed

    async def release(self, mine: Lease) -> bool:
        """Give ``mine`` up; False if it was no longer held."""
        return await self._delete(lambda view: core.release(view.leases, mine)) is not None

    async def release_maintenance(self, subtree: str) -> Lease:
        """End an operator's maintenance lock on ``subtree``; UsageError if there is none."""
        found = await self._delete(
            lambda view: core.release_maintenance(view.leases, subtree, self._wall())
        )
        assert found is not None
        log.info("released %s (%s)", found.subtree, found.reason)
        return found

    async def break_lock(self, subtree: str, by: str) -> Lease:
        """Delete the lock on ``subtree`` by force; UsageError if there is none."""
        found = await self._delete(lambda view: core.break_lock(view.leases, subtree))
        assert found is not None
        log.warning("lock on %s broken by %s: was %s", found.subtree, by, found.describe())
        return found

    async def _delete(self, pick: Callable[[_View], Lease | None]) -> Lease | None:
        for _ in range(ATTEMPTS):
            view = await self._read()
            found = pick(view)
            if found is None:
                return None
            try:
                await self._ccr.txn((view.compare(found),), (Delete(key_of(found.subtree)),))
            except ConflictError:
                continue  # renewed or replaced meanwhile: look again
            return found
        raise LockedError("the lock kept changing while being deleted; try again")

    async def drop_node(self, node: str) -> tuple[Lease, ...]:
        """Delete the leases of ``node``, which left the cluster."""
        return await self._drop(lambda view: core.of_node(view.leases, node), f"{node} left")

    async def clean(self) -> tuple[Lease, ...]:
        """Delete the expired leases."""
        return await self._drop(lambda view: core.expired(view.leases, self._wall()), "expired")

    async def _drop(
        self, pick: Callable[[_View], tuple[Lease, ...]], why: str
    ) -> tuple[Lease, ...]:
        dropped: list[Lease] = []
        for found in pick(await self._read()):
            view = await self._read()
            if found.subtree not in view.revisions or found not in view.leases:
                continue  # gone or replaced meanwhile
            try:
                await self._ccr.txn((view.compare(found),), (Delete(key_of(found.subtree)),))
            except ConflictError:
                continue  # another node dropped or renewed it first
            log.info("lock on %s dropped (%s): was %s", found.subtree, why, found.describe())
            dropped.append(found)
        return tuple(dropped)

    @contextlib.asynccontextmanager
    async def hold(
        self,
        subtrees: str | Sequence[str],
        kind: str,
        reason: str,
        *,
        operation: str | None = None,
    ) -> AsyncIterator[tuple[Lease, ...]]:
        """Lock ``subtrees`` (LockedError if another operation holds one of them) for as long
        as the body runs, renewing the leases every ttl/3; released when it ends."""
        names = [subtrees] if isinstance(subtrees, str) else list(subtrees)
        held = list(await self.acquire(names, kind, reason, operation=operation))
        stop = asyncio.Event()
        # One task, ended with the body: a TaskGroup here would wrap the body's own errors
        # (a LockedError of a nested hold, say) in an ExceptionGroup.
        keeper = asyncio.ensure_future(self._keep(held, stop))
        try:
            yield tuple(held)
        finally:
            stop.set()
            await keeper
            for mine in held:
                with contextlib.suppress(HaosError):
                    await self.release(mine)

    async def _keep(self, held: list[Lease], stop: asyncio.Event) -> None:
        """Renew ``held`` in place every ttl/3 until ``stop``; a lost lease is logged (the
        operation goes on: it was the lock's holder when it started)."""
        while True:
            await self._clock.wait(stop, self._clock.now() + self.ttl / 3)
            if stop.is_set():
                return
            for i, mine in enumerate(held):
                try:
                    held[i] = await self.renew(mine)
                except HaosError as e:
                    log.error("lock on %s not renewed: %s", mine.subtree, e)

    async def tend(self, left: asyncio.Queue[str]) -> None:
        """Drop the leases of each node put in ``left`` (it left the cluster) and, every ttl,
        the expired leases. A write that fails (no quorum, say) is tried again a ttl later."""
        pending: set[str] = set()
        while True:
            with contextlib.suppress(TimeoutError):
                pending.add(await within(self._clock, self._clock.now() + self.ttl, left.get()))
            while not left.empty():
                pending.add(left.get_nowait())
            try:
                for node in sorted(pending):
                    await self.drop_node(node)
                    pending.discard(node)
                await self.clean()
            except HaosError as e:
                log.warning("operation locks not tidied (will try again): %s", e)
