"""What each node's corosync says, as events: one watcher thread per node, one shared journal.

A :class:`NodeWatcher` thread moves itself into its node's network namespace (corosync's IPC
sockets are abstract unix sockets, private to a network namespace), runs an asyncio loop
there and holds two connections to that node's corosync through the haos binding:

* a CPG handle joined to the group ``haos-harness``: its totem callback reports each ring
  corosync installs once CPG has synchronised on it (``TotemRing``: ring id and member node
  ids). A ring id only ever grows, so a new ring id is a membership change even when the
  members came out the same (a token loss and re-form); nothing is polled, so no change
  slips between two polls. One caveat, measured: a ring superseded while CPG is still
  synchronising is never reported (a thawed node's return installed 3 rings on its peers,
  2 reported). The complete count is totem's own: ``Cluster.srp_stats`` (``gather_entered``
  counts every run of the membership protocol, ``operational_entered`` every ring), which
  tests that assert "no change at all" check as well.
* a votequorum handle tracking changes: whether the node's partition is quorate (votequorum
  reports after every ring CPG reports, also when the verdict did not change).

Each report becomes an :class:`Observation` stamped with ``time.monotonic()`` in the
:class:`Journal`, which also keeps every node's latest :class:`View` and wakes waiters.

Contract: the watcher never calls into corosync except to connect and to close, so a frozen
corosync cannot block it; a frozen node's view is simply stale. Closing a connection to a
*frozen* corosync would block (libqb waits without a timeout), which is why the cluster kills
corosync before it disconnects a watcher.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from haos.cluster.dss.corosync.cpg import CpgGroup, RingId, TotemRing
from haos.cluster.dss.corosync.quorum import QuorumChanged, VoteQuorum
from haoslab.harness.errors import HarnessError
from haoslab.harness.netns import entered

log = logging.getLogger(__name__)

WATCH_GROUP = "haos-harness"


class Kind(enum.Enum):
    CONNECTED = "connected"
    RING = "ring"
    QUORUM = "quorum"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class Observation:
    """One report from one node's corosync (or the loss of the connection to it).

    ``initial`` marks the ring a fresh connection is told about: the current ring, not a change.
    """

    node: int
    at: float  # time.monotonic() when it arrived
    kind: Kind
    ring_id: RingId | None = None
    members: frozenset[int] = frozenset()
    quorate: bool | None = None
    initial: bool = False

    @property
    def is_membership_change(self) -> bool:
        return self.kind is Kind.RING and not self.initial


@dataclass(frozen=True)
class View:
    """A node's latest view. Not connected (corosync dead or not started): no members, inquorate."""

    node: int
    connected: bool = False
    ring_id: RingId | None = None
    members: frozenset[int] = frozenset()
    quorate: bool = False
    since: float = field(default_factory=time.monotonic)

    def updated(self, obs: Observation) -> View:
        match obs.kind:
            case Kind.CONNECTED:
                return View(obs.node, connected=True, since=obs.at)
            case Kind.RING:
                return replace(self, ring_id=obs.ring_id, members=obs.members, since=obs.at)
            case Kind.QUORUM:
                return replace(self, quorate=bool(obs.quorate), since=obs.at)
            case Kind.DISCONNECTED:
                return View(obs.node, since=obs.at)


class Journal:
    """Every observation of every node in arrival order, and each node's latest view.

    Thread-safe. :meth:`wait_change` lets a waiter sleep until something new arrives.
    """

    def __init__(self, nodes: tuple[int, ...]) -> None:
        self._cond = threading.Condition()
        self._log: list[Observation] = []
        self._views = {n: View(n) for n in nodes}
        self._generation = 0

    def record(self, obs: Observation) -> None:
        with self._cond:
            self._log.append(obs)
            self._views[obs.node] = self._views[obs.node].updated(obs)
            self._generation += 1
            self._cond.notify_all()

    @property
    def generation(self) -> int:
        """Grows with every observation."""
        with self._cond:
            return self._generation

    def view(self, node: int) -> View:
        with self._cond:
            return self._views[node]

    def views(self) -> dict[int, View]:
        with self._cond:
            return dict(self._views)

    def since(self, t: float) -> list[Observation]:
        """Observations that arrived at or after monotonic time ``t``."""
        with self._cond:
            return [o for o in self._log if o.at >= t]

    def wait_change(self, generation: int, timeout: float) -> None:
        """Return once an observation newer than ``generation`` exists, or after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != generation, timeout)


class Recorder(Protocol):
    def __call__(
        self,
        kind: Kind,
        *,
        ring_id: RingId | None = ...,
        members: frozenset[int] = ...,
        quorate: bool | None = ...,
        initial: bool = ...,
    ) -> None: ...


class NodeWatcher:
    """The watcher thread of one node (see the module docstring)."""

    def __init__(self, node: int, netns: str, journal: Journal) -> None:
        self.node = node
        self._netns = netns
        self._journal = journal
        self._thread = threading.Thread(target=self._main, name=f"watch-{netns}", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._session = 0  # observations of older sessions are dropped

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout) or self._loop is None:
            raise HarnessError(f"watcher of node {self.node} did not start: {self._error}")

    def connect(self, timeout: float = 10.0) -> None:
        """Connect to the node's (ready) corosync; its first ring and quorum follow as events."""
        self._session += 1
        future = self._submit(self._connect(self._session))
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise HarnessError(f"watcher of node {self.node} could not connect") from None
        except Exception as e:
            raise HarnessError(f"watcher of node {self.node} could not connect: {e}") from e

    def disconnect(self, timeout: float = 10.0) -> None:
        """Forget the node's corosync (after it was killed): the view turns to "not connected"."""
        self._session += 1
        self._journal.record(Observation(self.node, time.monotonic(), Kind.DISCONNECTED))
        if self._loop is not None and self._thread.is_alive():
            self._submit(self._drop_session()).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connections and end the thread. Kill the node's corosync first."""
        self._session += 1
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self._submit(self._drop_session()).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise HarnessError(f"watcher thread of node {self.node} did not end")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the watcher thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            with entered(self._netns):  # this thread only; it ends in its own namespace
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._started.set()
                try:
                    loop.run_forever()
                finally:
                    loop.close()
        except BaseException as e:  # never let a thread die with an unreported error
            self._error = e
            log.exception("watcher of node %s failed", self.node)
        finally:
            self._started.set()

    def _submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _drop_session(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _connect(self, session: int) -> None:
        await self._drop_session()
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run_session(session, opened))
        await opened

    async def _run_session(self, session: int, opened: asyncio.Future[None]) -> None:
        record = self._recorder(session)
        try:
            async with VoteQuorum.open() as vq, CpgGroup.open(WATCH_GROUP) as cpg:
                record(Kind.CONNECTED)
                opened.set_result(None)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._pump_rings(cpg, record))
                    tasks.create_task(self._pump_quorum(vq, record))
        except Exception as e:  # a broken connection: corosync died or went away
            if not opened.done():
                opened.set_exception(e)
            else:
                log.debug("watcher of node %s lost corosync: %s", self.node, e)
        finally:
            if not opened.done():
                opened.cancel()
            record(Kind.DISCONNECTED)

    def _recorder(self, session: int) -> Recorder:
        def record(
            kind: Kind,
            *,
            ring_id: RingId | None = None,
            members: frozenset[int] = frozenset(),
            quorate: bool | None = None,
            initial: bool = False,
        ) -> None:
            if session == self._session:
                at = time.monotonic()
                obs = Observation(self.node, at, kind, ring_id, members, quorate, initial)
                self._journal.record(obs)

        return record

    @staticmethod
    async def _pump_rings(cpg: CpgGroup, record: Recorder) -> None:
        initial = True
        async for event in cpg.events:
            if isinstance(event, TotemRing):
                record(
                    Kind.RING,
                    ring_id=event.ring_id,
                    members=frozenset(event.members),
                    initial=initial,
                )
                initial = False

    @staticmethod
    async def _pump_quorum(vq: VoteQuorum, record: Recorder) -> None:
        async for event in vq.events:
            if isinstance(event, QuorumChanged):
                record(Kind.QUORUM, quorate=event.quorate)
