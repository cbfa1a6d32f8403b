"""Durable copies of persistent checkpoints: the store's contract and the saver that keeps
one checkpoint's copy up to date.

A persistent checkpoint (``CheckpointService.open(..., persistent=True)``) survives the loss
of every replica at once (a whole-cluster power loss): its writer saves the whole section map
to a :class:`DurableStore` (e.g. the repository, which the daemon provides), and an ACTIVE
open of a checkpoint that no member of the view holds starts from the last save.

:class:`Saver` keeps one checkpoint's copy. It saves in the background, one save at a time,
each carrying the sections as they are when it starts (every write applied by then): a save
never carries an older state after a newer one, and a burst of writes costs two saves, not
one each. Versions count the writes a replica applied; :attr:`Saver.saved` is the version
last known durable.

The durable copy is a replica like the standbys, and a slow replica degrades writes, it does
not stall them (as Patroni's non-strict synchronous mode does with its synchronous standby).
A synchronous write waits for a save covering it (:meth:`Saver.through`) only up to a bound
(the service's ``durable_wait``), and not at all while the store is known stuck (a save has
been in flight longer than the bound, or the last one failed). A write that returns without
its save leaves the copy *behind* (:attr:`Saver.behind`): one warning says so, the saver goes
on saving (a failed save is retried with a backoff of ``RETRY_FIRST`` doubling up to
``RETRY_MAX``), and once a save covers every write acknowledged without one, the copy has
*caught up* (one line says when). So the copy holds every write acknowledged while it was not
behind; the writes acknowledged while it is behind are on the replicas only, and are lost if
every node loses power before it catches up.

A save the store refuses with a UsageError (e.g. the sections are larger than it keeps) would
never succeed: the synchronous writes it covered fail with it, and the saver tries again only
once a later write changed the sections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from haos.clock import Clock
from haos.errors import HaosError, UsageError

log = logging.getLogger(__name__)

# Seconds before the first retry of a failed save, and the most between two retries: a store
# that came back is used again within a second, and one that stays down costs one attempt a
# second (a small transaction on the repository).
RETRY_FIRST = 0.1
RETRY_MAX = 1.0


class DurableStore(Protocol):
    """Where persistent checkpoints are kept. Every method raises HaosError
    (UnavailableError when the store cannot be reached: the caller may try again; UsageError
    when it never can, e.g. the sections are too large)."""

    async def load(self, name: str) -> dict[str, bytes] | None:
        """The sections last saved as checkpoint ``name``; None if it was never saved (or
        was deleted)."""
        ...

    async def save(self, name: str, sections: Mapping[str, bytes]) -> None:
        """Replace the saved copy of ``name`` with ``sections`` (the whole checkpoint, all
        at once); durable once it returns. Idempotent."""
        ...

    async def delete(self, name: str) -> None:
        """Forget the saved copy of ``name``; nothing happens if there is none."""
        ...


Snapshot = Callable[[], tuple[int, dict[str, bytes]]]  # (version, sections) as applied now
Spawn = Callable[[Coroutine[Any, Any, None]], None]  # run in the owner's task group


class Saver:
    """Keeps the durable copy of one checkpoint (see the module docstring).

    ``snapshot`` returns the checkpoint's version and sections as this member holds them now
    (it raises HaosError once this member no longer holds the checkpoint); ``spawn`` runs the
    background saves; ``wait`` is the bound of :meth:`through`; ``saved`` is the version known
    durable already.
    """

    def __init__(
        self,
        store: DurableStore,
        name: str,
        snapshot: Snapshot,
        *,
        clock: Clock,
        spawn: Spawn,
        wait: float,
        saved: int = 0,
    ) -> None:
        self._store = store
        self._name = name
        self._snapshot = snapshot
        self._clock = clock
        self._spawn = spawn
        self.wait = wait
        self.saved = saved
        self.saves = 0  # completed saves (coalescing shows as fewer saves than writes)
        self._wanted = saved  # the highest version a save was asked for
        self._unsaved = saved  # the highest version acknowledged without its save
        self._pumping = False
        self._started: float | None = None  # when the save in flight started
        self.failing: HaosError | None = None  # why the last save failed, until one succeeds
        self._given_up: tuple[int, HaosError] | None = None  # saves up to a version never will
        self.behind_since: float | None = None
        self._waiting: set[asyncio.Event] = set()

    @property
    def behind(self) -> bool:
        """A write was acknowledged without a save covering it, and none has covered it yet."""
        return self.saved < self._unsaved

    def want(self, version: int) -> None:
        """Have a save covering ``version`` (applied here already) made in the background."""
        self._wanted = max(self._wanted, version)
        if not self._pumping and self.saved < self._wanted:
            self._pumping = True
            self._spawn(self._pump())

    def covered(self, version: int) -> None:
        """The durable copy is known to hold ``version`` already (e.g. it was restored)."""
        self.saved = max(self.saved, version)
        self._wanted = max(self._wanted, version)

    async def through(self, version: int, deadline: float) -> bool:
        """Return True once a save covering ``version`` completed. Return False (the write is
        acknowledged with the copy behind) at ``deadline``, once the save in flight has run
        for ``wait``, or at once while the last save failed. Raise the store's error if it
        refused (UsageError) the save that covered ``version``."""
        self.want(version)
        woken = asyncio.Event()  # one per waiter: no waiter clears another's wake-up
        self._waiting.add(woken)
        try:
            while self.saved < version:
                if self._given_up is not None and self._refused(version):
                    raise self._given_up[1]
                bound = self._bound(deadline)
                if self._clock.now() >= bound:
                    self._fell_behind(version)
                    return False
                await self._clock.wait(woken, bound)
                woken.clear()
            return True
        finally:
            self._waiting.discard(woken)

    def _bound(self, deadline: float) -> float:
        if self._started is not None:
            return min(deadline, self._started + self.wait)
        if self.failing is not None:
            return float("-inf")  # retrying after a backoff: the store is down, do not wait
        return deadline

    def _fell_behind(self, version: int) -> None:
        if not self.behind:
            self.behind_since = self._clock.now()
            why = (
                f"the last save failed ({self.failing})"
                if self.failing is not None and self._started is None
                else f"the durable store did not save within {self.wait * 1e3:.0f} ms"
            )
            log.warning(
                "checkpoint %s: durable copy behind, %s; %d writes pending",
                self._name,
                why,
                version - self.saved,
            )
        self._unsaved = max(self._unsaved, version)

    async def _pump(self) -> None:
        """Save until a save covers every version asked for (or the store refused them)."""
        delay = RETRY_FIRST
        try:
            while self.saved < self._wanted and not self._refused(self._wanted):
                if await self._save_once():
                    delay = RETRY_FIRST
                elif self.failing is not None:
                    await self._clock.wait(asyncio.Event(), self._clock.now() + delay)
                    delay = min(delay * 2, RETRY_MAX)
        finally:
            self._pumping = False
            self._started = None

    def _refused(self, version: int) -> bool:
        return self._given_up is not None and version <= self._given_up[0]

    async def _save_once(self) -> bool:
        """One save of the sections as they are now; True if it completed."""
        try:
            version, sections = self._snapshot()
        except HaosError as e:  # this member no longer holds the checkpoint
            self._give_up(self._wanted, e)
            return False
        self._started = self._clock.now()
        self._wake()
        try:
            await self._store.save(self._name, sections)
        except UsageError as e:
            log.warning("checkpoint %s: the durable store refused a save: %s", self._name, e)
            self.failing = None  # it answered: it is not down
            self._give_up(version, e)
            return False
        except HaosError as e:
            self._failed(e)
            return False
        finally:
            self._started = None
        self._saved(version)
        return True

    def _give_up(self, version: int, error: HaosError) -> None:
        self._given_up = (version, error)
        self._wake()

    def _failed(self, error: HaosError) -> None:
        if self.failing is None:
            log.warning(
                "checkpoint %s: saving the durable copy failed: %s; retrying in the background",
                self._name,
                error,
            )
        self.failing = error
        self._wake()

    def _saved(self, version: int) -> None:
        was_behind, was_failing = self.behind, self.failing is not None
        self.failing = None
        self.saved = max(self.saved, version)
        self.saves += 1
        if was_behind and not self.behind:
            assert self.behind_since is not None
            log.info(
                "durable copy of checkpoint %s caught up after %.2f s",
                self._name,
                self._clock.now() - self.behind_since,
            )
            self.behind_since = None
        elif was_failing and not was_behind:
            log.info("checkpoint %s: the durable copy is saved again", self._name)
        self._wake()

    def _wake(self) -> None:
        for woken in self._waiting:
            woken.set()
