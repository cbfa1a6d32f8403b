"""The life of one corosync library handle, shared by :mod:`.cpg` and :mod:`.quorum`.

A handle is connected on its own worker thread (:mod:`._worker`), dispatched by a reader
(:mod:`._events`) that turns the library's callbacks into events on :attr:`events`, and closed
by queueing the finalize on the worker. A broken handle (corosync stopped or gone) ends its
event stream with the error; later calls fail at once. What differs per service -- the
callbacks, what a close must send before finalizing, what is done with each event -- is left
to the subclass.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import logging
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from haos.cluster.dss.corosync import _lib
from haos.cluster.dss.corosync._events import Dispatched, EventStream, LoopReader, WorkerReader
from haos.cluster.dss.corosync._lib import Backoff
from haos.cluster.dss.corosync._worker import HandleWorker, wait_for
from haos.errors import UsageError

E = TypeVar("E")


class CorosyncHandle(Generic[E]):
    """One handle of a corosync library whose functions are named ``<PREFIX>_<call>``."""

    SERVICE: ClassVar[str]  # how logs and errors name it ("CPG", "votequorum")
    PREFIX: ClassVar[str]  # the library's function prefix ("cpg", "votequorum")
    # Whether the worker itself waits for the descriptor (lowest latency: CPG) or the loop
    # watches it and hands each dispatch to the worker.
    WORKER_READS: ClassVar[bool] = False
    INITIALIZE: ClassVar[str] = "initialize"  # the library call that makes a handle

    def __init__(self, lib: ctypes.CDLL, backoff: Backoff, call_timeout: float) -> None:
        self._lib = lib
        self._backoff = backoff
        self._log = logging.getLogger(type(self).__module__)
        self.events: EventStream[E] = EventStream(f"{self.SERVICE} handle")
        self._worker = HandleWorker(self.SERVICE, call_timeout, self._broken)
        self._handle: int | None = None
        self._reader: LoopReader[E] | WorkerReader[E] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Retries after CS_ERR_TRY_AGAIN of this handle's calls, by library function.
        self.try_again: collections.Counter[str] = collections.Counter()
        # Touched only by the thread inside the library's dispatch (the worker).
        self._collected: list[E] = []
        self._callback_error: BaseException | None = None

    def _fn(self, call: str) -> Callable[..., int]:
        fn: Callable[..., int] = getattr(self._lib, f"{self.PREFIX}_{call}")
        return fn

    async def _connect(self, *args: object, keep: tuple[object, ...] = ()) -> None:
        """``<PREFIX>_initialize(&handle, *args)`` on a new worker thread (it inherits the
        calling thread's network namespace). A connection made after the caller gave up is
        finalized again."""
        if self._handle is not None:
            raise UsageError(f"{self.SERVICE} handle is already initialized")
        handle = ctypes.c_uint64()
        finalize = self._fn("finalize")

        def release(rc: int) -> None:
            if rc == _lib.CS_OK:
                finalize(handle.value)

        await _lib.acall(
            self._fn(self.INITIALIZE),
            ctypes.byref(handle),
            *args,
            backoff=self._backoff,
            worker=self._worker,
            abandoned=release,
            keep=keep,
        )
        self._handle = handle.value

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch callbacks (on the worker) whenever corosync has events for this handle,
        and queue them on :attr:`events` on ``loop``."""
        if self._reader is not None:
            raise UsageError(f"{self.SERVICE} handle is already attached to a loop")
        handle = self._live_handle()
        self._loop = loop
        reader = WorkerReader if self.WORKER_READS else LoopReader
        self._reader = reader(
            loop,
            self.fd_get(),
            self._worker,
            lambda: self._dispatch_here(handle),
            self._deliver,
            self._broken,
        )

    def fd_get(self) -> int:
        """``<PREFIX>_fd_get``: the descriptor that turns readable when events are waiting.

        Local to the library (no round trip to corosync), so it runs on the calling thread.
        """
        fd = ctypes.c_int()
        rc = self._fn("fd_get")(self._live_handle(), ctypes.byref(fd))
        _lib.check(f"{self.PREFIX}_fd_get", rc)
        return fd.value

    def dispatch(self) -> None:
        """``<PREFIX>_dispatch(CS_DISPATCH_ALL)`` on the calling thread: queue every waiting
        event. The attached reader does this on the worker thread; calling it directly
        blocks the caller while corosync is stopped, and must not overlap the reader."""
        result = self._dispatch_here(self._live_handle())
        self._deliver(result.events)
        if result.error is not None:
            raise result.error

    def close(self) -> None:
        """Finalize (after what the service sends on close), queued on the worker thread;
        idempotent, never raises, never blocks. :meth:`aclose` also waits for it."""
        self._close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait up to the call timeout until corosync took it."""
        closing = self._close()
        if closing is None:
            return
        try:
            await wait_for(closing, self._worker.timeout)
        except TimeoutError:
            self._log.warning(
                "%s close: corosync did not answer within %g s", self.SERVICE, self._worker.timeout
            )

    # -- for the subclasses ------------------------------------------------------------------

    async def _call(
        self, fn: Callable[..., int], *args: object, keep: tuple[object, ...] = ()
    ) -> None:
        await _lib.acall(
            fn,
            *args,
            backoff=self._backoff,
            worker=self._worker,
            keep=keep,
            retries=self.try_again,
        )

    def _close(self, error: BaseException | None = None) -> concurrent.futures.Future[None] | None:
        """Start closing (the event stream ends with ``error``); the future of the closing
        calls if worth waiting for."""
        if self._reader is not None:
            self._reader.close()
        handle, self._handle = self._handle, None
        healthy = not self.events.ended and self._worker.broken is None
        self.events.end(error)
        closing = None
        if handle is not None:
            closing = self._worker.submit(self._closing(handle, healthy))
        self._worker.stop()
        return closing if healthy else None

    def _closing(self, handle: int, healthy: bool) -> Callable[[], None]:
        """What the worker runs to close ``handle``: the finalize (which also frees the
        library's side). A broken connection can carry nothing more."""

        def finalize() -> None:
            rc = int(self._fn("finalize")(handle))
            if rc != _lib.CS_OK and healthy:
                error = _lib.error_for(f"{self.PREFIX}_finalize", rc)
                self._log.debug("%s_finalize on close: %s", self.PREFIX, error)

        return finalize

    def _live_handle(self) -> int:
        if self._handle is None:
            raise UsageError(f"{self.SERVICE} handle is not initialized or was closed")
        return self._handle

    def _broken(self, error: BaseException) -> None:
        if not self.events.ended:
            self._log.warning("%s connection broke: %s", self.SERVICE, error)
        if self._reader is not None:
            self._reader.close()
        self.events.end(error)

    def _deliver(self, events: tuple[E, ...]) -> None:
        for event in events:
            self.events.put(event)

    def _dispatch_here(self, handle: int) -> Dispatched[E]:
        """The library's dispatch on the calling thread; the callbacks' events and the error."""
        self._collected = []
        rc = int(self._fn("dispatch")(handle, _lib.CS_DISPATCH_ALL))
        events, self._collected = tuple(self._collected), []
        error, self._callback_error = self._callback_error, None
        # TRY_AGAIN here only means "nothing more to read"
        if error is None and rc not in (_lib.CS_OK, _lib.CS_ERR_TRY_AGAIN):
            error = _lib.error_for(f"{self.PREFIX}_dispatch", rc)
        return Dispatched(events, error)

    def _emit(self, make: Callable[[], E]) -> None:
        # Runs inside the library's dispatch, called from C: an exception here would be
        # printed and lost by ctypes, so keep it for the dispatch's result.
        try:
            self._collected.append(make())
        except BaseException as e:
            if self._callback_error is None:
                self._callback_error = e
