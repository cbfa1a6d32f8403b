"""The CRC service's stale replicas: drops, resynchronisation and take-overs.

A standby that did not acknowledge a write in time is dropped (DROP) and is stale for every
member from that point of the order until it installed a fresh state transfer (SYNCED); until
then it can be neither read nor taken ACTIVE. The contract is in the module docstring of
``checkpoint.service``; this mixin holds the part of
:class:`~haos.cluster.dss.checkpoint.service.CheckpointService` that carries it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from haos.clock import Clock
from haos.cluster.dss.checkpoint import wire
from haos.cluster.dss.checkpoint.handle import Checkpoint
from haos.cluster.dss.checkpoint.replica import Directory, DirEvent, Drop, Replica, Role
from haos.cluster.dss.checkpoint.writes import Writes
from haos.errors import UnavailableError

log = logging.getLogger(__name__)


class Resyncing:
    """Mixed into the service, whose state it uses (declared below)."""

    directory: Directory
    _clock: Clock
    _replicas: dict[str, Replica]
    _writes: Writes
    _settle_timeout: float
    _opens_sent: int
    _opens_seen: int

    if TYPE_CHECKING:

        @property
        def node_id(self) -> int: ...

        def _deliver_dir(self, event: DirEvent) -> None: ...

        async def _send(self, msg: wire.Msg) -> None: ...

        def _post(self, msg: wire.Msg) -> None: ...

        async def _until(self, predicate: Callable[[], bool], deadline: float) -> bool: ...

        async def _restore(self, handle: Checkpoint) -> None: ...

    def _rejoined(self, replica: Replica, stale: tuple[int, ...]) -> tuple[int, ...]:
        """The holders that a drop makes take a fresh state transfer, as this holder's tracker
        must count them: only those in sync (one still waiting for its first transfer keeps
        waiting for it: that covers every write since it opened)."""
        if not stale:
            return ()
        me = self.node_id
        if me in stale:
            if not replica.sync.in_sync:
                return ()
            replica.invalidate()  # a fresh tracker, whose first mark is this one
            return tuple(sorted(self.directory.stale.get(replica.name, ())))
        return tuple(n for n in stale if n in replica.sync.synced)

    def _on_drop(self, sender: int, msg: wire.DropMsg) -> None:
        if sender == self.node_id:  # even if the directory ignores it (see Directory._drop)
            self._writes.release(msg.name, [msg.node])
        if msg.node == self.node_id and self._replicas.get(msg.name) is not None:
            log.warning(
                "CRC on node %d: checkpoint %s: node %d dropped this replica (write %d was not"
                " acknowledged in time); resynchronising",
                self.node_id,
                msg.name,
                sender,
                msg.write_id,
            )
        self._deliver_dir(DirEvent(sender, Drop(msg.name, msg.node)))

    def _stale_text(self, name: str) -> str:
        return (
            f"the replica of checkpoint {name} on node {self.node_id} is stale (a write did"
            " not wait for it) until it resynchronises"
        )

    def _fresh_now(self, name: str) -> bool:
        replica = self._replicas.get(name)
        return (
            replica is not None
            and replica.sync.in_sync
            and not self.directory.is_stale(name, self.node_id)
        )

    async def _fresh(self, name: str, deadline: float) -> None:
        """Return once this member's replica of ``name`` is in sync and not stale; raise
        UnavailableError at ``deadline``, or at once when no holder that is not stale is left
        to resynchronise from."""
        me = self.node_id

        def hopeless() -> bool:
            return self.directory.is_stale(name, me) and not self.directory.synced(name) - {me}

        def decided() -> bool:
            return name not in self._replicas or self._fresh_now(name) or hopeless()

        await self._until(decided, deadline)
        if self._fresh_now(name):
            return
        if name not in self._replicas:
            raise UnavailableError(f"this member no longer holds checkpoint {name}")
        why = (
            "no holder that is not stale is left to resynchronise from"
            if hopeless()
            else f"it did not resynchronise within {self._settle_timeout:g} s"
        )
        raise UnavailableError(f"{self._stale_text(name)}, and {why}")

    async def _promote(self, handle: Checkpoint) -> None:
        """:meth:`Checkpoint.set_role` to ACTIVE."""
        await self._take_over(handle)
        if handle.saver is not None:
            await self._restore(handle)

    async def _take_over(self, handle: Checkpoint) -> None:
        name = handle.name
        deadline = self._clock.now() + self._settle_timeout
        await self._fresh(name, deadline)
        handle.role = Role.ACTIVE
        await self._send(wire.OpenMsg(name, Role.ACTIVE))
        sent = self._opens_sent
        # Once this open is delivered, so is everything ordered before it (a drop of this
        # replica included): only then is "not stale" an answer about the order.
        try:
            if not await self._until(lambda: self._opens_seen >= sent, deadline):
                raise UnavailableError(f"checkpoint {name}: the take-over was not delivered")
            await self._fresh(name, deadline)
        except UnavailableError:
            if not handle.closed:
                handle.role = Role.STANDBY
                self._post(wire.OpenMsg(name, Role.STANDBY))
            raise
