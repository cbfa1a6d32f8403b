"""Closed process groups (CPG): agreed-order multicast and group membership over corosync.

Use::

    async with CpgGroup.open("haos-cmm") as group:
        await group.mcast(b"hello")
        async for event in group.events:
            match event:
                case Delivered(node_id, pid, payload): ...
                case MembershipChanged(members, left, joined): ...
                case TotemRing(ring_id, members): ...

Contract, from corosync's CPG service:

* Every member of a group receives every message multicast to it, in the same (agreed)
  order, including the sender itself; a message is delivered only to processes that were
  members when it was ordered. Membership changes are ordered with the messages: all
  members see the same sequence of messages and changes (virtual synchrony).
* Events are the callbacks of the CPG model v1, turned into frozen dataclasses and queued on
  :attr:`CpgGroup.events` in dispatch order. The first event after joining is the
  :class:`TotemRing` of the current ring (the ``CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF``
  flag).
* Each method that talks to corosync does one IPC round trip to the local corosync (tens of
  microseconds). libcpg waits for the answer without a timeout, so every call -- and every
  dispatch -- runs on the handle's own worker thread (:mod:`._worker`) and the loop waits
  for it with a deadline (``call_timeout``, default 2 s): a *stopped* (SIGSTOPped, hung)
  corosync makes the call raise :class:`CorosyncUnavailableError` (CS_ERR_TIMEOUT) in time
  and leaves the loop running. The handle is then *broken*: its stream ends with that error
  and later calls fail at once; open a new handle once corosync is back. A corosync that
  exits gives :class:`CorosyncUnavailableError` (CS_ERR_LIBRARY).
* CS_ERR_TRY_AGAIN (membership sync, flow control) is retried with a bounded asyncio
  back-off (:class:`~haos.cluster.dss.corosync._lib.Backoff`); after the budget the call
  raises :class:`CorosyncUnavailableError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import IntEnum

from haos.cluster.dss.corosync import _lib
from haos.cluster.dss.corosync._handle import CorosyncHandle
from haos.cluster.dss.corosync._lib import DEFAULT_BACKOFF, Backoff
from haos.cluster.dss.corosync._worker import DEFAULT_CALL_TIMEOUT
from haos.cluster.dss.corosync.trace import EVENT
from haos.errors import UsageError

log = logging.getLogger(__name__)


class CpgReason(IntEnum):
    """``cpg_reason_t``: why a process joined or left a group."""

    UNDEFINED = 0
    JOIN = 1
    LEAVE = 2
    NODEDOWN = 3
    NODEUP = 4
    PROCDOWN = 5


@dataclass(frozen=True)
class CpgMember:
    """One process in a group: node, process id and (in left/joined lists) why."""

    node_id: int
    pid: int
    reason: CpgReason = CpgReason.UNDEFINED


@dataclass(frozen=True)
class RingId:
    """A totem ring: the representative node and a sequence number that only grows."""

    node_id: int
    seq: int

    def __str__(self) -> str:
        return f"{self.node_id:x}.{self.seq:x}"  # as corosync logs it (CS_PRI_RING_ID)


@dataclass(frozen=True)
class Delivered:
    """A message multicast to the group, in agreed order; sender's node and pid."""

    node_id: int
    pid: int
    payload: bytes


@dataclass(frozen=True)
class MembershipChanged:
    """The group's membership after a change, and the processes that left and joined."""

    members: tuple[CpgMember, ...]
    left: tuple[CpgMember, ...]
    joined: tuple[CpgMember, ...]


@dataclass(frozen=True)
class TotemRing:
    """A new totem ring (cluster-wide membership of nodes, not of group processes)."""

    ring_id: RingId
    members: tuple[int, ...]


CpgEvent = Delivered | MembershipChanged | TotemRing


def _reason(raw: int) -> CpgReason:
    try:
        return CpgReason(raw)
    except ValueError:
        return CpgReason.UNDEFINED


def _members(array: ctypes._Pointer[_lib.CpgAddress], count: int) -> tuple[CpgMember, ...]:
    if count == 0:
        return ()
    return tuple(CpgMember(a.nodeid, a.pid, _reason(a.reason)) for a in array[:count])


class CpgGroup(CorosyncHandle[CpgEvent]):
    """One CPG handle, joined to at most one group. Open it with :meth:`open`.

    Use it from the thread running its event loop; its library calls run on its own worker
    thread (see the module docstring).
    """

    SERVICE = "CPG"
    PREFIX = "cpg"
    INITIALIZE = "model_initialize"
    WORKER_READS = True

    def __init__(
        self, *, backoff: Backoff = DEFAULT_BACKOFF, call_timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        """Prepare a handle; :meth:`open` connects it. Does no I/O.

        ``call_timeout``: seconds each library call may take before the handle is declared
        broken (:class:`CorosyncUnavailableError`, CS_ERR_TIMEOUT).
        """
        super().__init__(_lib.cpg(), backoff, call_timeout)
        self._group: _lib.CpgName | None = None
        self._post_error: Exception | None = None  # the first posted call that failed
        self._send_lock = asyncio.Lock()
        # libcpg keeps these C function pointers; they must outlive the handle.
        self._callbacks = (
            _lib.CpgDeliverFn(self._on_deliver),
            _lib.CpgConfchgFn(self._on_confchg),
            _lib.CpgTotemConfchgFn(self._on_totem_confchg),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        group: str,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> AsyncIterator[CpgGroup]:
        """Connect to corosync, dispatch on the running loop, join ``group``; close on exit.

        Raises :class:`CorosyncUnavailableError` if corosync is not reachable or does not
        answer within ``call_timeout``. On exit waits (up to ``call_timeout``) for the leave.
        """
        self = cls(backoff=backoff, call_timeout=call_timeout)
        try:
            await self.initialize()
            self.attach(asyncio.get_running_loop())
            await self.join(group)
            yield self
        finally:
            await self.aclose()

    async def initialize(self) -> None:
        """``cpg_model_initialize`` with model v1 (deliver, confchg and totem callbacks).

        Starts the worker thread, which inherits the calling thread's network namespace.
        """
        deliver, confchg, totem = self._callbacks
        model = _lib.CpgModelV1Data(
            _lib.CPG_MODEL_V1, deliver, confchg, totem, _lib.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF
        )
        await self._connect(
            _lib.CPG_MODEL_V1,
            ctypes.cast(ctypes.pointer(model), ctypes.c_void_p),
            None,
            keep=(model,),
        )

    async def join(self, group: str) -> None:
        """``cpg_join``: become a member of ``group`` (1..128 bytes of UTF-8)."""
        handle = self._live_handle()
        if self._group is not None:
            raise UsageError("this CPG handle has already joined a group")
        name = _lib.cpg_name(group)
        await self._call(self._lib.cpg_join, handle, ctypes.byref(name))
        self._group = name

    async def leave(self) -> None:
        """``cpg_leave``: members see this process leave with reason LEAVE."""
        handle = self._live_handle()
        name = self._joined()
        await self._call(self._lib.cpg_leave, handle, ctypes.byref(name))
        self._group = None

    async def mcast(self, payload: bytes) -> None:
        """``cpg_mcast_joined`` with CPG_TYPE_AGREED: send to every member, this one included.

        Returns once corosync has accepted the message, not when it is delivered. Concurrent
        calls are serialised so messages leave in the order the calls were made. A call that
        timed out (or was cancelled) may still be sent once corosync runs again.
        """
        handle = self._live_handle()
        self._joined()
        sys.audit(EVENT, "cpg.mcast", payload)
        buffer = ctypes.c_char_p(payload)  # points into ``payload``; no copy
        iov = _lib.IoVec(ctypes.cast(buffer, ctypes.c_void_p), len(payload))
        async with self._send_lock:
            await self._call(
                self._lib.cpg_mcast_joined,
                handle,
                _lib.CPG_TYPE_AGREED,
                ctypes.byref(iov),
                1,
                keep=(payload, buffer, iov),
            )

    def post(self, payload: bytes) -> None:
        """``cpg_mcast_joined`` with CPG_TYPE_AGREED, without waiting for the worker thread.

        The call is queued behind every earlier call of this handle, so messages leave in
        the order they were posted; this returns at once. CS_ERR_TRY_AGAIN is retried on the
        worker with the handle's back-off (holding back this handle's later calls, but not
        its dispatches). Any other failure closes the handle (leaving the group if corosync
        still answers); a call not made within the call timeout breaks it (see the module
        docstring). Either way :attr:`events` ends with the error and later calls raise.
        Raises at once if the handle is closed or already broken. Posting while an
        :meth:`mcast` of this handle is still backing off may overtake it.
        """
        if self._post_error is not None:
            raise self._post_error
        handle = self._live_handle()
        self._joined()
        loop = self._loop
        if loop is None:
            raise UsageError("CPG handle is not attached to a loop")
        if self._worker.broken is not None:
            raise self._worker.still_broken("cpg_mcast_joined")
        sys.audit(EVENT, "cpg.mcast", payload)
        future = self._worker.submit(lambda: self._mcast_now(handle, payload))
        future.add_done_callback(lambda f: self._posted(loop, f))
        loop.call_later(self._worker.timeout, self._post_overdue, future)

    def _mcast_now(self, handle: int, payload: bytes) -> None:
        # On the worker thread.
        buffer = ctypes.c_char_p(payload)  # points into ``payload``; no copy
        iov = _lib.IoVec(ctypes.cast(buffer, ctypes.c_void_p), len(payload))
        delays = self._backoff.delays()
        while True:
            rc = int(self._lib.cpg_mcast_joined(handle, _lib.CPG_TYPE_AGREED, ctypes.byref(iov), 1))
            if rc != _lib.CS_ERR_TRY_AGAIN:
                _lib.check("cpg_mcast_joined", rc)
                sys.audit(EVENT, "cpg.sent", payload)
                return
            delay = next(delays, None)
            if delay is None:
                raise _lib.error_for(
                    "cpg_mcast_joined", rc, f"still busy after {self._backoff.attempts} attempts"
                )
            _lib.count_try_again("cpg_mcast_joined", self.try_again)
            self._worker.dispatch_for(delay)

    def _posted(
        self, loop: asyncio.AbstractEventLoop, done: concurrent.futures.Future[None]
    ) -> None:
        # On the worker thread (or the loop's, if cancelled): only a failure wakes the loop.
        if done.cancelled() or done.exception() is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            loop.call_soon_threadsafe(self._post_failed, done.exception())

    def _post_failed(self, error: BaseException | None) -> None:
        # A message was lost: the handle must not carry on as if it had been sent. Leave the
        # group (if the connection still works), so the other members do not wait for us.
        assert isinstance(error, Exception)
        if self._post_error is None:
            self._post_error = error
            log.warning("CPG multicast failed, leaving the group: %s", error)
        self._close(error)

    def _post_overdue(self, future: concurrent.futures.Future[None]) -> None:
        if not future.done():
            self._broken(self._worker.break_now("cpg_mcast_joined"))

    async def local_get(self) -> int:
        """``cpg_local_get``: this node's corosync node id."""
        handle = self._live_handle()
        node_id = ctypes.c_uint()
        await self._call(self._lib.cpg_local_get, handle, ctypes.byref(node_id))
        return node_id.value

    async def membership_get(self) -> tuple[CpgMember, ...]:
        """``cpg_membership_get``: the joined group's current members (reason UNDEFINED)."""
        handle = self._live_handle()
        name = self._joined()
        array = (_lib.CpgAddress * _lib.CPG_MEMBERS_MAX)()
        count = ctypes.c_int(_lib.CPG_MEMBERS_MAX)
        await self._call(
            self._lib.cpg_membership_get, handle, ctypes.byref(name), array, ctypes.byref(count)
        )
        return tuple(CpgMember(a.nodeid, a.pid) for a in array[: count.value])

    # -- internals ---------------------------------------------------------------------------

    def _closing(self, handle: int, healthy: bool) -> Callable[[], None]:
        # Leave before the finalize, so members see LEAVE rather than PROCDOWN; a broken
        # connection cannot carry a leave.
        group, self._group = self._group, None
        finalize = super()._closing(handle, healthy)

        def leave_and_finalize() -> None:
            if group is not None and healthy:
                rc = int(self._lib.cpg_leave(handle, ctypes.byref(group)))
                if rc != _lib.CS_OK:
                    log.debug("cpg_leave on close: %s", _lib.error_for("cpg_leave", rc))
            finalize()

        return leave_and_finalize

    def _joined(self) -> _lib.CpgName:
        if self._group is None:
            raise UsageError("this CPG handle has not joined a group")
        return self._group

    def _deliver(self, events: tuple[CpgEvent, ...]) -> None:
        for event in events:
            if isinstance(event, Delivered):
                sys.audit(EVENT, "cpg.pickup", event.payload)
        super()._deliver(events)

    def _on_deliver(
        self,
        _handle: int,
        _group: ctypes._Pointer[_lib.CpgName],
        node_id: int,
        pid: int,
        msg: int | None,
        msg_len: int,
    ) -> None:
        def make() -> Delivered:
            payload = ctypes.string_at(msg, msg_len) if msg and msg_len else b""
            sys.audit(EVENT, "cpg.deliver", payload)
            return Delivered(node_id, pid, payload)

        self._emit(make)

    def _on_confchg(
        self,
        _handle: int,
        _group: ctypes._Pointer[_lib.CpgName],
        members: ctypes._Pointer[_lib.CpgAddress],
        n_members: int,
        left: ctypes._Pointer[_lib.CpgAddress],
        n_left: int,
        joined: ctypes._Pointer[_lib.CpgAddress],
        n_joined: int,
    ) -> None:
        self._emit(
            lambda: MembershipChanged(
                _members(members, n_members), _members(left, n_left), _members(joined, n_joined)
            )
        )

    def _on_totem_confchg(
        self,
        _handle: int,
        ring_id: _lib.CpgRingId,
        n_members: int,
        members: ctypes._Pointer[ctypes.c_uint32],
    ) -> None:
        def make() -> TotemRing:
            nodes = tuple(members[:n_members]) if n_members else ()
            return TotemRing(RingId(ring_id.nodeid, ring_id.seq), nodes)

        self._emit(make)
