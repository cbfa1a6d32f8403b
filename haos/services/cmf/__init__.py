"""CMF, the component management factory: runs haos components as systemd units.

The contract is :class:`UnitManager` (:mod:`haos.services.cmf.types`); the adapter over systemd's
D-Bus API is :class:`haos.services.cmf.systemd.SystemdUnits`, the in-memory fake for unit tests
is :class:`haoslab.fakes.cmf.FakeUnits`. Importing this package does not import dbus-fast.
"""

from haos.services.cmf.types import (
    UNLOADED,
    Job,
    NoSuchUnit,
    PropertyValue,
    UnitChanged,
    UnitError,
    UnitExists,
    UnitManager,
    UnitState,
    UnitWatch,
)

__all__ = [
    "UNLOADED",
    "Job",
    "NoSuchUnit",
    "PropertyValue",
    "UnitChanged",
    "UnitError",
    "UnitExists",
    "UnitManager",
    "UnitState",
    "UnitWatch",
]
