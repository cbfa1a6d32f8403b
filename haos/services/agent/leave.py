"""The agent's part in a clean stop of its node (see :mod:`haos.services.leaving`).

* :class:`ShutdownOrderedUnits`: every component's transient unit is ordered ``Before=`` the
  agent and ``After=`` the cluster daemon. At shutdown systemd stops units in the reverse
  order of their start order, so a component stops only after the agent has stopped (by then
  its primaries are switched over) and before the cluster daemon stops (which announces the
  leave only once nothing runs). Without it systemd would stop every component at once, the
  primary among them, before anything was switched over.
* :func:`order_installed_units`: the same order for the installed units of ``systemd``
  components, through runtime drop-ins.
* :func:`stop_on_sigterm`: on SIGTERM while the system shuts down, ask the cluster daemon to
  prepare the leave (it has the node's primaries switched over, and returns once none is
  left or its bound passed) while the agent goes on carrying out the demotions; then end.
  On a SIGTERM outside a shutdown (``systemctl restart haos-agentd``) the agent just ends:
  its components run on, as over any restart of the agent.

Importing this module imports dbus-fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from haos.errors import HaosError
from haos.services.agent.units import SystemdServiceUnits
from haos.services.cmf.types import Job, PropertyValue
from haos.services.leaving import Stopped

log = logging.getLogger(__name__)

AGENT, CLUSTER = "haos-agentd.service", "haos-clusterd.service"
# Bound on the switchover before the agent ends anyway: well inside its TimeoutStopSec.
PREPARE_WITHIN = 10.0


class ShutdownOrderedUnits(SystemdServiceUnits):
    """:class:`SystemdServiceUnits` whose transient units stop between the haos daemons."""

    async def start_transient(
        self, name: str, argv: Sequence[str], properties: Mapping[str, PropertyValue] | None = None
    ) -> Job:
        return await super().start_transient(name, argv, ordered(properties or {}))


def ordered(properties: Mapping[str, PropertyValue]) -> dict[str, PropertyValue]:
    """``properties`` with the agent added to ``Before=`` and the cluster daemon to
    ``After=``; ValueError if either is given as something other than unit names."""
    out = dict(properties)
    for key, unit in (("Before", AGENT), ("After", CLUSTER)):
        given = properties.get(key, ())
        if isinstance(given, bool | int):
            raise ValueError(f"{key}= must name units, not {given!r}")
        listed = [given] if isinstance(given, str) else list(given)
        out[key] = listed if unit in listed else [*listed, unit]
    return out


async def stop_on_sigterm(
    system_state: Callable[[], Awaitable[str]],
    prepare: Callable[[float], Awaitable[dict[str, Any]]],
    signalled: asyncio.Event | None = None,
) -> None:
    """Wait for SIGTERM (or ``signalled``, for tests); if ``system_state()`` says the system
    is stopping, ``prepare(PREPARE_WITHIN)`` the leave; then raise :class:`Stopped`."""
    stop = signalled if signalled is not None else asyncio.Event()
    if signalled is None:
        with contextlib.suppress(RuntimeError, ValueError):  # only the main thread can
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    try:
        state = await system_state()
    except HaosError as e:
        state = f"unknown ({e})"
    if state != "stopping":
        raise Stopped(f"agent stopped (system {state}): components run on")
    try:
        answer = await prepare(PREPARE_WITHIN)
    except HaosError as e:
        raise Stopped(f"node shutting down; leave not prepared: {e}") from None
    log.info("node shutting down: %s", answer)
    raise Stopped(f"node shutting down; leave prepared: {answer.get('prepared')}")


DROPIN_NAME = "50-haos-shutdown-order.conf"
DROPIN = f"""\
# Written by {AGENT} at its start: at shutdown this component stops after the agent (which has
# had it switched over by then) and before the cluster daemon.
[Unit]
Before={AGENT}
After={CLUSTER}
"""


def order_installed_units(units: Sequence[str], directory: Path) -> bool:
    """Give each installed unit in ``units`` (``systemd`` components) the order the transient
    ones get from :func:`ordered`, through a runtime drop-in in ``directory``
    (``/run/systemd/system``), and remove that drop-in from units no longer listed. True if
    anything changed: systemd must then reload its units."""
    changed = False
    wanted = {directory / f"{unit}.d" / DROPIN_NAME for unit in units}
    for path in sorted(wanted):
        if path.is_file() and path.read_text() == DROPIN:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".tmp")
        staged.write_text(DROPIN)
        staged.replace(path)
        changed = True
    for stale in directory.glob(f"*.d/{DROPIN_NAME}"):
        if stale not in wanted:
            stale.unlink()
            with contextlib.suppress(OSError):
                stale.parent.rmdir()  # only if it held nothing else
            changed = True
    return changed
