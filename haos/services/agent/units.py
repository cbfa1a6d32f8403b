"""Starting an installed service (``StartUnit``) over D-Bus: what a ``systemd`` component needs
beyond the CMF's :class:`~haos.services.cmf.types.UnitManager` contract.

:class:`SystemdServiceUnits` is the D-Bus adapter with it (a
:class:`~haos.services.agent.drivers.ServiceUnits`); :class:`haoslab.testing.agentfakes.
FakeServiceUnits` is the fake. Importing this module imports dbus-fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from haos.services.cmf.systemd import MANAGER, MANAGER_PATH, SystemdUnits
from haos.services.cmf.types import Job


class SystemdServiceUnits(SystemdUnits):
    """:class:`SystemdUnits` with :meth:`start` (``StartUnit`` in mode ``replace``)."""

    @classmethod
    async def connect(
        cls, address: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> SystemdServiceUnits:
        """As :meth:`SystemdUnits.connect`."""
        units = await super().connect(address, clock)
        assert isinstance(units, SystemdServiceUnits)
        return units

    async def start(self, name: str) -> Job:
        """Queue a start job for the installed unit ``name``; NoSuchUnit if there is none."""
        body = await self.systemd.call(MANAGER_PATH, MANAGER, "StartUnit", "ss", [name, "replace"])
        return Job(name, str(body[0]))

    async def reload(self) -> None:
        """``Reload`` (``systemctl daemon-reload``): systemd reads unit files and drop-ins
        again; returns once it has."""
        await self.systemd.call(MANAGER_PATH, MANAGER, "Reload")
