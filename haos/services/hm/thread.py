"""The HM on a thread of its own, so that an audit that hangs it hangs nothing else.

The node agent's event loop carries out the cluster's orders (role changes, recoveries); the
HM's audits run programs that the components' owners wrote. Starting a program (asyncio's
subprocesses too) waits, in the thread that starts it, until the new program executes: an
audit program on a file system that stopped answering (a network or FUSE mount whose server
hangs) never gets there, and the starting thread waits with it, beyond any timeout of the
audit. :class:`HmThread` runs the :class:`~haos.services.hm.runner.AuditRunner` on a thread
and event loop of its own, so such an audit stops the HM's rounds and nothing else; the
runner's proof of life (``progress``, called on the agent's loop after every round) then
stops, the agent's watchdog gate withholds ``WATCHDOG=1`` and systemd restarts the agent.

Everything crosses between the two loops with ``call_soon_threadsafe``: registrations go
into the HM's loop; error reports and progress come back; a callback audit runs on the
agent's loop, where the endpoint talks to the application (:meth:`HmThread.callbacks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from haos.clock import Clock
from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec
from haos.errors import UsageError
from haos.model.reports import ErrorReport
from haos.services.hm.probes import AuditCallback, CallbackProbe, Probe
from haos.services.hm.runner import AuditRunner

log = logging.getLogger(__name__)


class HmThread:
    """An :class:`AuditRunner` on its own thread; :meth:`run` on the agent's loop drives it.

    ``report`` and ``progress`` are called on the loop that runs :meth:`run` (the agent's):
    ``report`` with every error report, ``progress`` after every round of the runner, which
    makes one at least every ``beat`` seconds (see :class:`AuditRunner`). Registration
    methods are called from that loop too; before :meth:`run` (and after it) they act at once.
    """

    def __init__(
        self,
        monitor: AuditMonitor,
        probes: Mapping[str, Probe],
        clock: Clock,
        report: Callable[[ErrorReport], None],
        progress: Callable[[], None],
        *,
        beat: float | None,
        stop_within: float = 2.0,
    ) -> None:
        """``stop_within``: seconds a stop waits for the thread; a hung HM is left behind."""
        self._report = report
        self._progress = progress
        self.runner = AuditRunner(
            monitor, probes, self._report_home, clock, beat=beat, on_round=self._round_home
        )
        self._stop_within = stop_within
        self._lock = threading.Lock()  # guards the fields below
        self._home: asyncio.AbstractEventLoop | None = None  # the agent's loop, while run()
        self._loop: asyncio.AbstractEventLoop | None = None  # the HM's, while it runs
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- from the agent's loop ------------------------------------------------------------

    def register(self, spec: AuditSpec) -> None:
        """Add or replace an audit; ModelError (at once, here) if it can never run."""
        self.runner.check(spec)
        self.call(self.runner.register, spec)

    def unregister(self, component: str, name: str | None = None) -> None:
        self.call(self.runner.unregister, component, name)

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in the HM's thread, in the order of the calls (at once while
        the thread does not run)."""
        with self._lock:
            if self._loop is None:
                fn(*args)
            else:
                self._loop.call_soon_threadsafe(fn, *args)

    def callbacks(self, probe: CallbackProbe) -> ThreadedCallbacks:
        """``probe``'s registry as the agent's loop uses it: see :class:`ThreadedCallbacks`."""
        return ThreadedCallbacks(self, probe)

    def at_home(self, callback: AuditCallback) -> AuditCallback:
        """``callback`` as the HM's loop awaits it: run on the agent's loop; cancelling the
        wait cancels it there."""

        async def run() -> tuple[bool, str]:
            home = self._home
            if home is None:
                return False, "the node agent is not running"
            answer = asyncio.run_coroutine_threadsafe(_call(callback), home)
            return await asyncio.wrap_future(answer)

        return run

    async def run(self) -> None:
        """Run the HM in its thread until cancelled or it fails (its error is raised here).

        Cancelled, it cancels the runner there (runs in flight are cleaned up) and waits for
        the thread at most ``stop_within`` seconds: a hung HM is not waited for.
        """
        home = asyncio.get_running_loop()
        with self._lock:
            if self._home is not None:
                raise UsageError("the HM thread is already running")
            self._home, self._stopping = home, False
        ended: asyncio.Future[None] = home.create_future()
        thread = threading.Thread(target=self._main, args=(home, ended), name="hm", daemon=True)
        thread.start()
        try:
            await asyncio.shield(ended)
        except asyncio.CancelledError:
            self._stop()
            done, _ = await asyncio.wait({ended}, timeout=self._stop_within)
            if not done:
                log.warning("the HM thread did not end within %g s: left behind", self._stop_within)
            raise
        finally:
            with self._lock:
                self._home = None

    # -- in the HM's thread ---------------------------------------------------------------

    def _main(self, home: asyncio.AbstractEventLoop, ended: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            asyncio.run(self._serve())
        except asyncio.CancelledError:
            pass  # stopped
        except BaseException as e:  # handed to the agent's loop, which ends the daemon
            error = e
        with contextlib.suppress(RuntimeError):  # the agent's loop is already closed
            home.call_soon_threadsafe(_settle, ended, error)

    async def _serve(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        try:
            await self.runner.run()
        finally:
            with self._lock:
                self._loop = self._task = None

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)

    def _report_home(self, report: ErrorReport) -> None:
        self._to_home(self._report, report)

    def _round_home(self) -> None:
        self._to_home(self._progress)

    def _to_home(self, fn: Callable[..., object], *args: Any) -> None:
        with self._lock:
            home = self._home
        if home is None:  # run() ended: the daemon is going, and so is what it was told
            log.debug("HM: %s after the end, dropped", getattr(fn, "__name__", fn))
            return
        with contextlib.suppress(RuntimeError):  # the agent's loop is closing
            home.call_soon_threadsafe(fn, *args)


class ThreadedCallbacks:
    """The endpoint's view of a :class:`CallbackProbe` run by an :class:`HmThread`: changes
    go into the HM's thread, and each callback runs on the agent's loop."""

    def __init__(self, hm: HmThread, probe: CallbackProbe) -> None:
        self._hm = hm
        self._probe = probe

    def add(self, component: str, name: str, callback: AuditCallback) -> None:
        self._hm.call(self._probe.add, component, name, self._hm.at_home(callback))

    def remove(self, component: str, name: str) -> None:
        self._hm.call(self._probe.remove, component, name)


async def _call(callback: AuditCallback) -> tuple[bool, str]:
    return await callback()


def _settle(ended: asyncio.Future[None], error: BaseException | None) -> None:
    if ended.done():
        return
    if error is None:
        ended.set_result(None)
    else:
        ended.set_exception(error)
