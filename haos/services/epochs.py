"""Mastership epochs, claimed in the repository (CCR).

An availability service that becomes active claims the next epoch before it decides or orders
anything: it reads ``/haos/crim/epoch`` and writes the next number with a compare on the
revision it read, durably on a majority like every repository write. So every activation in
the cluster's life gets its own epoch, larger than every earlier one -- across take-overs,
partition merges and whole-cluster restarts (the repository is on disk) -- and two services
that believe themselves master at once never share one. Nodes refuse orders of an epoch older
than the newest they have seen (:class:`~haos.services.orderbook.NodeOrders`).

A claim needs a writable repository: a node that has not synchronised its repository with a
majority (a node that booted alone, say) cannot claim, so it cannot start ordering.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from haos.cluster.dss.ccr.errors import OutcomeUnknownError
from haos.cluster.dss.ccr.model import Compare, Item, Op, Put
from haos.errors import ConflictError, UnavailableError

log = logging.getLogger(__name__)

KEY = "/haos/crim/epoch"
ATTEMPTS = 8


class Repository(Protocol):
    async def get(self, key: str) -> Item | None: ...

    async def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], *, timeout: float | None = None
    ) -> int: ...


def parse_epoch(raw: bytes) -> int:
    """The epoch stored at :data:`KEY`; UnavailableError naming what is wrong."""
    try:
        obj = json.loads(raw)
        epoch = obj["epoch"]
    except (ValueError, KeyError, TypeError) as e:
        raise UnavailableError(f"{KEY} holds no epoch: {raw[:80]!r}") from e
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise UnavailableError(f"{KEY} holds a bad epoch {epoch!r}")
    return epoch


class RepositoryEpochs:
    """:class:`~haos.services.crimd.EpochSource` on the repository (see the module docstring)."""

    def __init__(self, ccr: Repository, timeout: float = 2.0) -> None:
        self._ccr = ccr
        self._timeout = timeout

    async def claim(self, node_id: int, at_least: int) -> int:
        """A new epoch, larger than every epoch claimed before and than ``at_least``.

        UnavailableError when the repository cannot take the write (not quorate, not in sync)
        or loses every race for it.
        """
        for _ in range(ATTEMPTS):
            item = await self._ccr.get(KEY)
            current = 0 if item is None else parse_epoch(item.value)
            revision = 0 if item is None else item.mod_revision
            epoch = max(current, at_least) + 1
            body = json.dumps({"epoch": epoch, "node": node_id, "at": time.time()}).encode()
            try:
                await self._ccr.txn(
                    (Compare(KEY, revision),), (Put(KEY, body),), timeout=self._timeout
                )
            except ConflictError:
                continue  # another node claimed meanwhile: claim above it
            except OutcomeUnknownError as e:
                log.warning("epoch claim %d may or may not have been written: %s", epoch, e)
                continue  # epochs need not be contiguous: claim the next one
            return epoch
        raise UnavailableError(f"no mastership epoch claimed in {ATTEMPTS} attempts")


class CountingEpochs:
    """An epoch source for one process (tests, a single-node lab): the next number above
    both its own last claim and ``at_least``."""

    def __init__(self) -> None:
        self.last = 0

    async def claim(self, node_id: int, at_least: int) -> int:
        self.last = max(self.last, at_least) + 1
        return self.last
