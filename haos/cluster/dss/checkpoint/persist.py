"""The CRC service's persistent checkpoints: their savers and their restore.

A persistent checkpoint's writer keeps a durable copy through a
:class:`~haos.cluster.dss.checkpoint.durable.Saver` (see ``checkpoint.durable``), and one taken
ACTIVE that was never written since it was created in memory starts from that copy. The
contract is in the module docstring of ``checkpoint.service``; this mixin holds the part of
:class:`~haos.cluster.dss.checkpoint.service.CheckpointService` that carries it out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from haos.clock import Clock
from haos.cluster.dss.checkpoint.durable import DurableStore, Saver
from haos.cluster.dss.checkpoint.handle import Checkpoint
from haos.cluster.dss.checkpoint.replica import Replica
from haos.cluster.dss.messaging.group import GroupLink

log = logging.getLogger(__name__)


class Persisting:
    """Mixed into the service, whose state it uses (declared below)."""

    durable: DurableStore | None
    _clock: Clock
    _durable_wait: float
    _handles: dict[str, Checkpoint]
    _link: GroupLink

    if TYPE_CHECKING:

        @property
        def node_id(self) -> int: ...

        def _replica(self, name: str, *, fresh: bool = True) -> Replica: ...

        async def _write(
            self,
            handle: Checkpoint,
            section: str,
            data: bytes | None,
            sync: bool,
            *,
            save: bool = True,
        ) -> None: ...

    async def _restore(self, handle: Checkpoint) -> None:
        """A persistent checkpoint taken ACTIVE that was never written since it was created
        in memory (nobody in the view had it, e.g. after the whole cluster lost power; its
        standbys may have opened it empty) continues from its durable copy: the sections are
        written to every holder like any write."""
        replica = self._replica(handle.name)
        if replica.version or self.durable is None:
            return
        sections = await self.durable.load(handle.name)
        if not sections or replica.version:
            return
        log.info(
            "CRC on node %d: checkpoint %s restored from its durable copy (%d sections)",
            self.node_id,
            handle.name,
            len(sections),
        )
        for section, data in sorted(sections.items()):
            await self._write(handle, section, data, True, save=False)
        if handle.saver is not None:
            handle.saver.covered(replica.version)

    def _saver(self, name: str) -> Saver:
        assert self.durable is not None
        replica = self._replica(name, fresh=False)

        def snapshot() -> tuple[int, dict[str, bytes]]:
            current = self._replica(name, fresh=False)
            return current.version, {s: sec.data for s, sec in current.sections.items()}

        return Saver(
            self.durable,
            name,
            snapshot,
            clock=self._clock,
            spawn=self._link.spawn,
            wait=self._durable_wait,
            saved=replica.version,
        )

    def _save_later(self, name: str, version: int) -> None:
        handle = self._handles.get(name)
        if handle is not None and handle.saver is not None:
            handle.saver.want(version)
