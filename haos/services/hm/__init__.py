"""The node-side health monitor (HM) runner: runs audits, reports, pets the systemd watchdog.

The schedule is decided by the pure :class:`~haos.cluster.hm.policy.AuditMonitor`; this
package is the thin asyncio layer around it: :mod:`.runner` starts audits through
:mod:`.probes` and hands the resulting error reports on, :mod:`.watchdog` pets the systemd
watchdog only after a completed daemon iteration with no overdue audit.
"""

from haos.clock import Clock, MonotonicClock
from haos.services.hm.probes import CallbackProbe, CommandProbe, HttpProbe, Probe
from haos.services.hm.runner import AuditRunner
from haos.services.hm.watchdog import SdNotifier, SystemdWatchdog, WatchdogPetter

__all__ = [
    "AuditRunner",
    "CallbackProbe",
    "Clock",
    "CommandProbe",
    "HttpProbe",
    "MonotonicClock",
    "Probe",
    "SdNotifier",
    "SystemdWatchdog",
    "WatchdogPetter",
]
