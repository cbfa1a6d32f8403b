"""Following one systemd unit's state for a driver: the last ActiveState, and waits on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from haos.services.cmf.types import UnitChanged, UnitError, UnitManager

log = logging.getLogger(__name__)

DOWN = frozenset({"inactive", "failed", "deactivating"})
UP = frozenset({"active", "reloading"})


class UnitTracker:
    """Watches unit ``name``; ``on_change(old_active_state, change)`` runs for each change.

    :meth:`run` is the watch loop (a task of the driver's group). A watch the unit manager
    refuses (:class:`UnitError`) is tried again after ``retry`` s, and :attr:`trouble` says
    why it is not live: one unit never ends the group that the node's other components run
    in. A lost connection (UnavailableError) does end it: every watch shares the connection,
    and the agent's service manager restarts the agent on a new one. :attr:`generation`
    counts the states seen, so a waiter can ask for a state reached after some point (after
    its own request).
    """

    def __init__(
        self,
        units: UnitManager,
        name: str,
        on_change: Callable[[str, UnitChanged], None],
        *,
        retry: float = 1.0,
    ) -> None:
        self.name = name
        self.active_state = "inactive"
        self.last: UnitChanged | None = None
        self.generation = 0
        self.live = asyncio.Event()
        self.trouble = ""
        self._units = units
        self._on_change = on_change
        self._retry = retry
        self._next = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with self._units.watch([self.name]) as changes:
                    self._update(await self._units.active_state(self.name))
                    self.trouble = ""
                    self.live.set()
                    async for change in changes:
                        old = self.active_state
                        self.last = change
                        self._update(change.active_state)
                        self._on_change(old, change)
            except UnitError as e:
                # This unit's driver fails its waits for the watch; the other components,
                # watched on the same connection, go on.
                self.live.clear()
                self.trouble = str(e)
                log.error("watch of %s refused: %s; again in %g s", self.name, e, self._retry)
            await asyncio.sleep(self._retry)  # a backoff, not a synchronisation

    async def wait_live(self, timeout: float) -> None:
        """Return once the watch is subscribed (no change can be missed from then on)."""
        async with asyncio.timeout(timeout):
            await self.live.wait()

    async def wait(self, states: frozenset[str], timeout: float, after: int = -1) -> str:
        """The ActiveState once it is one of ``states`` (seen after generation ``after``).

        Raises TimeoutError after ``timeout`` s.
        """
        async with asyncio.timeout(timeout):
            while not (self.generation > after and self.active_state in states):
                await self._next.wait()
        return self.active_state

    def describe(self) -> str:
        """The last state in words: ``failed/failed (signal)``."""
        if self.last is None or self.last.active_state != self.active_state:
            return self.active_state
        return f"{self.last.active_state}/{self.last.sub_state} (result {self.last.result})"

    def _update(self, active_state: str) -> None:
        self.active_state = active_state
        self.generation += 1
        self._next.set()
        self._next = asyncio.Event()
