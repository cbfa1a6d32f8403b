"""One thread per corosync handle, so a stopped corosync cannot stall the event loop.

libcpg and libvotequorum wait for corosync's answer without a timeout: a SIGSTOPped or hung
corosync blocks the calling thread until it runs again. Every library call of a handle
therefore runs on the handle's own :class:`HandleWorker` thread, in submission order (libqb
connections are not meant to be used from two threads at once), and the event loop waits for
it with a deadline. A call that misses its deadline raises
:class:`~haos.cluster.dss.corosync.errors.CorosyncUnavailableError` (``CS_ERR_TIMEOUT``) and
*breaks* the worker: its thread stays stuck inside the library until corosync answers or
dies, and every later call fails at once. Open a new handle to try again.

A worker may also *watch* a descriptor (:meth:`HandleWorker.watch`): while no call is queued
it waits in ``poll`` for the handle's descriptor and dispatches on its own, so an event from
corosync wakes one thread instead of the loop and then the worker. A call queued meanwhile
wakes it through a pipe. :attr:`HandleWorker.dispatching_since` tells a watchdog on the loop
how long such a dispatch has been running (calls have their own deadlines).

The thread is a daemon: a process may exit while corosync is stopped. It is started by the
first :meth:`HandleWorker.submit`, from the calling thread, and so inherits that thread's
network namespace -- corosync's IPC sockets are abstract unix sockets, private to a network
namespace, so the first call (the ``*_initialize``) must come from a thread in corosync's
namespace, as it had to before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from haos.cluster.dss.corosync.errors import CorosyncUnavailableError, CsError
from haos.errors import UsageError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 2.0
"""Seconds a corosync call may take before the handle is declared broken.

A healthy call takes tens of microseconds; CS_ERR_TRY_AGAIN (sync, flow control) is answered
at once, not waited for. Two seconds leaves room for a loaded 2-core board."""

_Job = tuple["concurrent.futures.Future[Any]", Callable[[], Any]]


class HandleWorker:
    """The one thread that makes every blocking library call of one handle."""

    def __init__(
        self,
        what: str,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        on_broken: Callable[[CorosyncUnavailableError], None] | None = None,
    ) -> None:
        """``what`` names the handle in errors and the thread name; ``timeout`` is the
        deadline of each call in seconds; ``on_broken`` runs on the loop when one is missed."""
        if not timeout > 0:
            raise UsageError(f"the call timeout must be positive, not {timeout!r}")
        self.what = what
        self.timeout = timeout
        self._on_broken = on_broken
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.broken: CorosyncUnavailableError | None = None
        # time.monotonic() when the running dispatch of a watched descriptor began
        self.dispatching_since: float | None = None
        self._watched: tuple[int, Callable[[], bool]] | None = None
        self._polling = False  # the thread waits in poll(): a new job must wake it
        self._wakeup: tuple[int, int] | None = None  # pipe: read end, write end
        self._poller: tuple[int, select.poll] | None = None  # the thread's, for _watched

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue ``fn`` for the worker thread; starts the thread on first use."""
        if self._stopped:
            raise UsageError(f"the {self.what} worker was stopped")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"corosync-{self.what}", daemon=True
            )
            self._thread.start()
        self._jobs.put((future, fn))
        self._wake()
        return future

    def watch(self, fd: int, dispatch: Callable[[], bool]) -> None:
        """While no call is queued, wait on the worker thread for ``fd`` to turn readable and
        run ``dispatch`` there; it returns False to stop watching (the connection broke).
        Only after the first :meth:`submit` (the thread runs in corosync's namespace)."""
        if self._wakeup is None:
            self._wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watched = (fd, dispatch)
        self.submit(lambda: None)  # the thread may wait for a call rather than in poll()

    def unwatch(self) -> None:
        """Stop watching; a dispatch already running finishes. Idempotent."""
        if self._watched is not None:
            self._watched = None
            self._wake()

    def _wake(self) -> None:
        # Sequenced with _serve under the GIL: either the thread sees the new job when it
        # checks the queue after setting _polling, or this sees _polling and writes.
        if self._polling and self._wakeup is not None:
            with contextlib.suppress(OSError):  # full: it is awake anyway
                os.write(self._wakeup[1], b"\0")

    async def run(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        abandoned: Callable[[T], None] | None = None,
    ) -> T:
        """``fn()`` on the worker thread, awaited with the deadline.

        Raises :class:`CorosyncUnavailableError` at once if the worker is broken, and breaks
        it if ``fn`` misses the deadline. ``abandoned`` gets ``fn``'s result if it arrives
        after the deadline (to release what a late ``*_initialize`` acquired); it runs on the
        worker thread.
        """
        if self.broken is not None:
            raise self.still_broken(operation)
        future = self.submit(fn)
        try:
            return await wait_for(future, self.timeout)
        except TimeoutError:
            error = self.break_now(operation)
            if abandoned is not None:
                future.add_done_callback(lambda f: _late(f, abandoned, operation))
            raise error from None

    def break_now(self, operation: str) -> CorosyncUnavailableError:
        """Declare the worker broken because ``operation`` missed its deadline; returns the error
        (the first one if it was already broken)."""
        if self.broken is None:
            self.broken = CorosyncUnavailableError(
                operation,
                int(CsError.CS_ERR_TIMEOUT),
                f"no answer within {self.timeout:g} s: corosync is stopped or hung; "
                f"this {self.what} handle is broken, open a new one",
            )
            if self._on_broken is not None:
                self._on_broken(self.broken)  # the handle logs it
            else:
                log.warning("%s", self.broken)
        return self.broken

    def stop(self) -> None:
        """Let the thread exit after the calls already queued; idempotent, never blocks."""
        if not self._stopped:
            self._stopped = True
            self._watched = None
            if self._thread is not None:
                self._jobs.put(None)
                self._wake()

    def still_broken(self, operation: str) -> CorosyncUnavailableError:
        """The error for ``operation`` attempted on a broken worker."""
        assert self.broken is not None
        return CorosyncUnavailableError(
            operation,
            self.broken.cs_code,
            f"the {self.what} handle broke earlier ({self.broken.operation} got no answer)",
        )

    def _serve(self) -> None:
        try:
            while (job := self._next_job()) is not None:
                future, fn = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = fn()
                except BaseException as e:
                    future.set_exception(e)
                else:
                    future.set_result(result)
        finally:
            wakeup, self._wakeup = self._wakeup, None
            if wakeup is not None:
                for fd in wakeup:
                    os.close(fd)

    def _next_job(self) -> _Job | None:
        """The next queued call (None: stop); dispatches while waiting if watching."""
        while True:
            watched = self._watched
            if watched is None:
                return self._jobs.get()
            with contextlib.suppress(queue.Empty):
                return self._jobs.get_nowait()
            self._polling = True
            try:
                with contextlib.suppress(queue.Empty):
                    return self._jobs.get_nowait()
                assert self._wakeup is not None
                if self._poller is None or self._poller[0] != watched[0]:
                    poller = select.poll()
                    poller.register(watched[0], select.POLLIN)
                    poller.register(self._wakeup[0], select.POLLIN)
                    self._poller = (watched[0], poller)
                ready = {fd for fd, _ in self._poller[1].poll()}
            finally:
                self._polling = False
            if self._wakeup[0] in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wakeup[0], 4096)
            if watched[0] in ready and self._watched is watched:
                self._dispatch(watched)

    def dispatch_for(self, seconds: float) -> None:
        """On the worker thread, inside a call: wait ``seconds``, dispatching the watched
        descriptor meanwhile. A call that backs off must not hold up the events: corosync
        may be waiting for this process to read them before it takes more."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            watched = self._watched
            if watched is None:
                time.sleep(left)
                return
            poller = select.poll()
            poller.register(watched[0], select.POLLIN)
            if poller.poll(left * 1000):
                self._dispatch(watched)

    def _dispatch(self, watched: tuple[int, Callable[[], bool]]) -> None:
        self.dispatching_since = time.monotonic()
        try:
            if not watched[1]():
                self._watched = None
        except Exception:  # a bug: stop watching rather than spin or kill the thread
            log.exception("%s dispatch failed", self.what)
            self._watched = None
        finally:
            self.dispatching_since = None


async def wait_for(future: concurrent.futures.Future[T], timeout: float) -> T:
    """Await a worker's future for at most ``timeout`` seconds (TimeoutError after).

    Unlike :func:`asyncio.wrap_future`, a result that arrives after the loop closed is
    dropped quietly instead of raising in the worker thread.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def copy(done: concurrent.futures.Future[T]) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.cancel()
        elif (error := done.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    def from_worker(done: concurrent.futures.Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(copy, done)

    future.add_done_callback(from_worker)
    try:
        async with asyncio.timeout(timeout):
            return await waiter
    finally:
        future.cancel()  # only takes effect while it is still queued


def _late(future: concurrent.futures.Future[T], abandoned: Callable[[T], None], op: str) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    try:
        abandoned(future.result())
    except Exception:
        log.exception("releasing the late result of %s failed", op)
