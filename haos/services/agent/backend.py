"""What the component endpoint needs from the rest of the node: the cluster and the HM.

:class:`Backend` carries the applications' checkpoint and name requests to the cluster (the
node agent implements it over its clusterd's control socket; :class:`haoslab.testing.agent.
MemoryBackend` is the in-memory fake). :class:`AuditRegistry` hands audits that applications
register to the health monitor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from haos.config.model import AuditSpec

AuditCallback = Callable[[], Awaitable[tuple[bool, str]]]
"""Runs one audit through the application: ``(ok, detail)``."""


class Backend(Protocol):
    """Checkpoints and names, on behalf of one component each call.

    Every method may raise :class:`~haos.errors.UnavailableError` (the cluster cannot be
    reached now; retrying may succeed) or another :class:`~haos.errors.HaosError` whose
    ``code`` and message go back to the application as they are. Nothing else.
    """

    async def checkpoint_write(self, component: str, section: str, data: bytes, sync: bool) -> None:
        """Store ``data`` as ``section`` of ``component``'s checkpoint, replacing it.

        Atomic per section. With ``sync`` return only once every replica holds it (a standby
        that takes over after this returns reads this data or newer); without, once it is
        queued. A component writes only while it is primary.
        """
        ...

    async def checkpoint_read(self, component: str, section: str) -> bytes | None:
        """The last data written as ``section`` of ``component``'s checkpoint, or None."""
        ...

    async def name_bind(self, component: str, name: str, handle: str) -> None:
        """Bind ``name`` to ``handle`` cluster-wide on behalf of ``component``, replacing
        whatever it was bound to (a new primary takes its service's name over)."""
        ...

    async def name_lookup(self, name: str) -> str | None:
        """The handle ``name`` is bound to, or None."""
        ...


class AuditRegistry(Protocol):
    """Where the endpoint puts the audits applications register (the node's HM)."""

    def add(self, spec: AuditSpec, callback: AuditCallback) -> None:
        """Run ``callback`` as audit ``spec`` (kind ``callback``), replacing any earlier one.

        Raises :class:`~haos.errors.HaosError` when the audit cannot be run (say, a timeout
        not shorter than the period); the application gets that error.
        """
        ...

    def remove(self, component: str, name: str) -> None:
        """Stop running the audit (the application went away). Unknown audits are ignored."""
        ...
