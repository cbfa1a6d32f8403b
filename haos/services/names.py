"""The names applications bind (``haos.client``'s ``name_bind`` / ``name_lookup``), on CNS.

An application's component binds a name (``demo/counter``) to a handle (an address, say)
through its node agent; the agent asks its cluster daemon, which binds it in CNS
(:mod:`haos.cluster.dss.naming`) as ``/apps/<name>``, owned by this node. Rules:

* A bind takes the name over (CNS ``rebind``): the component that became primary after a
  fail-over binds the name its predecessor held, and wins, being ordered after it.
* A dead owner loses its names: when a node leaves the cluster (it failed, its daemon
  stopped), CNS drops every binding it owned, on every node, at the same point of the agreed
  order. When a component stops or fails on a live node, its agent drops the names that
  component bound (``drop``), unless another component has taken them over since.
* Lookups are local: every node holds the whole table.

The names a component bound live in this daemon's memory: if the daemon restarts, the node
has left the group, so its bindings are gone everywhere; the agent binds them again.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from haos.cluster.dss.naming.table import Binding
from haos.errors import ConflictError, UsageError

log = logging.getLogger(__name__)

PREFIX = "/apps/"
MAX_HANDLE = 4096  # bytes: an address, a socket path, a small descriptor


class Cns(Protocol):
    async def rebind(self, name: str, handle: bytes, owner: int | None = None) -> Binding: ...

    async def unbind(self, name: str, handle: bytes | None = None) -> bool: ...

    def resolve(self, name: str) -> Binding | None: ...


def cns_name(name: str) -> str:
    """An application's name as its CNS path; UsageError for a name that is not one."""
    if not name or name.startswith("/") or ".." in name.split("/") or "//" in name:
        raise UsageError(f"bad name {name!r}: a relative path without '..'")
    return PREFIX + name.rstrip("/")


class NameDirectory:
    """One node's side of the names its components bind (see the module docstring)."""

    def __init__(self, cns: Cns, node_id: int, node_names: dict[int, str]) -> None:
        self._cns = cns
        self._node_id = node_id
        self._node_names = node_names
        self._bound: dict[str, dict[str, bytes]] = {}  # component -> CNS name -> handle

    async def bind(self, component: str, name: str, handle: str) -> dict[str, Any]:
        path, raw = cns_name(name), handle.encode()
        if len(raw) > MAX_HANDLE:
            raise UsageError(f"handle of {name!r}: {len(raw)} bytes, at most {MAX_HANDLE}")
        binding = await self._cns.rebind(path, raw, self._node_id)
        for names in self._bound.values():  # taken over from another local component
            names.pop(path, None)
        self._bound.setdefault(component, {})[path] = raw
        log.info("%s bound %s to %r", component, name, handle)
        return {"stamp": binding.stamp}

    def lookup(self, name: str) -> dict[str, Any]:
        binding = self._cns.resolve(cns_name(name))
        if binding is None:
            return {"handle": None, "node": None}
        return {
            "handle": binding.handle.decode("utf-8", "replace"),
            "node": self._node_names.get(binding.owner, str(binding.owner)),
        }

    async def drop(self, component: str) -> dict[str, Any]:
        """Unbind what ``component`` bound, where the name still holds its handle."""
        dropped = []
        for path, raw in sorted(self._bound.pop(component, {}).items()):
            try:
                if await self._cns.unbind(path, raw):
                    dropped.append(path[len(PREFIX) :])
            except ConflictError:
                pass  # bound to another handle since: a successor holds it
        if dropped:
            log.info("%s stopped: unbound %s", component, ", ".join(dropped))
        return {"dropped": dropped}
