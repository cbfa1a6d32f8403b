"""ctypes declarations for corosync 3's client libraries, and the error/retry wrapper.

The structures mirror ``<corosync/cpg.h>``, ``<corosync/votequorum.h>`` and
``<corosync/cmap.h>`` of corosync 3.1 field by field (C enums are ``int``); a test compiles
the headers and compares ``sizeof``/``offsetof`` with these. Every function gets explicit
``argtypes``: the handles are ``uint64_t``, which ctypes would otherwise truncate to ``int``.

The shared libraries are loaded once per process (:func:`functools.cache`): the dynamic
loader keeps one copy per process anyway, so this is not a singleton of ours.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import functools
import time
from collections.abc import Callable, Iterator
from ctypes import POINTER, c_char, c_int, c_size_t, c_uint, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass

from haos.cluster.dss.corosync._worker import HandleWorker
from haos.cluster.dss.corosync.errors import CorosyncError, CorosyncUnavailableError, CsError
from haos.errors import UsageError

CS_OK = int(CsError.CS_OK)
CS_ERR_TRY_AGAIN = int(CsError.CS_ERR_TRY_AGAIN)
CS_ERR_NOT_EXIST = int(CsError.CS_ERR_NOT_EXIST)
CS_ERR_NO_SECTIONS = int(CsError.CS_ERR_NO_SECTIONS)
CS_ERR_INVALID_PARAM = int(CsError.CS_ERR_INVALID_PARAM)

# The world broke: corosync is absent, unreachable from this netns, or dropped us.
_UNAVAILABLE = frozenset(
    {int(CsError.CS_ERR_LIBRARY), int(CsError.CS_ERR_TIMEOUT), int(CsError.CS_ERR_BAD_HANDLE)}
)
_HINTS = {
    int(CsError.CS_ERR_LIBRARY): "corosync is not running, is not reachable from this network "
    "namespace, or closed the connection",
    int(CsError.CS_ERR_SECURITY): "corosync refused this uid/gid; see uidgid.d in corosync.conf",
    int(CsError.CS_ERR_BAD_HANDLE): "the handle is finalized or its connection was lost",
}

# cs_dispatch_flags_t and track flags, <corosync/corotypes.h>
CS_DISPATCH_ONE = 1
CS_DISPATCH_ALL = 2
CS_DISPATCH_BLOCKING = 3
CS_DISPATCH_ONE_NONBLOCKING = 4
CS_TRACK_CURRENT = 0x01
CS_TRACK_CHANGES = 0x02
CS_TRACK_CHANGES_ONLY = 0x04

# ---------------------------------------------------------------- <corosync/cpg.h>
CPG_TYPE_AGREED = 2  # cpg_guarantee_t
CPG_MODEL_V1 = 1  # cpg_model_t
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF = 0x01
CPG_MAX_NAME_LENGTH = 128
CPG_MEMBERS_MAX = 128


class CpgName(ctypes.Structure):
    """``struct cpg_name``."""

    _fields_ = [("length", c_uint32), ("value", c_char * CPG_MAX_NAME_LENGTH)]


class CpgAddress(ctypes.Structure):
    """``struct cpg_address``."""

    _fields_ = [("nodeid", c_uint32), ("pid", c_uint32), ("reason", c_uint32)]


class CpgRingId(ctypes.Structure):
    """``struct cpg_ring_id``."""

    _fields_ = [("nodeid", c_uint32), ("seq", c_uint64)]


class IoVec(ctypes.Structure):
    """``struct iovec`` from ``<sys/uio.h>``."""

    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


# cpg_deliver_fn_t(handle, group_name, nodeid, pid, msg, msg_len)
CpgDeliverFn = ctypes.CFUNCTYPE(
    None, c_uint64, POINTER(CpgName), c_uint32, c_uint32, c_void_p, c_size_t
)
# cpg_confchg_fn_t(handle, group_name, member_list, n, left_list, n, joined_list, n)
CpgConfchgFn = ctypes.CFUNCTYPE(
    None,
    c_uint64,
    POINTER(CpgName),
    POINTER(CpgAddress),
    c_size_t,
    POINTER(CpgAddress),
    c_size_t,
    POINTER(CpgAddress),
    c_size_t,
)
# cpg_totem_confchg_fn_t(handle, ring_id (by value), member_list_entries, member_list)
CpgTotemConfchgFn = ctypes.CFUNCTYPE(None, c_uint64, CpgRingId, c_uint32, POINTER(c_uint32))


class CpgModelV1Data(ctypes.Structure):
    """``cpg_model_v1_data_t``."""

    _fields_ = [
        ("model", c_int),
        ("cpg_deliver_fn", CpgDeliverFn),
        ("cpg_confchg_fn", CpgConfchgFn),
        ("cpg_totem_confchg_fn", CpgTotemConfchgFn),
        ("flags", c_uint),
    ]


# ---------------------------------------------------------------- <corosync/votequorum.h>
VOTEQUORUM_QDEVICE_MAX_NAME_LEN = 255


class VotequorumInfo(ctypes.Structure):
    """``struct votequorum_info``."""

    _fields_ = [
        ("node_id", c_uint),
        ("node_state", c_uint),
        ("node_votes", c_uint),
        ("node_expected_votes", c_uint),
        ("highest_expected", c_uint),
        ("total_votes", c_uint),
        ("quorum", c_uint),
        ("flags", c_uint),
        ("qdevice_votes", c_uint),
        ("qdevice_name", c_char * VOTEQUORUM_QDEVICE_MAX_NAME_LEN),
    ]


class VotequorumNode(ctypes.Structure):
    """``votequorum_node_t``."""

    _fields_ = [("nodeid", c_uint32), ("state", c_uint32)]


class VotequorumRingId(ctypes.Structure):
    """``votequorum_ring_id_t``."""

    _fields_ = [("nodeid", c_uint32), ("seq", c_uint64)]


# votequorum_quorum_notification_fn_t(handle, context, quorate, node_list_entries, node_list)
VqQuorumNotifyFn = ctypes.CFUNCTYPE(
    None, c_uint64, c_uint64, c_uint32, c_uint32, POINTER(VotequorumNode)
)
# votequorum_nodelist_notification_fn_t(handle, context, ring_id (by value), entries, list)
VqNodelistNotifyFn = ctypes.CFUNCTYPE(
    None, c_uint64, c_uint64, VotequorumRingId, c_uint32, POINTER(c_uint32)
)
# votequorum_expectedvotes_notification_fn_t(handle, context, expected_votes)
VqExpectedVotesNotifyFn = ctypes.CFUNCTYPE(None, c_uint64, c_uint64, c_uint32)


class VotequorumCallbacks(ctypes.Structure):
    """``votequorum_callbacks_t``."""

    _fields_ = [
        ("votequorum_quorum_notify_fn", VqQuorumNotifyFn),
        ("votequorum_expectedvotes_notify_fn", VqExpectedVotesNotifyFn),
        ("votequorum_nodelist_notify_fn", VqNodelistNotifyFn),
    ]


# ---------------------------------------------------------------- <corosync/cmap.h>
CMAP_KEYNAME_MAXLEN = 255

_H = c_uint64  # every *_handle_t is uint64_t
_P = POINTER

_SIGNATURES: dict[str, dict[str, list[type]]] = {
    "libcpg.so.4": {
        "cpg_model_initialize": [_P(_H), c_int, c_void_p, c_void_p],
        "cpg_finalize": [_H],
        "cpg_fd_get": [_H, _P(c_int)],
        "cpg_dispatch": [_H, c_int],
        "cpg_join": [_H, _P(CpgName)],
        "cpg_leave": [_H, _P(CpgName)],
        "cpg_mcast_joined": [_H, c_int, _P(IoVec), c_uint],
        "cpg_membership_get": [_H, _P(CpgName), _P(CpgAddress), _P(c_int)],
        "cpg_local_get": [_H, _P(c_uint)],
    },
    "libvotequorum.so.8": {
        "votequorum_initialize": [_P(_H), _P(VotequorumCallbacks)],
        "votequorum_finalize": [_H],
        "votequorum_dispatch": [_H, c_int],
        "votequorum_fd_get": [_H, _P(c_int)],
        "votequorum_getinfo": [_H, c_uint, _P(VotequorumInfo)],
        "votequorum_trackstart": [_H, c_uint64, c_uint],
        "votequorum_trackstop": [_H],
    },
    "libcmap.so.4": {
        "cmap_initialize": [_P(_H)],
        "cmap_finalize": [_H],
        "cmap_get": [_H, ctypes.c_char_p, c_void_p, _P(c_size_t), _P(c_int)],
        "cmap_iter_init": [_H, ctypes.c_char_p, _P(_H)],
        "cmap_iter_next": [_H, _H, c_void_p, _P(c_size_t), _P(c_int)],
        "cmap_iter_finalize": [_H, _H],
    },
}


def _load(soname: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(soname)
    except OSError as e:
        raise CorosyncError(
            f"load {soname}", None, "install Debian's corosync package (its client libraries)"
        ) from e
    for name, argtypes in _SIGNATURES[soname].items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = c_int
    return lib


@functools.cache
def cpg() -> ctypes.CDLL:
    """``libcpg.so.4`` with its signatures declared."""
    return _load("libcpg.so.4")


@functools.cache
def votequorum() -> ctypes.CDLL:
    """``libvotequorum.so.8`` with its signatures declared."""
    return _load("libvotequorum.so.8")


@functools.cache
def cmap() -> ctypes.CDLL:
    """``libcmap.so.4`` with its signatures declared."""
    return _load("libcmap.so.4")


# ---------------------------------------------------------------- errors and retries


@dataclass(frozen=True)
class Backoff:
    """How long to keep retrying a call that answers CS_ERR_TRY_AGAIN.

    Corosync answers TRY_AGAIN while it synchronises after a membership change and while
    totem's send queue is full (flow control); both pass within a few token times. Delays
    double from ``first`` up to ``cap``; after ``attempts`` calls the error is raised as
    :class:`CorosyncUnavailableError`. The default waits at most ~0.6 s in total.
    """

    first: float = 0.001
    cap: float = 0.1
    attempts: int = 12

    def delays(self) -> Iterator[float]:
        """The sleeps between attempts: ``attempts - 1`` of them."""
        delay = self.first
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.cap)


DEFAULT_BACKOFF = Backoff()

# Retries after CS_ERR_TRY_AGAIN, per library call, of every handle in this process. Kept
# for the status output that still reads it; each handle counts its own in ``try_again``.
TRY_AGAIN_RETRIES: collections.Counter[str] = collections.Counter()


def count_try_again(name: str, own: collections.Counter[str] | None) -> None:
    """One more retry of ``name`` after CS_ERR_TRY_AGAIN (in ``own``, a handle's counter)."""
    TRY_AGAIN_RETRIES[name] += 1
    if own is not None:
        own[name] += 1


def error_for(operation: str, rc: int, detail: str = "") -> CorosyncError:
    """The exception for a failed call: unavailable (retryable) or a plain CorosyncError."""
    detail = detail or _HINTS.get(rc, "")
    if rc in _UNAVAILABLE or rc == CS_ERR_TRY_AGAIN:
        return CorosyncUnavailableError(operation, rc, detail)
    return CorosyncError(operation, rc, detail)


def check(operation: str, rc: int) -> None:
    """Raise the translated error unless ``rc`` is CS_OK."""
    if rc != CS_OK:
        raise error_for(operation, rc)


def _name(fn: Callable[..., int]) -> str:
    return str(getattr(fn, "__name__", "corosync call"))


def call(fn: Callable[..., int], *args: object, backoff: Backoff = DEFAULT_BACKOFF) -> None:
    """Call ``fn(*args)``, sleeping and retrying on CS_ERR_TRY_AGAIN; raise on failure.

    Blocks the calling thread while it backs off: for synchronous callers only.
    """
    delays = backoff.delays()
    while True:
        rc = int(fn(*args))
        if rc != CS_ERR_TRY_AGAIN:
            check(_name(fn), rc)
            return
        delay = next(delays, None)
        if delay is None:
            raise error_for(_name(fn), rc, f"still busy after {backoff.attempts} attempts")
        time.sleep(delay)


async def acall(
    fn: Callable[..., int],
    *args: object,
    backoff: Backoff = DEFAULT_BACKOFF,
    worker: HandleWorker | None = None,
    abandoned: Callable[[int], None] | None = None,
    keep: tuple[object, ...] = (),
    retries: collections.Counter[str] | None = None,
) -> None:
    """Like :func:`call`, but backs off with ``asyncio.sleep`` so the loop keeps running.

    With a ``worker``, each attempt runs on the handle's worker thread with its deadline
    (see :class:`~haos.cluster.dss.corosync._worker.HandleWorker`): a corosync that does not
    answer raises :class:`CorosyncUnavailableError` instead of blocking the loop.
    ``abandoned`` gets the return code of an attempt that answered after its deadline;
    ``keep`` holds objects the C side reads through ``args`` (a payload), so that they outlive
    an attempt the caller stopped waiting for. Without a worker the call is made on the
    loop's thread (only for calls that cannot block). ``retries`` counts the TRY_AGAINs.
    ``args`` must stay valid across the awaits (ctypes objects owned by the caller).
    """
    delays = backoff.delays()
    name = _name(fn)

    def attempt(_keep: tuple[object, ...] = keep) -> int:  # the default holds ``keep``
        return int(fn(*args))

    while True:
        if worker is None:
            rc = attempt()
        else:
            rc = await worker.run(name, attempt, abandoned=abandoned)
        if rc != CS_ERR_TRY_AGAIN:
            check(name, rc)
            return
        delay = next(delays, None)
        if delay is None:
            raise error_for(name, rc, f"still busy after {backoff.attempts} attempts")
        count_try_again(name, retries)
        await asyncio.sleep(delay)


def cpg_name(group: str) -> CpgName:
    """A ``struct cpg_name`` for ``group`` (UTF-8, 1..128 bytes, no NUL terminator needed)."""
    raw = group.encode()
    if not 0 < len(raw) <= CPG_MAX_NAME_LENGTH:
        raise UsageError(f"CPG group name must be 1..{CPG_MAX_NAME_LENGTH} bytes: {group!r}")
    return CpgName(len(raw), raw)
