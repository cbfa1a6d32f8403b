"""A writer's synchronous writes in flight: their acknowledgements, drops and deadlines.

A synchronous write waits for the standbys fixed where it sits in the order (see
``replica.AckTracker``). A standby that has not acknowledged it within ``drop_after`` of the
write's delivery to the writer is *dropped*: the writer multicasts a DROP naming it, once per
standby however many writes wait for it, and every write waiting for that standby completes
when the DROP comes back through the order (every member then holds the standby stale, see
``replica.Directory``). The write fails with UnavailableError only if it, or the DROP, is not
delivered within ``ack_timeout`` (the group itself is stuck).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from haos.clock import Clock
from haos.cluster.dss.checkpoint.replica import AckTracker
from haos.errors import HaosError, UnavailableError

log = logging.getLogger(__name__)

Until = Callable[[Callable[[], bool], float], Awaitable[bool]]  # (predicate, deadline) -> held
PostDrop = Callable[[int, int, str], None]  # (write id, node, checkpoint): multicast a DROP
_YIELDS = 2  # loop turns: one runs the transport's hand-overs, the next the receive loop


@dataclass(eq=False)
class Pending:
    """One synchronous write of this member, from its send until it returns."""

    name: str
    future: asyncio.Future[None]
    delivered_at: float | None = None  # when the writer's own copy applied it
    version: int = 0  # the writer's replica version with it applied
    persist: bool = False  # a durable save covering it is asked for once it is delivered


class Writes:
    """See the module docstring. ``until`` waits for a predicate that delivered messages
    change, on ``clock``, up to a deadline."""

    def __init__(
        self,
        node_id: int,
        clock: Clock,
        until: Until,
        post_drop: PostDrop,
        *,
        drop_after: float,
        ack_timeout: float,
    ) -> None:
        self._me = node_id
        self._clock = clock
        self._until = until
        self._post_drop = post_drop
        self.drop_after = drop_after
        self.ack_timeout = ack_timeout
        self.pending: dict[int, Pending] = {}
        self.acks = AckTracker()
        self._dropping: set[tuple[str, int]] = set()  # DROPs sent, not yet delivered
        self.late_acks = 0  # acks for writes no longer waited for (benign)

    def start(self, write_id: int, name: str) -> Pending:
        pending = Pending(name, asyncio.get_running_loop().create_future())
        self.pending[write_id] = pending
        return pending

    def finish(self, write_id: int) -> None:
        del self.pending[write_id]
        self.acks.forget(write_id)

    def delivered(self, write_id: int, standbys: Iterable[int]) -> Pending | None:
        """This member's own write came back through the order: wait for ``standbys``."""
        pending = self.pending.get(write_id)
        if pending is not None:
            pending.delivered_at = self._clock.now()
            if self.acks.expect(write_id, pending.name, standbys):
                self._complete(write_id)
        return pending

    def acked(self, write_id: int, node: int) -> bool:
        """``node`` acknowledged; True if that completed the write."""
        if self.acks.ack(write_id, node):
            self._complete(write_id)
            return True
        if write_id not in self.acks:
            self.late_acks += 1
        return False

    def release(self, name: str, nodes: Iterable[int]) -> None:
        """``nodes`` no longer hold ``name``, or are stale: writes no longer wait for them."""
        nodes = tuple(nodes)
        for node in nodes:
            self._dropping.discard((name, node))
        for write_id in self.acks.left(name, nodes):
            self._complete(write_id)

    def fail_all(self, reason: HaosError) -> None:
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(reason)

    async def wait(self, write_id: int, what: str) -> None:
        """Wait until the write is delivered here and acknowledged by (or dropped from) every
        standby; raise UnavailableError at ``ack_timeout``."""
        pending = self.pending[write_id]
        deadline = self._clock.now() + self.ack_timeout
        future = pending.future
        if not await self._until(
            lambda: pending.delivered_at is not None or future.done(), deadline
        ):
            raise UnavailableError(
                f"synchronous write of {what}: not delivered within {self.ack_timeout:g} s"
            )
        if not future.done() and pending.delivered_at is not None:
            bound = min(pending.delivered_at + self.drop_after, deadline)
            if not await self._until(future.done, bound):
                # First let acknowledgements already queued here be handled (this member's
                # own loop may have been the slow one), then drop whoever is still silent.
                for _ in range(_YIELDS):
                    await asyncio.sleep(0)
                if not future.done():
                    self._drop_silent(write_id, pending)
            if not await self._until(future.done, deadline):
                silent = sorted(self.acks.waiting(write_id))
                raise UnavailableError(
                    f"synchronous write of {what}: no acknowledgement from node(s) {silent}"
                    f" within {self.ack_timeout:g} s"
                )
        future.result()  # raises why the service stopped, if it did

    def _drop_silent(self, write_id: int, pending: Pending) -> None:
        """Multicast a DROP of each standby that has not acknowledged the write yet."""
        assert pending.delivered_at is not None
        waited = self._clock.now() - pending.delivered_at
        for node in sorted(self.acks.waiting(write_id)):
            if (pending.name, node) in self._dropping:
                continue  # dropped for an earlier write already: one DROP is enough
            self._dropping.add((pending.name, node))
            log.warning(
                "CRC on node %d: checkpoint %s: the replica on node %d did not acknowledge"
                " write %d within %.0f ms: dropped from the replica set until it"
                " resynchronises",
                self._me,
                pending.name,
                node,
                write_id,
                waited * 1000.0,
            )
            self._post_drop(write_id, node, pending.name)

    def _complete(self, write_id: int) -> None:
        pending = self.pending.get(write_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(None)
