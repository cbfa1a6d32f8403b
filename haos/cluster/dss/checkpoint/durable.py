"""Durable copies of persistent checkpoints: the store's contract and the saver that keeps
one checkpoint's copy up to date.

A persistent checkpoint (``CheckpointService.open(..., persistent=True)``) survives the loss
of every replica at once (a whole-cluster power loss): its writer saves the whole section map
to a :class:`DurableStore` (e.g. the repository, which the daemon provides), and an ACTIVE
open of a checkpoint that no member of the view holds starts from the last save.

:class:`Saver` serialises and coalesces one checkpoint's saves: one save at a time; a write
made while a save is in flight waits for the next one, which carries the sections as they are
when it starts (every write applied by then), so a save never carries an older state after a
newer one, and a burst of writes costs two saves, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from haos.errors import HaosError

log = logging.getLogger(__name__)


class DurableStore(Protocol):
    """Where persistent checkpoints are kept. Every method raises HaosError
    (UnavailableError when the store cannot be reached: the caller may try again)."""

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


class Saver:
    """Keeps the durable copy of one checkpoint (see the module docstring).

    ``snapshot`` returns the checkpoint's version (its count of applied writes) and sections
    as this member holds them now; ``saved`` is the version known durable already.
    """

    def __init__(self, store: DurableStore, name: str, snapshot: Snapshot, saved: int = 0) -> None:
        self._store = store
        self._name = name
        self._snapshot = snapshot
        self.saved = saved
        self.saves = 0  # completed saves (coalescing shows as fewer saves than writes)
        self._inflight: asyncio.Future[None] | None = None

    async def through(self, version: int) -> None:
        """Return once a save covering ``version`` completed; raise the store's HaosError if
        the save that would have covered it failed."""
        while self.saved < version:
            inflight = self._inflight
            if inflight is not None:
                await asyncio.shield(inflight)  # started before this write: not enough
                continue
            await self._save()

    async def quietly(self, version: int) -> None:
        """:meth:`through`, logging a failure (for asynchronous writes: nobody waits)."""
        try:
            await self.through(version)
        except HaosError as e:
            log.warning("checkpoint %s: an asynchronous write was not saved: %s", self._name, e)

    async def _save(self) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)
        self._inflight = done
        try:
            version, sections = self._snapshot()
            await self._store.save(self._name, sections)
        except HaosError as e:
            done.set_exception(e)
            raise
        except BaseException:  # e.g. the saving writer was cancelled: the waiters try again
            done.set_result(None)
            raise
        finally:
            self._inflight = None
        self.saved = max(self.saved, version)
        self.saves += 1
        done.set_result(None)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # waiters see it; nobody waiting is not an error
