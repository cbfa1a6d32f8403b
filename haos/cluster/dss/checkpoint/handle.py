"""A member's handle on a checkpoint it opened (:meth:`CheckpointService.open`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from haos.cluster.dss.checkpoint import wire
from haos.cluster.dss.checkpoint.durable import Saver
from haos.cluster.dss.checkpoint.replica import Replica, Role
from haos.errors import UsageError
from haos.limits import MAX_CHECKPOINT_SECTION, MiB

if TYPE_CHECKING:
    from haos.cluster.dss.checkpoint.service import CheckpointService


def check_size(name: str, section: str, size: int) -> None:
    """UsageError naming the limit if a section of ``size`` bytes is over it."""
    if size > MAX_CHECKPOINT_SECTION:
        raise UsageError(
            f"checkpoint {name}: section {section} of {size} bytes is over the limit of"
            f" {MAX_CHECKPOINT_SECTION} bytes ({MAX_CHECKPOINT_SECTION // MiB} MiB) a section"
            " may hold"
        )


class Checkpoint:
    """See the module docstring of ``checkpoint.service`` for the contract."""

    def __init__(
        self, service: CheckpointService, name: str, role: Role, saver: Saver | None = None
    ) -> None:
        self._service = service
        self.name = name
        self.role = role
        self.closed = False
        self.saver = saver  # set for a persistent checkpoint

    @property
    def persistent(self) -> bool:
        return self.saver is not None

    @property
    def durable_behind(self) -> bool:
        """Persistent, and a synchronous write was acknowledged without a durable save
        covering it (the store stalled or failed) that no save has covered yet: until then a
        whole-cluster power loss would lose it."""
        return self.saver is not None and self.saver.behind

    @property
    def durable_unsaved(self) -> int:
        """How many writes this member applied that the durable copy does not hold yet (0 if
        not persistent)."""
        if self.saver is None or self.closed:
            return 0
        replica = self._service._replicas.get(self.name)
        return 0 if replica is None else max(0, replica.version - self.saver.saved)

    @property
    def synced(self) -> bool:
        """This member's replica holds the checkpoint's state: it is in sync and not stale
        (dropped by a write that did not wait for it, and not yet resynchronised)."""
        if self.closed:
            return False
        return self._service._fresh_now(self.name)

    def read(self, section: str) -> bytes | None:
        """The section's data as of the last delivered write; None if it has none.
        UnavailableError while this replica is stale."""
        return self._replica().read(section)

    def sections(self) -> dict[str, bytes]:
        return {name: s.data for name, s in sorted(self._replica().sections.items())}

    @property
    def replicas(self) -> tuple[int, ...]:
        """The standbys that synchronous writes wait for (as of the last delivered change):
        stale ones are not among them."""
        return tuple(sorted(self._service.directory.standbys(self.name)))

    async def write(self, section: str, data: bytes, *, sync: bool = True) -> None:
        """Replace the section's data (see the service's contract). UsageError, before
        anything is sent, if ``data`` is over :data:`~haos.limits.MAX_CHECKPOINT_SECTION`."""
        wire.validate_name(section, "section")
        check_size(self.name, section, len(data))
        self._replica()
        await self._service._write(self, section, data, sync)

    async def delete(self, section: str, *, sync: bool = True) -> None:
        wire.validate_name(section, "section")
        self._replica()
        await self._service._write(self, section, None, sync)

    async def set_role(self, role: Role) -> None:
        """Change this member's role. To ACTIVE (a take-over): returns once this member's
        replica holds every write ordered before the change and is not stale, waiting (at
        most the service's settle timeout) for a stale one to resynchronise; UnavailableError
        if it cannot (then the role stays STANDBY). To STANDBY: returns once sent."""
        self._replica(fresh=False)
        if role is Role.ACTIVE:
            await self._service._promote(self)
            return
        self.role = role
        await self._service._send(wire.OpenMsg(self.name, role))

    async def close(self, *, forget: bool = False) -> None:
        """Stop holding the checkpoint; its writes still waiting fail. Idempotent. With
        ``forget``, a persistent checkpoint's durable copy is deleted too."""
        if not self.closed:
            self.closed = True
            self._service._handles.pop(self.name, None)
            await self._service._send(wire.CloseMsg(self.name))
        if forget and self._service.durable is not None:
            await self._service.durable.delete(self.name)

    def _replica(self, *, fresh: bool = True) -> Replica:
        if self.closed:
            raise UsageError(f"checkpoint {self.name} is closed")
        return self._service._replica(self.name, fresh=fresh)
