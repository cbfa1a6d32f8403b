"""The CMM as an asyncio service: corosync's views and quorum in, the policy's actions out.

Thin by design -- every decision is :func:`~haos.cluster.cmm.policy.decide`'s:

* The membership view is the CMM's CPG group (:class:`~haos.cluster.dss.transport.GroupTransport`:
  one haos daemon per node, so a node whose daemon died is not a member); quorum comes from
  votequorum (:class:`QuorumSource`). Each change of either is fed as one
  :class:`~haos.cluster.cmm.model.ViewChanged`.
* :class:`~haos.cluster.cmm.model.Fence` runs the :class:`~haos.cluster.fencing.types.Fencer`
  in a task; the result is multicast on the group, so every member feeds the same result at
  the same point of the agreed order (and publishes NodeLeft in step).
* Publish, Demote and SelfFence go to every listener (:meth:`CmmService.listen`); SelfFence
  also fires the optional :class:`~haos.cluster.fencing.watchdog.SelfFencer`, which is
  petted each tick while the policy says this node may act.
* :meth:`CmmService.leave` announces this node's clean leave on the group
  (:class:`~haos.cluster.cmm.model.LeaveAnnounced`) and returns once the group delivered it
  back, in the agreed order: every member then holds it, and the departure that follows is
  not fenced. The caller must have stopped every component of this node first.
* If the group or votequorum breaks, the service feeds an empty inquorate view (so the
  node demotes), hands it to the listeners, and ends with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from haos.clock import MonoTime, mono_now
from haos.cluster.cmm.model import (
    Action,
    CmmConfig,
    CmmInput,
    CmmState,
    Demote,
    Fence,
    LeaveAnnounced,
    Publish,
    SelfFence,
    Tick,
    ViewChanged,
)
from haos.cluster.cmm.policy import decide, majority
from haos.cluster.cmm.wire import decode_message, encode_fence_result, encode_leave
from haos.cluster.dss.corosync.quorum import QuorumChanged, VoteQuorum
from haos.cluster.dss.transport import GroupTransport, Message, View
from haos.cluster.dss.wire import DropCounter, WireError
from haos.cluster.fencing.types import Fencer, FenceResult
from haos.cluster.fencing.watchdog import SelfFencer
from haos.errors import UnavailableError

log = logging.getLogger(__name__)

Notice = Publish | Demote | SelfFence


class QuorumSource(Protocol):
    """The partition's quorum verdict."""

    async def next_quorate(self) -> bool:
        """The verdict after the next change (the first call: the current one).

        Raises UnavailableError when the source broke.
        """
        ...


class VoteQuorumSource:
    """A :class:`QuorumSource` over an open :class:`VoteQuorum` handle."""

    def __init__(self, quorum: VoteQuorum) -> None:
        self._quorum = quorum

    async def next_quorate(self) -> bool:
        while True:
            event = await self._quorum.events.get()
            if isinstance(event, QuorumChanged):
                return event.quorate


class CmmService:
    """Runs the CMM policy for this node. See the module docstring."""

    def __init__(
        self,
        config: CmmConfig,
        transport: GroupTransport,
        quorum: QuorumSource,
        fencer: Fencer,
        *,
        self_fencer: SelfFencer | None = None,
        clock: Callable[[], MonoTime] = mono_now,
        tick: float = 0.25,
    ) -> None:
        self.config = config
        self._transport = transport
        self._quorum = quorum
        self._fencer = fencer
        self._self_fencer = self_fencer
        self._clock = clock
        self._tick = tick
        self.state = CmmState.initial(config)
        self.drops = DropCounter()
        self._members: frozenset[int] | None = None
        self._quorate = False
        self._listeners: list[asyncio.Queue[Notice]] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._left = asyncio.Event()  # this node's own LeaveAnnounced came back

    @property
    def master(self) -> int | None:
        return self.state.master

    @property
    def view(self) -> frozenset[int]:
        """The node ids of the CMM group's current view (empty before the first one)."""
        return self._members or frozenset()

    @property
    def vice_master(self) -> int | None:
        return self.state.vice_master

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Notice]]:
        """A queue of every Publish, Demote and SelfFence from now on, in order."""
        queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            yield queue
        finally:
            self._listeners.remove(queue)

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Run until cancelled, or until the group or votequorum breaks (raises).

        A cancelled service disarms the watchdog (clean stop); a failed one fires it.
        """
        if self._self_fencer is not None:
            try:
                self._self_fencer.start()
            except UnavailableError as e:
                if self._self_fencer.required:
                    raise
                # The default device taken (say, systemd's RuntimeWatchdogSec holds the only
                # watchdog): going on without it beats a daemon that restarts for ever.
                log.error(
                    "SELF-FENCING UNAVAILABLE: %s; this node will not reset itself when it"
                    " loses quorum (is its only watchdog held by systemd?)",
                    e,
                )
                self._self_fencer = None
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._read_group())
                tasks.create_task(self._read_quorum())
                tasks.create_task(self._ticker())
                if started is not None:
                    started.set()
        except BaseExceptionGroup as group:
            if self._self_fencer is not None:  # nobody decides any more: let the board reset
                self._self_fencer.fire(f"the CMM service failed: {group.exceptions[0]!r}")
            broken = group.subgroup(UnavailableError)
            if broken is not None and broken.exceptions:
                raise broken.exceptions[0] from group
            raise
        finally:
            self._tasks = None
            if self._self_fencer is not None:
                self._self_fencer.stop()

    def feed(self, event: CmmInput) -> None:
        """Decide on ``event`` now and carry out the actions."""
        decision = decide(self.config, self.state, event, self._clock())
        self.state = decision.state
        if decision.actions or isinstance(event, ViewChanged | FenceResult):
            log.info("cmm: %s", decision.reason)
        for action in decision.actions:
            self._act(action)

    async def leave(self, timeout: float) -> None:
        """Announce this node's clean leave and wait until the group delivered it back.

        Only for a node whose components are all stopped (see the module docstring).
        UnavailableError if the group cannot take it or it is not back within ``timeout``:
        then the peers may not have it, and will fence this node when it goes.
        """
        await self._transport.send(encode_leave(LeaveAnnounced(self.config.local)))
        try:
            async with asyncio.timeout(timeout):
                await self._left.wait()
        except TimeoutError:
            raise UnavailableError(
                f"the leave of {self.config.name(self.config.local)} was not delivered within"
                f" {timeout:g} s"
            ) from None

    # -- inputs ------------------------------------------------------------------------------

    async def _read_group(self) -> None:
        try:
            while True:
                event = await self._transport.next_event()
                if isinstance(event, View):
                    self._members = frozenset(event.members)
                    self._feed_view()
                elif isinstance(event, Message):
                    try:
                        message = decode_message(event.payload, event.sender)
                    except WireError as e:
                        self.drops.drop(str(e))
                        continue
                    self.feed(message)
                    if message == LeaveAnnounced(self.config.local):
                        self._left.set()
        except UnavailableError:
            self._lost("the CMM group broke")
            raise

    async def _read_quorum(self) -> None:
        try:
            while True:
                self._quorate = await self._quorum.next_quorate()
                self._feed_view()
        except UnavailableError:
            self._lost("votequorum broke")
            raise

    def _feed_view(self) -> None:
        if self._members is not None:
            quorate = self._quorate and majority(self.config, self._members)
            self.feed(ViewChanged(self._members, quorate))

    def _lost(self, why: str) -> None:
        log.error("cmm: %s: acting as an empty, inquorate partition", why)
        self._members, self._quorate = frozenset(), False
        self.feed(ViewChanged(frozenset(), False))

    async def _ticker(self) -> None:
        # A fixed period, not the policy's next deadline: the watchdog needs it anyway, and
        # retries and the self-fence deadline may be a period late.
        while True:
            await asyncio.sleep(self._tick)
            self.feed(Tick())
            if self._self_fencer is not None:
                self._self_fencer.observe(self.state.quorate, self._clock())

    # -- actions -----------------------------------------------------------------------------

    def _act(self, action: Action) -> None:
        if isinstance(action, Fence):
            assert self._tasks is not None, "Fence decided outside run()"
            self._tasks.create_task(self._fence(action))
            return
        if isinstance(action, SelfFence) and self._self_fencer is not None:
            self._self_fencer.fire(action.reason)
        for queue in self._listeners:
            queue.put_nowait(action)

    async def _fence(self, action: Fence) -> None:
        result = await self._fencer.fence(action.node, action.action)
        try:
            await self._transport.send(encode_fence_result(result))
        except UnavailableError as e:
            # Out of the group: nobody else can hear it; keep our own state honest.
            log.warning("cmm: cannot share the fence result of %s: %s", action.node.name, e)
            self.feed(result)
