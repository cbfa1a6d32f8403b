"""The node-side health monitor (HM) runner: runs audits, reports, pets the systemd watchdog.

The schedule is decided by the pure :class:`~haos.cluster.hm.policy.AuditMonitor`; this
package is the thin asyncio layer around it: :mod:`.runner` starts audits through
:mod:`.probes` and hands the resulting error reports on; :mod:`.thread` runs the runner on a
thread of its own, its rounds the node agent's proof that the HM is not hung (a liveness
check of :class:`haos.services.notify.Notifier`). :mod:`.watchdog` holds the sd_notify sender
and a petter that withholds while an audit is overdue (not used by the daemons: the agent's
gate counts an overdue audit as an error report, not as a hung HM).
"""

from haos.clock import Clock, MonotonicClock
from haos.services.hm.probes import CallbackProbe, CommandProbe, HttpProbe, Probe
from haos.services.hm.runner import AuditRunner
from haos.services.hm.thread import HmThread
from haos.services.hm.watchdog import SdNotifier, SystemdWatchdog, WatchdogPetter

__all__ = [
    "AuditRunner",
    "CallbackProbe",
    "Clock",
    "CommandProbe",
    "HmThread",
    "HttpProbe",
    "MonotonicClock",
    "Probe",
    "SdNotifier",
    "SystemdWatchdog",
    "WatchdogPetter",
]
