"""The agent's :class:`~.agent.ClusterLink` over the node's control socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from haos.errors import UnavailableError
from haos.services.control import AsyncControlClient


class ControlLink:
    def __init__(self, client: AsyncControlClient) -> None:
        self._client = client

    async def orders(self) -> AsyncIterator[dict[str, Any]]:
        async for item in self._client.stream("orders"):
            yield item

    async def report(self, report: dict[str, Any]) -> None:
        await self._client.request("report", report=report)

    async def event(self, kind: str, component: str) -> None:
        answer = await self._client.request("event", kind=kind, component=component)
        if answer.get("refused"):
            # e.g. the node is not a member yet: the CRIM will take it once it is
            raise UnavailableError(f"{kind} {component} refused: {answer.get('reason')}")

    async def applied(self, component: str, state: str) -> None:
        await self._client.request("applied", component=component, state=state)
