"""The endpoint's :class:`~.backend.Backend` over the node's cluster daemon.

Checkpoints: the members of one service group share one CRC checkpoint, named after the group
(``group:<name>``), so the component that takes over reads what the old primary wrote. Every
node hosting a member holds a replica (it opens the checkpoint as a standby when the agent
starts); the node of the primary opens it active on its first write. A synchronous write
therefore returns once every member's node holds it. A group with ``persistent_checkpoint``
opens it persistent: its writes are also kept in the repository, on disk, and it is read
through an active open (the one that restores it from the repository after a whole-cluster
power loss).

Names: bound in CNS through the cluster daemon (:mod:`haos.services.names`): a bind takes
the name over, the handle is the text the application gives (e.g. ``n2:7000``), and a name
goes when the component that bound it stops or its node leaves the cluster.
"""

from __future__ import annotations

import base64
from typing import Any

from haos.cluster.crim.topology import Topology
from haos.errors import NotOpenError, UsageError
from haos.limits import MAX_CHECKPOINT_DATA, MAX_CHECKPOINT_SECTION, MiB
from haos.services.control import AsyncControlClient, ControlError

MAX_SECTION_DATA = MAX_CHECKPOINT_DATA


class ClusterBackend:
    def __init__(self, client: AsyncControlClient, topo: Topology) -> None:
        self._client = client
        self._topo = topo
        self._roles: dict[str, str] = {}  # checkpoint -> role opened with

    def checkpoint_of(self, component: str) -> str:
        group = self._topo.group_of.get(component)
        return f"group:{group}" if group else f"component:{component}"

    def persistent(self, component: str) -> bool:
        group = self._topo.group_of.get(component)
        return group is not None and self._topo.groups[group].persistent_checkpoint

    async def open(self, component: str, role: str) -> None:
        name = self.checkpoint_of(component)
        if self._roles.get(name) != role:
            persistent = self.persistent(component)
            await self._client.request("ckpt_open", name=name, role=role, persistent=persistent)
            self._roles[name] = role

    async def checkpoint_write(self, component: str, section: str, data: bytes, sync: bool) -> None:
        """UsageError naming the limit, before anything is sent, if ``data`` is larger than a
        section holds (:data:`MAX_SECTION_DATA`)."""
        if len(data) > MAX_SECTION_DATA:
            raise UsageError(
                f"checkpoint section {section!r} of {len(data)} bytes is over the limit of"
                f" {MAX_SECTION_DATA} bytes ({MAX_SECTION_DATA // MiB} MiB) of data a section"
                f" may hold ({MAX_CHECKPOINT_SECTION // MiB} MiB as stored, in base64)"
            )
        text = base64.b64encode(data).decode()
        await self._on_open(
            component, "active", "ckpt_write", section=section, data=text, sync=sync
        )

    async def checkpoint_read(self, component: str, section: str) -> bytes | None:
        # A persistent checkpoint is read through an active open: after a whole-cluster
        # power loss only the writer's open restores it from its durable copy, and the
        # member that reads it (a new primary) is the one that writes next.
        name = self.checkpoint_of(component)
        role = "active" if self.persistent(component) else self._roles.get(name, "standby")
        answer = await self._on_open(component, role, "ckpt_read", section=section)
        data = answer.get("data")
        return None if data is None else base64.b64decode(str(data))

    async def _on_open(
        self, component: str, role: str, op: str, **fields: object
    ) -> dict[str, Any]:
        """``op`` on the component's checkpoint, opened with ``role``; once more after
        opening it again if the cluster daemon restarted (it forgot what was open)."""
        name = self.checkpoint_of(component)
        for attempt in (1, 2):
            await self.open(component, role)
            try:
                return await self._client.request(op, name=name, **fields)
            except ControlError as e:
                if attempt == 2 or e.error != NotOpenError.code:
                    raise
                self._roles.pop(name, None)
        raise AssertionError("unreachable")

    async def name_bind(self, component: str, name: str, handle: str) -> None:
        """Bind ``name`` in CNS for ``component`` (haos.services.names): it takes the name
        over, and loses it when it stops or its node leaves the cluster."""
        await self._client.request("name_bind", component=component, name=name, handle=handle)

    async def name_lookup(self, name: str) -> str | None:
        answer = await self._client.request("name_lookup", name=name)
        value = answer.get("handle")
        return None if value is None else str(value)
