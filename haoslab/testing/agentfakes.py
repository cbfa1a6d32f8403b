"""In-memory fakes for the node agent's component side: backend, audit registry, service units."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from haos.config.model import AuditSpec
from haos.errors import HaosError, UnavailableError
from haos.services.agent.backend import AuditCallback
from haos.services.cmf.types import Job, NoSuchUnit
from haoslab.fakes.cmf import FakeUnits


class MemoryBackend:
    """:class:`~haos.services.agent.backend.Backend` in memory.

    ``checkpoints`` maps (component, section) to data, ``names`` name to (handle, component);
    ``writes`` records each write as (component, section, data, sync). Set ``fail`` to make
    every call raise it (the cluster unreachable, say) until it is cleared. While
    ``names_gate`` is set to an unset event, name binds wait for it (a slow repository).
    """

    def __init__(self) -> None:
        self.checkpoints: dict[tuple[str, str], bytes] = {}
        self.names: dict[str, tuple[str, str]] = {}
        self.writes: list[tuple[str, str, bytes, bool]] = []
        self.fail: HaosError | None = None
        self.names_gate: asyncio.Event | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def checkpoint_write(self, component: str, section: str, data: bytes, sync: bool) -> None:
        self._check()
        self.writes.append((component, section, data, sync))
        self.checkpoints[(component, section)] = data

    async def checkpoint_read(self, component: str, section: str) -> bytes | None:
        self._check()
        return self.checkpoints.get((component, section))

    async def name_bind(self, component: str, name: str, handle: str) -> None:
        self._check()
        if self.names_gate is not None:
            await self.names_gate.wait()
        self.names[name] = (handle, component)

    async def name_lookup(self, name: str) -> str | None:
        self._check()
        bound = self.names.get(name)
        return None if bound is None else bound[0]


class MemoryAudits:
    """:class:`~haos.services.agent.backend.AuditRegistry` that keeps what it is given."""

    def __init__(self) -> None:
        self.audits: dict[tuple[str, str], tuple[AuditSpec, AuditCallback]] = {}

    def add(self, spec: AuditSpec, callback: AuditCallback) -> None:
        self.audits[(spec.component, spec.name)] = (spec, callback)

    def remove(self, component: str, name: str) -> None:
        self.audits.pop((component, name), None)

    async def run(self, component: str, name: str) -> tuple[bool, str]:
        """One run of the audit, as the HM's callback probe would do it."""
        _, callback = self.audits[(component, name)]
        return await callback()


class FakeServiceUnits(FakeUnits):
    """:class:`FakeUnits` plus installed (non-transient) services that :meth:`start` starts.

    A started service behaves like a transient one of the same name; :meth:`start` of a unit
    that is not installed raises :class:`NoSuchUnit` as systemd does.
    """

    def __init__(self, installed: Iterable[str] = ()) -> None:
        super().__init__()
        self.installed = set(installed)
        self.unavailable = False

    async def start(self, name: str) -> Job:
        if self.unavailable:
            raise UnavailableError("StartUnit: systemd is not reachable")
        if name not in self.installed:
            raise NoSuchUnit(f"StartUnit: Unit {name} not found.")
        state = await self.active_state(name)
        if state == "failed":
            await self.reset_failed(name)
        if state in ("active", "activating"):
            return Job(name, "/org/freedesktop/systemd1/job/0")
        return await self.start_transient(name, ("/usr/sbin/" + name.removesuffix(".service"),))
