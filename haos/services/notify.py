"""sd_notify for the haos daemons: readiness, status in words, and a gated service watchdog.

systemd starts a ``Type=notify`` service, waits for ``READY=1``, shows ``STATUS=`` in
``systemctl status`` and, with ``WatchdogSec=``, kills and restarts a service that stops
sending ``WATCHDOG=1``. A watchdog that a daemon pets from a timer of its own proves only that
the timer runs, so :class:`Notifier` pets through a :class:`WatchdogGate`:

* the daemon's own loop must have run since the last pet (:meth:`Notifier.heartbeat`, or the
  :meth:`Notifier.beat` task, which does not count a wake-up that came too late);
* every registered liveness check must have reported progress since the last pet (a
  :class:`Liveness` handle per check: the HM's audit round completed, corosync answered a
  call, ...). :meth:`Notifier.probe` turns an awaitable call into such a check.

The watchdog interval follows ``sd_watchdog_enabled``: ``$WATCHDOG_USEC`` (a positive integer)
and, when ``$WATCHDOG_PID`` is set, only in the process it names; the gate is consulted every
half of it. Without ``$NOTIFY_SOCKET`` (not started by systemd) nothing is sent, but the gate
still decides, so tests see the same decisions. Messages go out as single datagrams through
:class:`~haos.services.hm.watchdog.SdNotifier` (abstract ``@`` socket names included).

The gate is pure: it reads no clock (``now`` is passed in) and does no I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from haos.clock import Clock, MonotonicClock
from haos.errors import HaosError, UnavailableError, UsageError
from haos.services.hm.watchdog import SdNotifier

log = logging.getLogger(__name__)

HEARTBEAT = "loop"  # the name the daemon's own loop has in reasons


@dataclass(frozen=True)
class GateDecision:
    pet: bool
    reason: str


@dataclass
class _Check:
    fresh: bool = False  # progress reported since the last pet
    last: float | None = None  # when progress was last reported
    trouble: str = ""  # why the last attempt failed, for the reason line


class WatchdogGate:
    """Decides whether ``WATCHDOG=1`` may be sent now.

    Pet only when the heartbeat and every check reported progress since the last pet; a pet
    starts the next round (everything must report again). Not thread-safe: use it from the
    event loop's thread.
    """

    def __init__(self, checks: Iterable[str] = ()) -> None:
        self._loop = _Check()
        self._checks: dict[str, _Check] = {}
        for name in checks:
            self.add(name)

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(self._checks)

    def add(self, name: str) -> None:
        """Register a liveness check; it must report before the next pet."""
        if not name or name == HEARTBEAT or name in self._checks:
            raise UsageError(f"bad or duplicate liveness check name {name!r}")
        self._checks[name] = _Check()

    def heartbeat(self, now: float) -> None:
        """The daemon's own loop ran at ``now``."""
        self._loop = _Check(True, now)

    def progress(self, name: str, now: float) -> None:
        """Check ``name`` made progress at ``now``."""
        self._checks[self._known(name)] = _Check(True, now)

    def trouble(self, name: str, why: str) -> None:
        """Check ``name`` tried and failed; ``why`` shows in the reason until it progresses."""
        self._checks[self._known(name)].trouble = why

    def decide(self, now: float) -> GateDecision:
        """Whether to pet at ``now``, and why; a positive answer starts a new round."""
        stale = [
            _stale(name, check, now)
            for name, check in [(HEARTBEAT, self._loop), *self._checks.items()]
            if not check.fresh
        ]
        if stale:
            return GateDecision(False, "watchdog withheld: " + "; ".join(stale))
        self._loop.fresh = False
        for check in self._checks.values():
            check.fresh = False
        names = ", ".join([HEARTBEAT, *self._checks])
        return GateDecision(True, f"healthy: {names} progressed")

    def _known(self, name: str) -> str:
        if name not in self._checks:
            raise UsageError(f"unknown liveness check {name!r}")
        return name


def _stale(name: str, check: _Check, now: float) -> str:
    if check.last is None:
        text = f"{name}: no progress yet"
    else:
        text = f"{name}: no progress for {now - check.last:.1f} s"
    return f"{text} ({check.trouble})" if check.trouble else text


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """The service watchdog timeout in µs as ``sd_watchdog_enabled`` reads it; None if off.

    Off when ``$WATCHDOG_USEC`` is missing, not a positive integer, or ``$WATCHDOG_PID`` is set
    and names another process (the variables were inherited from a parent).
    """
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if owner is not None and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec)


class Sender(Protocol):
    """Where sd_notify messages go; :class:`SdNotifier` is the real one."""

    def send(self, *assignments: str) -> None:
        """Send ``KEY=value`` lines as one message; UnavailableError if it cannot."""
        ...

    def close(self) -> None: ...


class Liveness:
    """The handle of one liveness check: call :meth:`progress` whenever it proved itself.

    It also serves as the :class:`~haos.cluster.fencing.watchdog.Watchdog` of a
    :class:`~haos.services.hm.watchdog.WatchdogPetter`: the HM's pet becomes this check's
    progress, and the daemon's gate decides.
    """

    def __init__(self, notifier: Notifier, name: str) -> None:
        self._notifier = notifier
        self.name = name

    def progress(self) -> None:
        self._notifier.gate.progress(self.name, self._notifier.clock.now())

    def trouble(self, why: str) -> None:
        self._notifier.gate.trouble(self.name, why)

    # the Watchdog protocol
    def arm(self) -> None:
        pass

    def pet(self) -> None:
        self.progress()

    def disarm(self) -> None:
        pass

    def fire(self) -> None:
        self._notifier.trigger()


class Notifier:
    """READY/STATUS/STOPPING/WATCHDOG for one daemon; see the module docstring.

    Sending errors are logged, never raised: systemd going away must not take the daemon down
    (without pets, the watchdog will act anyway).
    """

    def __init__(self, sender: Sender, clock: Clock, watchdog_usec: int | None = None) -> None:
        """``watchdog_usec``: the service watchdog timeout (None: no watchdog)."""
        self.sender = sender
        self.clock = clock
        self.gate = WatchdogGate()
        self.interval = None if watchdog_usec is None else watchdog_usec / 2_000_000
        self.pets = 0
        self.last_decision = GateDecision(False, "watchdog not consulted yet")
        self._last_pet: float | None = None
        self._status = ""
        self._withheld = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], pid: int, clock: Clock | None = None) -> Notifier:
        """The notifier of the process ``pid`` started with ``environ``."""
        return cls(
            SdNotifier.from_env(environ), clock or MonotonicClock(), watchdog_usec(environ, pid)
        )

    @property
    def status_text(self) -> str:
        """The last STATUS= line (also kept when nothing is sent)."""
        return "; ".join(t for t in (self._status, self._withheld) if t)

    def ready(self, status: str | None = None) -> None:
        """``READY=1``: the daemon has started (joined, state loaded)."""
        if status is not None:
            self._status = _one_line(status)
        self._send("READY=1", "STATUS=" + self.status_text)

    def status(self, text: str) -> None:
        """``STATUS=text`` (one line; sent only when it changed)."""
        text = _one_line(text)
        if text != self._status:
            self._status = text
            self._send("STATUS=" + self.status_text)

    def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1``: a clean shutdown has begun."""
        if status is not None:
            self._status = _one_line(status)
        self._send("STOPPING=1", "STATUS=" + self.status_text)

    def trigger(self) -> None:
        """``WATCHDOG=trigger``: ask systemd for the watchdog action now."""
        self._send("WATCHDOG=trigger")

    def check(self, name: str) -> Liveness:
        """Register a liveness check that must progress between any two pets."""
        self.gate.add(name)
        return Liveness(self, name)

    def heartbeat(self) -> None:
        """The daemon's own loop ran."""
        self.gate.heartbeat(self.clock.now())

    def consult(self) -> GateDecision:
        """Ask the gate now; send ``WATCHDOG=1`` if it agrees.

        A refusal is shown (``STATUS=``, a warning) only when it matters: before the first
        pet, or once the last pet is an interval old (half of the watchdog timeout). Between
        two rounds of progress the gate refuses all the time, and that is no news.
        """
        now = self.clock.now()
        decision = self.gate.decide(now)
        if decision.pet:
            self._send("WATCHDOG=1")
            self.pets += 1
            self._last_pet = now
        late = (
            self.interval is None or self._last_pet is None or now - self._last_pet >= self.interval
        )
        withheld = "" if decision.pet or not late else decision.reason
        if withheld != self._withheld:
            if withheld and not self._withheld:
                # before the first pet: starting up, the checks have not reported yet
                log.log(logging.INFO if self._last_pet is None else logging.WARNING, "%s", withheld)
            elif not withheld:
                log.info("watchdog: %s", decision.reason)
            self._withheld = withheld
            self._send("STATUS=" + self.status_text)
        self.last_decision = decision
        return decision

    # -- tasks for the daemon's TaskGroup (each returns at once when there is no watchdog) --

    async def run(self) -> None:
        """Consult the gate eight times per watchdog interval until cancelled: it pets as
        soon as everything progressed again, so a daemon that resumes after a stall shorter
        than the watchdog minus about a fifth of it (a 3 s SIGSTOP under a 5 s watchdog) is
        petted in time, whatever the phase of the stall."""
        if self.interval is None:
            return
        await self._every(self.interval / 8, lambda late: self.consult())

    async def beat(self) -> None:
        """The heartbeat task: a heartbeat four times per interval, unless the loop woke late
        (more than half an interval): a starved loop does not count as running."""
        if self.interval is None:
            return
        limit = self.interval / 2

        def maybe(late: float) -> None:
            if late <= limit:
                self.heartbeat()
            else:
                log.warning("event loop woke %.2f s late: no heartbeat", late)

        await self._every(self.interval / 4, maybe)

    async def probe(
        self, name: str, call: Callable[[], Awaitable[object]], timeout: float | None = None
    ) -> None:
        """Register check ``name`` and run ``call`` four times per interval: each answer
        within ``timeout`` (default: one interval) is progress; an error or a late answer is
        not."""
        check = self.check(name)
        if self.interval is None:
            return
        limit = timeout or self.interval
        while True:
            started = self.clock.now()
            try:
                async with asyncio.timeout(limit):
                    await call()
            except TimeoutError:
                check.trouble(f"no answer within {limit:g} s")
            except (HaosError, OSError) as e:
                check.trouble(f"{type(e).__name__}: {e}")
            else:
                check.progress()
            await self._sleep_until(started + self.interval / 4)

    async def _every(self, period: float, act: Callable[[float], object]) -> None:
        deadline = self.clock.now() + period
        while True:
            await self._sleep_until(deadline)
            now = self.clock.now()
            act(now - deadline)
            # after a late wake-up the next one is a full period away (no catching up)
            deadline = deadline + period if deadline + period > now else now + period

    async def _sleep_until(self, deadline: float) -> None:
        await self.clock.wait(asyncio.Event(), deadline)

    def close(self) -> None:
        """Release the socket; later messages open it again."""
        self.sender.close()

    def _send(self, *assignments: str) -> None:
        try:
            self.sender.send(*assignments)
        except UnavailableError as e:
            log.warning("sd_notify: %s", e)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def in_words(notice: object) -> str:
    """A notice or event as a short line for ``STATUS=``: ``master changed: old=1, new=2``.

    A wrapper with an ``event`` (``Publish``) is described by its event; a notice with a
    ``reason`` by that reason.
    """
    if not dataclasses.is_dataclass(notice) or isinstance(notice, type):
        return str(notice)
    inner = getattr(notice, "event", None)
    if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
        return in_words(inner)
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", type(notice).__name__).lower()
    reason = getattr(notice, "reason", None)
    if isinstance(reason, str):
        return f"{name}: {reason}"
    fields = dataclasses.fields(notice)
    values = ", ".join(f"{f.name}={_value(getattr(notice, f.name))}" for f in fields)
    return f"{name}: {values}" if values else name


def _value(value: object) -> str:
    if isinstance(value, frozenset | set):
        return "{" + ",".join(str(v) for v in sorted(value, key=str)) + "}"
    return str(value)
