"""A fake of the management daemon's :class:`~haos.mgmt.source.ClusterSource`.

It answers with the recorded answers it was given (a real cluster daemon's, see
``tests/unit/test_mgmt_model.py``) and carries out a ``switchover`` of an instance the way the
availability service would show it: the instance's primaries and secondaries trade places
(its components' states too). Every operator command is recorded in ``commands``; one whose
target is in ``refuse`` is refused with that reason. The real adapter
(:class:`~haos.mgmt.source.ControlSource`) is tested against a real cluster in
``tests/scenarios/test_mgmt_rest.py``.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

from haos.errors import UnavailableError
from haos.mgmt.source import Answers
from haos.services.control import ControlError


class FakeSource:
    def __init__(
        self,
        status: dict[str, Any],
        crim: dict[str, Any],
        availability: dict[str, Any] | None,
        history: list[Any] | None = None,
        events: list[Any] | None = None,
    ) -> None:
        self.status = copy.deepcopy(status)
        self.crim = copy.deepcopy(crim)
        self.availability = copy.deepcopy(availability)
        self.history_entries = list(history or [])
        self.events = list(events or [])
        self.commands: list[tuple[str, str, float]] = []
        self.refuse: dict[str, str] = {}
        self.fail: dict[str, ControlError] = {}  # target -> what the cluster daemon answers
        self.down = False  # the cluster daemon cannot be reached

    def _up(self) -> None:
        if self.down:
            raise UnavailableError("node daemon at /run/haos/control.sock unreachable")

    async def answers(self) -> Answers:
        self._up()
        return Answers(
            copy.deepcopy(self.status), copy.deepcopy(self.crim), copy.deepcopy(self.availability)
        )

    async def history(self, limit: int) -> list[Any]:
        self._up()
        return self.history_entries[-limit:]

    async def kept_events(self, since: float | None) -> list[Any]:
        self._up()
        return [e for e in self.events if since is None or e["at"] >= since]

    async def follow_events(self, since: float | None) -> AsyncIterator[Any]:
        self._up()
        for e in await self.kept_events(since):
            yield e
        raise UnavailableError("node daemon at /run/haos/control.sock closed the stream")

    async def operator(self, action: str, target: str, timeout: float) -> dict[str, Any]:
        self._up()
        self.commands.append((action, target, timeout))
        if target in self.fail:
            raise self.fail[target]
        if target in self.refuse:
            return {"ok": True, "refused": True, "reason": self.refuse[target]}
        if action == "switchover" and target in self.crim["instances"]:
            self._swap(target)
        return {"ok": True, "refused": False, "reason": f"{action} {target}"}

    def _swap(self, si: str) -> None:
        info = self.crim["instances"][si]
        info["primary"], info["secondary"] = info["secondary"], info["primary"]
        comps = self.crim["crim"]["components"]
        for comp in info["primary"]:
            comps[comp]["state"] = "primary"
        for comp in info["secondary"]:
            comps[comp]["state"] = "secondary"
        self.crim["seq"] += 1
