"""The agent's :class:`~.agent.ClusterLink` over the node's control socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from haos.errors import UnavailableError
from haos.services.control import AsyncControlClient
from haos.services.orders import RoleOrder, order_to_json


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

    async def running(self, component: str, state: str, at: float, detail: str) -> None:
        await self._client.request(
            "running", component=component, state=state, at=at, detail=detail
        )

    async def applied(self, order: RoleOrder, epoch: int | None) -> None:
        fields: dict[str, Any] = {"order": order_to_json(order)}
        if epoch is not None:
            fields["epoch"] = epoch
        await self._client.request("applied", **fields)
