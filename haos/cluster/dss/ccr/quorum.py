"""Where the CCR learns whether its partition is quorate: the contract, votequorum, a fake.

The verdict is level-triggered: :meth:`QuorumSource.wait_changed` returns as soon as the
verdict differs from the one the caller last saw, so a change between two calls is never
missed (a change and its reversal in between may be, which is harmless: the CCR acts on the
current verdict). How the CCR keeps members agreeing on a verdict that reaches each of them at
a different moment is in :mod:`.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from haos.cluster.dss.corosync.quorum import QuorumChanged, VoteQuorum

log = logging.getLogger(__name__)


class QuorumSource(Protocol):
    def quorate(self) -> bool:
        """The current verdict for this node's partition."""
        ...

    async def wait_changed(self, seen: bool) -> bool:
        """Wait until the verdict is not ``seen``; return it."""
        ...


class _Verdict:
    """A boolean with level-triggered waiting; what both sources below are built on."""

    def __init__(self, value: bool) -> None:
        self._value = value
        self._changed = asyncio.Event()

    def quorate(self) -> bool:
        return self._value

    async def wait_changed(self, seen: bool) -> bool:
        while self._value == seen:
            await self._changed.wait()
        return self._value

    def _set(self, value: bool) -> None:
        if value != self._value:
            self._value = value
            # Wake the current waiters; later ones wait on a fresh event.
            self._changed.set()
            self._changed = asyncio.Event()


class ManualQuorum(_Verdict):
    """A :class:`QuorumSource` a test sets by hand (e.g. to what votequorum would say)."""

    def __init__(self, quorate: bool = True) -> None:
        super().__init__(quorate)

    def set(self, quorate: bool) -> None:
        """Change the verdict (call from the event loop)."""
        self._set(quorate)


class VoteQuorumSource(_Verdict):
    """corosync votequorum's verdict for this node. Open with :meth:`open`.

    When the votequorum connection breaks (corosync stopped), the verdict becomes and stays
    False: a node that cannot ask is not quorate.
    """

    def __init__(self, vq: VoteQuorum, quorate: bool) -> None:
        super().__init__(quorate)
        self._vq = vq

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls) -> AsyncIterator[VoteQuorumSource]:
        """Connect to votequorum and follow its verdict until the block exits."""
        async with VoteQuorum.open() as vq:
            self = cls(vq, (await vq.info()).quorate)
            failed: Exception | None = None
            async with asyncio.TaskGroup() as tg:
                follower = tg.create_task(self._follow())
                try:
                    yield self
                except Exception as e:  # re-raised as itself, not inside an ExceptionGroup
                    failed = e
                finally:
                    follower.cancel()
            if failed is not None:
                raise failed

    async def _follow(self) -> None:
        try:
            async for event in self._vq.events:
                if isinstance(event, QuorumChanged):
                    self._set(event.quorate)
        except Exception as e:  # the connection broke: corosync is gone
            log.warning("votequorum connection lost, not quorate: %s", e)
        self._set(False)
