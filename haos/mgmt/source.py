"""Where the managed objects come from: the node's cluster daemon, over its control socket.

:class:`ClusterSource` is the small contract the management daemon needs; :class:`ControlSource`
is its one adapter, which sends the very requests ``haosctl`` sends (``status``, ``crim``,
``availability``, ``history``, ``events`` with ``cluster``, ``operator``) and hands back the
answers unchanged: the view is built by :mod:`haos.mgmt.build`, not here.

Errors: :class:`~haos.errors.UnavailableError` when the daemon (or, for ``crim`` and
``availability``, the active availability service) cannot be reached;
:class:`~haos.services.control.ControlError` when it answers with an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from haos.errors import HaosError
from haos.services.control import AsyncControlClient, ControlClient, ControlError

log = logging.getLogger(__name__)

ANSWER_MARGIN = 5.0  # s beyond an operator command's own timeout


@dataclass(frozen=True)
class Answers:
    """The answers a snapshot is built from (``availability`` None: it could not be had)."""

    status: dict[str, Any]
    crim: dict[str, Any]
    availability: dict[str, Any] | None


class ClusterSource(Protocol):
    async def answers(self) -> Answers:
        """The node's status, the availability service's state and its report, now."""
        ...

    async def history(self, limit: int) -> list[Any]:
        """The node's last ``limit`` entries of the availability service's history."""
        ...

    async def kept_events(self, since: float | None) -> list[Any]:
        """The cluster event records the node keeps (from ``since`` on)."""
        ...

    def follow_events(self, since: float | None) -> AsyncIterator[Any]:
        """Event records as they come (those kept from ``since`` on first); ends with
        UnavailableError when the daemon goes away."""
        ...

    async def operator(self, action: str, target: str, timeout: float) -> dict[str, Any]:
        """An operator's intent, carried out by the availability service: its answer
        (``refused``, ``reason``)."""
        ...


class ControlSource:
    """:class:`ClusterSource` over the node daemon's control socket."""

    def __init__(self, client: AsyncControlClient, blocking: ControlClient) -> None:
        self._client = client
        self._blocking = blocking  # for a stream that ends (the records kept)

    async def answers(self) -> Answers:
        status = await self._client.request("status")
        crim = await self._client.request("crim")
        try:
            report: dict[str, Any] | None = await self._client.request("availability")
        except HaosError as e:
            log.warning("no availability report: %s", e)
            report = None
        return Answers(status, crim, report)

    async def history(self, limit: int) -> list[Any]:
        answer = await self._client.request("history", limit=limit)
        entries = answer.get("history")
        return entries if isinstance(entries, list) else [answer]

    async def kept_events(self, since: float | None) -> list[Any]:
        def read() -> list[Any]:
            items = list(self._blocking.stream("events", cluster=True, since=since, follow=False))
            first = items[0] if items else {}
            if first.get("ok") is not True:
                raise ControlError(str(first.get("error", "bad-answer")), str(first.get("message")))
            return items[1:]

        return await asyncio.to_thread(read)

    async def follow_events(self, since: float | None) -> AsyncIterator[Any]:
        async for item in self._client.stream("events", cluster=True, since=since, follow=True):
            yield item

    async def operator(self, action: str, target: str, timeout: float) -> dict[str, Any]:
        # the answer comes once the intent was carried out (or refused), within ``timeout``
        client = AsyncControlClient(self._client.path, timeout=timeout + ANSWER_MARGIN)
        return await client.request("operator", action=action, target=target, timeout=timeout)
