"""votequorum: is this partition quorate, with how many votes, and quorum change events.

Use::

    async with VoteQuorum.open() as vq:
        info = await vq.info()               # this node's view: quorate, votes, flags
        nodes = await vq.nodes()             # every known node with its state and votes
        async for event in vq.events: ...    # QuorumChanged, NodeListChanged, ...

Contract, from corosync's votequorum service:

* :meth:`VoteQuorum.open` starts tracking with ``CS_TRACK_CURRENT | CS_TRACK_CHANGES``:
  corosync sends the current node list and quorum state at once, then every change. The
  events are queued on :attr:`VoteQuorum.events` in dispatch order.
* ``quorate`` is the partition's verdict; ``two_node`` implies ``wait_for_all``: a node
  restarted alone stays inquorate until it has seen its peer once.
* Calls run on the handle's worker thread, each with a deadline (``call_timeout``): a stopped
  corosync gives :class:`~haos.cluster.dss.corosync.errors.CorosyncUnavailableError`
  (CS_ERR_TIMEOUT) in time and breaks the handle (see :mod:`.cpg`); a corosync that is gone
  gives the same error with CS_ERR_LIBRARY.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from haos.cluster.dss.corosync import _lib
from haos.cluster.dss.corosync._handle import CorosyncHandle
from haos.cluster.dss.corosync._lib import DEFAULT_BACKOFF, Backoff
from haos.cluster.dss.corosync._worker import DEFAULT_CALL_TIMEOUT
from haos.cluster.dss.corosync.cpg import RingId
from haos.cluster.dss.corosync.errors import CorosyncError, CsError

log = logging.getLogger(__name__)

LOCAL_NODE = 0  # node id 0 (VOTEQUORUM_QDEVICE_NODEID) asks votequorum_getinfo about this node


class NodeState(IntEnum):
    """``VOTEQUORUM_NODESTATE_*``."""

    UNKNOWN = 0  # not a corosync value: stands in for a state this binding does not know
    MEMBER = 1
    DEAD = 2
    LEAVING = 3


class QuorumFlags(IntFlag):
    """``VOTEQUORUM_INFO_*`` bits of ``votequorum_info.flags``."""

    TWONODE = 1
    QUORATE = 2
    WAIT_FOR_ALL = 4
    LAST_MAN_STANDING = 8
    AUTO_TIE_BREAKER = 16
    ALLOW_DOWNSCALE = 32
    QDEVICE_REGISTERED = 64
    QDEVICE_ALIVE = 128
    QDEVICE_CAST_VOTE = 256
    QDEVICE_MASTER_WINS = 512


def _state(raw: int) -> NodeState:
    try:
        return NodeState(raw)
    except ValueError:
        return NodeState.UNKNOWN


@dataclass(frozen=True)
class VoteInfo:
    """One ``votequorum_getinfo`` answer: a node's votes and the cluster-wide numbers.

    ``quorum`` is the number of votes needed; ``total_votes`` counts the members' votes;
    ``highest_expected`` is the largest ``expected_votes`` any member reported.
    """

    node_id: int
    state: NodeState
    votes: int
    expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    flags: QuorumFlags
    qdevice_votes: int
    qdevice_name: str

    @property
    def quorate(self) -> bool:
        return QuorumFlags.QUORATE in self.flags

    @property
    def two_node(self) -> bool:
        return QuorumFlags.TWONODE in self.flags

    @property
    def wait_for_all(self) -> bool:
        return QuorumFlags.WAIT_FOR_ALL in self.flags


@dataclass(frozen=True)
class QuorumNode:
    """A node in a quorum notification."""

    node_id: int
    state: NodeState


@dataclass(frozen=True)
class NodeVotes:
    """A known node with its state and the votes it holds."""

    node_id: int
    state: NodeState
    votes: int
    expected_votes: int


@dataclass(frozen=True)
class QuorumChanged:
    """The partition became (or still is) quorate or not; every node votequorum knows."""

    quorate: bool
    nodes: tuple[QuorumNode, ...]


@dataclass(frozen=True)
class NodeListChanged:
    """A new ring formed with these member nodes."""

    ring_id: RingId
    members: tuple[int, ...]


@dataclass(frozen=True)
class ExpectedVotesChanged:
    """``expected_votes`` was changed at run time (``corosync-quorumtool -e``)."""

    expected_votes: int


QuorumEvent = QuorumChanged | NodeListChanged | ExpectedVotesChanged


class VoteQuorum(CorosyncHandle[QuorumEvent]):
    """One votequorum handle. Open it with :meth:`open`.

    Use it from the thread running its event loop; its library calls run on its own worker
    thread (see :mod:`.cpg` and :mod:`._worker`).
    """

    SERVICE = "votequorum"
    PREFIX = "votequorum"

    def __init__(
        self, *, backoff: Backoff = DEFAULT_BACKOFF, call_timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        """Prepare a handle; :meth:`open` connects it. Does no I/O.

        ``call_timeout``: seconds each library call may take before the handle is declared
        broken (:class:`CorosyncUnavailableError`, CS_ERR_TIMEOUT).
        """
        super().__init__(_lib.votequorum(), backoff, call_timeout)
        self._known: tuple[QuorumNode, ...] | None = None
        self._known_changed = asyncio.Event()
        # libvotequorum keeps these C function pointers; they must outlive the handle.
        self._callbacks = _lib.VotequorumCallbacks(
            _lib.VqQuorumNotifyFn(self._on_quorum),
            _lib.VqExpectedVotesNotifyFn(self._on_expected_votes),
            _lib.VqNodelistNotifyFn(self._on_nodelist),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, *, backoff: Backoff = DEFAULT_BACKOFF, call_timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> AsyncIterator[VoteQuorum]:
        """Connect, dispatch on the running loop and track changes; close on exit.

        Raises :class:`CorosyncUnavailableError` if corosync is not reachable or does not
        answer within ``call_timeout``.
        """
        self = cls(backoff=backoff, call_timeout=call_timeout)
        try:
            await self.initialize()
            self.attach(asyncio.get_running_loop())
            await self.trackstart()
            yield self
        finally:
            await self.aclose()

    async def initialize(self) -> None:
        """``votequorum_initialize`` with the quorum, expected-votes and nodelist callbacks.

        Starts the worker thread, which inherits the calling thread's network namespace.
        """
        await self._connect(ctypes.byref(self._callbacks))

    async def trackstart(self) -> None:
        """Ask for the current state now and every change later."""
        await self._call(
            self._lib.votequorum_trackstart,
            self._live_handle(),
            0,
            _lib.CS_TRACK_CURRENT | _lib.CS_TRACK_CHANGES,
        )

    async def info(self, node_id: int = LOCAL_NODE) -> VoteInfo:
        """``votequorum_getinfo`` for ``node_id`` (default: this node).

        A node votequorum does not know raises CorosyncError CS_ERR_NOT_EXIST.
        """
        raw = _lib.VotequorumInfo()
        await self._call(
            self._lib.votequorum_getinfo, self._live_handle(), node_id, ctypes.byref(raw)
        )
        return VoteInfo(
            node_id=raw.node_id,
            state=_state(raw.node_state),
            votes=raw.node_votes,
            expected_votes=raw.node_expected_votes,
            highest_expected=raw.highest_expected,
            total_votes=raw.total_votes,
            quorum=raw.quorum,
            flags=QuorumFlags(raw.flags),
            qdevice_votes=raw.qdevice_votes,
            qdevice_name=raw.qdevice_name.decode(errors="replace"),
        )

    async def nodes(self, timeout: float = 5.0) -> tuple[NodeVotes, ...]:
        """Every node votequorum knows (members and dead ones), with their votes.

        The node ids come from the latest quorum notification: waits up to ``timeout``
        seconds for the first one after :meth:`trackstart`.
        """
        if self._known is None:
            async with asyncio.timeout(timeout):
                await self._known_changed.wait()
        assert self._known is not None
        result = []
        for node in self._known:
            try:
                info = await self.info(node.node_id)
            except CorosyncError as e:
                if e.cs_code != CsError.CS_ERR_NOT_EXIST:
                    raise
                continue  # left votequorum's list since the notification
            result.append(NodeVotes(node.node_id, info.state, info.votes, info.expected_votes))
        return tuple(result)

    # -- internals ---------------------------------------------------------------------------

    def _deliver(self, events: tuple[QuorumEvent, ...]) -> None:
        for event in events:
            if isinstance(event, QuorumChanged):
                self._known = event.nodes
                self._known_changed.set()
        super()._deliver(events)

    def _on_quorum(
        self,
        _handle: int,
        _context: int,
        quorate: int,
        count: int,
        nodes: ctypes._Pointer[_lib.VotequorumNode],
    ) -> None:
        self._emit(
            lambda: QuorumChanged(
                bool(quorate),
                tuple(QuorumNode(n.nodeid, _state(n.state)) for n in nodes[:count])
                if count
                else (),
            )
        )

    def _on_nodelist(
        self,
        _handle: int,
        _context: int,
        ring_id: _lib.VotequorumRingId,
        count: int,
        nodes: ctypes._Pointer[ctypes.c_uint32],
    ) -> None:
        self._emit(
            lambda: NodeListChanged(
                RingId(ring_id.nodeid, ring_id.seq), tuple(nodes[:count]) if count else ()
            )
        )

    def _on_expected_votes(self, _handle: int, _context: int, expected_votes: int) -> None:
        self._emit(lambda: ExpectedVotesChanged(expected_votes))
