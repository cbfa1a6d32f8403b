"""The systemd watchdog of an HA daemon, petted only when the daemon and its audits are sound.

systemd restarts a service with ``WatchdogSec=`` that stops sending ``WATCHDOG=1``. The
safety rule: :class:`WatchdogPetter` pets only after the daemon's own loop completed an
iteration (the call is that report) *and* no audit of the HM is overdue at that moment
(:meth:`~haos.cluster.hm.policy.AuditMonitor.healthy_this_round`). Why it did or did not pet
is kept as one line for ``STATUS=``.

:class:`SystemdWatchdog` adapts sd_notify to the node's
:class:`~haos.cluster.fencing.watchdog.Watchdog` protocol; :class:`SdNotifier` is the tiny
datagram sender behind it (``$NOTIFY_SOCKET``, abstract ``@`` names included).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from haos.cluster.fencing.watchdog import Watchdog
from haos.cluster.hm.policy import AuditMonitor
from haos.errors import UnavailableError

log = logging.getLogger(__name__)


class SdNotifier:
    """Sends sd_notify messages to ``address`` (the value of ``$NOTIFY_SOCKET``).

    With no address (not started by systemd) every send is a no-op. Sends never block: a
    full socket queue is an UnavailableError, like any other socket error.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SdNotifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> None:
        """Send ``KEY=value`` lines as one datagram."""
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, socket.MSG_DONTWAIT, target)
        except OSError as e:
            raise UnavailableError(f"cannot notify systemd at {self.address}: {e}") from e

    def status(self, text: str) -> None:
        self.send("STATUS=" + text.replace("\n", " "))

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class SystemdWatchdog:
    """systemd's service watchdog as a :class:`~haos.cluster.fencing.watchdog.Watchdog`.

    systemd arms it when the unit starts (``WatchdogSec=``) and stops it with the unit, so
    :meth:`arm` and :meth:`disarm` send nothing; :meth:`fire` asks for the watchdog action
    at once (``WATCHDOG=trigger``).
    """

    def __init__(self, notifier: SdNotifier) -> None:
        self._notifier = notifier

    def arm(self) -> None:
        pass

    def pet(self) -> None:
        self._notifier.send("WATCHDOG=1")

    def disarm(self) -> None:
        pass

    def fire(self) -> None:
        self._notifier.send("WATCHDOG=trigger")


@dataclass(frozen=True)
class PetDecision:
    pet: bool
    reason: str


def decide(healthy: bool, overdue: Sequence[tuple[str, str]], audits: int) -> PetDecision:
    """Pet when a daemon iteration just completed (the caller) and the HM round is healthy.

    ``overdue`` names the audits that make it unhealthy, for the reason line.
    """
    if not healthy:
        names = ", ".join(f"{c}/{n}" for c, n in overdue[:5])
        more = f" and {len(overdue) - 5} more" if len(overdue) > 5 else ""
        return PetDecision(False, f"watchdog withheld: audit overdue: {names}{more}")
    return PetDecision(True, f"healthy: loop ran, {audits} audit(s) in time")


class _Now(Protocol):
    def now(self) -> float: ...


class WatchdogPetter:
    """Pets ``watchdog`` for a daemon whose health includes the HM's audits.

    Call :meth:`iteration_completed` at the end of every iteration of the daemon's main
    loop, and nowhere else: a loop that hangs stops the petting by itself.
    """

    def __init__(
        self,
        monitor: AuditMonitor,
        watchdog: Watchdog,
        clock: _Now,
        status: Callable[[str], None] | None = None,
    ) -> None:
        """``status`` receives the reason line whenever it changes (e.g. for ``STATUS=``)."""
        self._monitor = monitor
        self._watchdog = watchdog
        self._clock = clock
        self._status = status
        self.reason = "watchdog not petted yet: no iteration completed"
        self.pets = 0

    def iteration_completed(self) -> PetDecision:
        """Pet now if no audit is overdue; returns what was done and why."""
        now = self._clock.now()
        healthy = self._monitor.healthy_this_round(now)
        overdue = [] if healthy else self._monitor.overdue(now)
        decision = decide(healthy, overdue, len(self._monitor.status()))
        if decision.pet:
            try:
                self._watchdog.pet()
                self.pets += 1
            except UnavailableError as e:
                log.warning("watchdog not petted: %s", e)
                decision = PetDecision(False, f"watchdog not petted: {e}")
        self._set_reason(decision.reason)
        return decision

    def _set_reason(self, reason: str) -> None:
        if reason == self.reason:
            return
        self.reason = reason
        if not reason.startswith("healthy"):
            log.warning("%s", reason)
        if self._status is not None:
            try:
                self._status(reason)
            except UnavailableError as e:
                log.warning("status not sent: %s", e)
