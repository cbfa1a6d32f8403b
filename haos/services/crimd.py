"""CRIM + CEC as an HA service: active on the CMM master, hot standby on the vice-master.

One :class:`AvailabilityService` runs on every node. It follows the CMM's notices:

* this node is the **master** → ACTIVE: every event (CMM NodeJoined/NodeLeft, and
  :meth:`AvailabilityService.submit` / :meth:`AvailabilityService.report` for component and
  operator events) goes through the pure policies (:class:`Brain`: the CEC, then the CRIM's
  ``decide``). The new state is written to checkpoint ``crim``, section ``state``, with
  ``sync=True`` **before** the decisions' actions go to the :class:`ActionSink` (safety rule:
  a standby never misses a decision whose actions ran);
* the **vice-master** → STANDBY: holds a replica of the checkpoint, so synchronous writes wait
  for it;
* any other node → IDLE: holds nothing. Without quorum (QuorumLost, Demote) nothing is decided:
  an active master steps down to STANDBY. A holder keeps its replica until the cluster is
  quorate with a master and a vice-master that are other nodes, so a cluster-wide quorum loss
  does not lose the state.

Take-over: when the master is lost the CMM makes the vice-master master; its service reads the
checkpoint, restores the CRIM state and the CEC history, and continues with the next sequence
number — decisions up to the checkpointed one are never re-emitted. The old master's NodeLeft
(published by the CMM after fencing) is then decided like any other. Membership notices that
arrived while not active are reconciled on take-over (NodeJoined/NodeLeft for every node whose
CRIM membership differs from the CMM's), which is a no-op when the old master decided them.

Bootstrap vs. refusal: a node becomes active *without* a checkpoint (from the initial state)
only when no checkpoint exists and this is the first master this service has ever seen
(cluster formation). Otherwise — a take-over by a node that never got the checkpoint — it
**refuses**: it stays passive, logs the error, :attr:`AvailabilityService.refusal` says why,
and ``submit``/``report`` raise :class:`~haos.errors.UnavailableError`. Inventing an initial
state there would re-place every service and could run two primaries; an operator (or a later
master change to a synced node) resolves it.

News: each decision's event records (role changes, recoveries, node events, operator
commands' outcomes, outages; :mod:`haos.services.crimnews`) are stored with the state, then
posted to the :class:`NewsSink` (CES, to every node) after the actions were handed over. A
new active posts the records of the decision it restored again before deciding anything: its
predecessor may have died before posting them, and nodes that have them drop the duplicates
(:class:`~haos.cluster.dss.events.record.EventRing`). The ASR's incidents are part of the
stored state too, so availability figures survive a take-over.

At most once: the sink gets each decision's sequence number. A master that dies between the
checkpoint write and the sink leaves that last decision's actions unexecuted; the new active
does not re-emit them (it cannot know whether they ran).

The clock must be one the nodes share (wall-clock time kept in step by NTP/PTP,
:func:`haos.clock.wall_now`), not ``time.monotonic``: recovery deadlines and probation windows
are stored in the checkpoint as absolute times and read on another node after a take-over. The
CMM dates a NodeLeft (when the node was last seen) on this node's monotonic clock; it is
converted to wall-clock time here, as it arrives, so the outage it starts is dated right. A
corrupt or foreign checkpoint also makes the new master refuse (with the ModelError's text).

Mastership epochs: before it restores or orders anything, a service that becomes active
claims a new epoch (:class:`EpochSource`, in production the repository: unique and increasing
across the cluster's life). Every batch of orders names it, and nodes refuse orders of an older
epoch than the newest they saw, so a superseded master's orders are never applied, and a
service restored after a whole-cluster restart is obeyed even where its sequence numbers are
lower than those the nodes hold.

Acting only as the master: mastership is checked against the membership service's live view
(``still_master``), not only against the notices read so far. A take-over is abandoned at its
next step once mastership moved away, and a decision is neither stored nor carried out unless
this node is still the quorate master: it steps down instead (standby, keeping its replica).

A failed checkpoint write stops the service (``run`` raises FatalError): without a stored
state no action may run, and a master that cannot write must not go on deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from haos import trace
from haos.clock import MonoTime, WallTime, mono_now
from haos.cluster.cec.policy import Correlation
from haos.cluster.cmm.model import (
    Demote,
    MasterChanged,
    Publish,
    QuorumLost,
    QuorumRegained,
    SelfFence,
    ViceMasterChanged,
)
from haos.cluster.cmm.service import Notice
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.checkpoint import Checkpoint, CheckpointService, Role
from haos.cluster.dss.events.record import Record
from haos.config.model import CorrelationPolicy
from haos.errors import FatalError, HaosError, ModelError, UnavailableError
from haos.model.reports import ErrorReport
from haos.services.crimbrain import Brain, membership_fixes
from haos.services.epochs import CountingEpochs

__all__ = [  # Brain and membership_fixes live in crimbrain; importable from here too
    "CHECKPOINT",
    "SECTION",
    "ActionSink",
    "AvailabilityService",
    "Brain",
    "EpochSource",
    "LogSink",
    "NewsSink",
    "NoticeSource",
    "ServiceRole",
    "Settings",
    "membership_fixes",
]

log = logging.getLogger(__name__)

CHECKPOINT = "crim"
SECTION = "state"


# ---------------------------------------------------------------------------- adapters


class ActionSink(Protocol):
    """Carries out decided actions (the executor). Called only after the state is stored."""

    async def carry_out(self, seq: int, decision: Decision) -> None:
        """Execute ``decision.actions`` in order. ``seq`` increases by one per decision and
        is never handed out twice in the cluster, so it can key idempotent execution."""
        ...

    def resync(self, seq: int, crim: CrimState, epoch: int = 0) -> None:
        """Make every node's components match ``crim`` (called after a take-over, so a
        decision cut short by the old master is carried out again). Every batch from now on
        names ``epoch``, the mastership of the service that took over."""
        ...


class EpochSource(Protocol):
    async def claim(self, node_id: int, at_least: int) -> int:
        """A mastership epoch larger than every one claimed before and than ``at_least``;
        UnavailableError when none can be claimed now."""
        ...


class LogSink:
    """An :class:`ActionSink` that only logs: for a node daemon without an executor yet."""

    async def carry_out(self, seq: int, decision: Decision) -> None:
        for action in decision.actions:
            log.info("decision %d action: %s", seq, action)

    def resync(self, seq: int, crim: CrimState, epoch: int = 0) -> None:
        log.info("resync at decision %d, epoch %d", seq, epoch)


class NewsSink(Protocol):
    """Takes the event records of committed decisions to every node (CES in a daemon)."""

    def post(self, records: Sequence[Record]) -> None:
        """Queue ``records`` for publication, in order; returns at once, never raises."""
        ...


class NoticeSource(Protocol):
    """The CMM's notices in order; ``CmmService.listen()``'s queue is one."""

    async def get(self) -> Notice: ...


class _Abandoned(UnavailableError):
    """Mastership moved away during a take-over."""


class ServiceRole(enum.Enum):
    IDLE = "idle"
    STANDBY = "standby"
    ACTIVE = "active"
    REFUSED = "refused"  # master, but no checkpoint to continue from

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Settings:
    """What the service needs to know: this node, the topology and the CEC's policy.

    ``auto_tick``: decide Tick by itself when a deadline is due (off in tests that feed
    Tick explicitly, so decisions depend on the events alone).
    """

    node_id: int
    topo: Topology
    correlation: CorrelationPolicy = field(default_factory=CorrelationPolicy)
    auto_tick: bool = True
    # Keep the checkpoint on disk too (the checkpoint service's durable store): after a power
    # loss of the whole cluster the service continues from its last decision.
    persistent: bool = False


# ---------------------------------------------------------------------------- the service


class AvailabilityService:
    """See the module docstring. ``run()`` until cancelled; one per node."""

    def __init__(
        self,
        settings: Settings,
        crc: CheckpointService,
        notices: NoticeSource,
        sink: ActionSink,
        clock: Callable[[], WallTime],
        view: Callable[[], Collection[int]] = frozenset,
        *,
        epochs: EpochSource | None = None,
        still_master: Callable[[], bool] | None = None,
        monotonic: Callable[[], MonoTime] = mono_now,
        news: NewsSink | None = None,
    ) -> None:
        """``clock``: the CRIM's, wall-clock time (see the module docstring). ``monotonic``:
        this node's monotonic clock, on which the CMM dates its notices. ``view``: the node
        ids the membership service sees now; a new master waits until the checkpoint
        service's view has them all and its directory settled before it opens the
        checkpoint (as master or vice-master). ``epochs``: where mastership epochs are
        claimed (the repository in a daemon; a counter of this process by default).
        ``still_master``: whether the membership service, live, has this node as the quorate
        master (by default: as the notices read so far say). ``news``: where the event
        records of decisions go (nowhere by default)."""
        self._s = settings
        self._view = view
        self._crc = crc
        self._notices = notices
        self._sink = sink
        self._clock = clock
        self._monotonic = monotonic
        self._epochs: EpochSource = epochs if epochs is not None else CountingEpochs()
        self._live_master = still_master
        self._news = news
        self.role = ServiceRole.IDLE
        self.brain: Brain | None = None
        self.refusal: str | None = None
        self.took_over_at: WallTime | None = None  # when the last activation finished
        # The decision the last activation continued from (None: it started the cluster's
        # initial state).
        self.restored_at: int | None = None
        self._ckpt: Checkpoint | None = None
        self._master: int | None = None
        self._vice: int | None = None
        self._quorate = True
        self._seen_master = False
        self._members: set[str] = set()  # CMM-admitted nodes (NodeJoined minus NodeLeft)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._role_changed = asyncio.Condition()

    # -- API ---------------------------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        return self._s.topo

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_notices())
            if self._s.auto_tick:
                tasks.create_task(self._ticker())

    async def submit(self, event: ev.Event) -> Decision:
        """Decide a component or operator event; returns once its actions were handed over.

        UnavailableError unless this node is active (the caller retries at the new master).
        """
        async with self._lock:
            brain = self._require_active()
            decision = brain.decide(event, self._clock())
            await self._commit([decision])
            return decision

    async def report(self, report: ErrorReport) -> Correlation:
        """An error report: correlated by the CEC, what it forwards decided by the CRIM."""
        async with self._lock:
            brain = self._require_active()
            correlation, decisions = brain.report(report, self._clock())
            await self._commit(decisions)
            return correlation

    async def tick(self) -> list[Decision]:
        """Decide what is due now (CEC holds, CRIM recovery deadlines); run by itself with
        ``auto_tick``. UnavailableError unless active."""
        async with self._lock:
            brain = self._require_active()
            decisions = brain.tick(self._clock())
            await self._commit(decisions)
            return decisions

    async def wait_role(self, role: ServiceRole, *, left: bool = False) -> None:
        """Return once the service is in ``role`` (``left``: in any other); callers bound it
        with a timeout."""
        async with self._role_changed:
            await self._role_changed.wait_for(lambda: (self.role is role) is not left)

    # -- notices -----------------------------------------------------------------------------

    async def _follow_notices(self) -> None:
        retry: float | None = None
        while True:
            if retry is None:
                notice = await self._notices.get()
            else:
                try:  # a role change failed for a passing reason: try again, or on news
                    async with asyncio.timeout(retry):
                        notice = await self._notices.get()
                except TimeoutError:
                    notice = None
            try:
                async with self._lock:
                    if notice is not None:
                        await self._on_notice(notice)
                    else:
                        await self._follow_role()
                retry = None
            except UnavailableError as e:
                if self.role is ServiceRole.ACTIVE:
                    raise  # the active holder never drops its replica: that could lose state
                # E.g. the checkpoint closed while opening because the view changed again:
                # transient on a forming cluster; the daemon must not die of it.
                log.warning("availability service on node %d: %s; retrying", self._s.node_id, e)
                await self._fall_back()
                retry = 0.2

    async def _on_notice(self, notice: Notice) -> None:
        if isinstance(notice, Demote | SelfFence):
            self._quorate = False
        elif isinstance(notice, Publish):
            event = notice.event
            if isinstance(event, MasterChanged):
                self._master = event.new
            elif isinstance(event, ViceMasterChanged):
                self._vice = event.new
            elif isinstance(event, QuorumLost):
                self._quorate = False
            elif isinstance(event, QuorumRegained):
                self._quorate = True
            elif isinstance(event, ev.NodeJoined):
                await self._membership(event)
            elif isinstance(event, ev.NodeLeft):
                # Dated on this node's monotonic clock by the CMM: the CRIM keeps wall-clock
                # time (its state outlives this node), and outages are dated from it.
                await self._membership(event.on_wall_clock(self._clock(), self._monotonic()))
        await self._follow_role()

    async def _membership(self, event: ev.NodeJoined | ev.NodeLeft) -> None:
        if isinstance(event, ev.NodeJoined):
            self._members.add(event.node)
        else:
            self._members.discard(event.node)
        if self.role is ServiceRole.ACTIVE and self.brain is not None:
            await self._commit([self.brain.decide(event, self._clock())])

    async def _fall_back(self) -> None:
        """After a failed role change: keep a replica this node holds (it may be the only
        one), as a standby; else hold nothing."""
        self.brain = None
        ckpt = self._ckpt
        if ckpt is not None and not ckpt.closed:
            try:
                if ckpt.role is not Role.STANDBY:
                    await ckpt.set_role(Role.STANDBY)
            except HaosError as e:
                log.warning("checkpoint not kept as a standby: %s", e)
            else:
                await self._set_role(ServiceRole.STANDBY)
                return
        await self._drop_checkpoint()
        await self._set_role(ServiceRole.IDLE)

    def _still_master(self) -> bool:
        if self._live_master is not None:
            return self._live_master()
        return self._quorate and self._master == self._s.node_id

    def _check_master(self, step: str) -> None:
        if not self._still_master():
            raise _Abandoned(
                f"node {self._s.node_id} is no longer the quorate master ({step});"
                " take-over abandoned"
            )

    async def _follow_role(self) -> None:
        want = self._wanted_role()
        if want is not ServiceRole.ACTIVE and self.role is ServiceRole.ACTIVE:
            # Stop deciding at once, before the checkpoint's role follows (which waits on
            # the group): another node is master now, or none is.
            self.brain = None
            await self._set_role(ServiceRole.STANDBY)
        if want is ServiceRole.ACTIVE:
            if self.role not in (ServiceRole.ACTIVE, ServiceRole.REFUSED):
                try:
                    await self._activate()
                except _Abandoned as e:
                    log.warning("%s", e)
                    await self._fall_back()
        elif want is ServiceRole.STANDBY:
            ckpt = self._ckpt
            held = ckpt is not None and not ckpt.closed and ckpt.role is Role.STANDBY
            if self.role is not ServiceRole.STANDBY or not held:
                await self._standby()
        elif self.role is not ServiceRole.IDLE:
            await self._idle()
        if self._master is not None:
            self._seen_master = True

    def _wanted_role(self) -> ServiceRole:
        me = self._s.node_id
        if self._quorate and self._master == me:
            return ServiceRole.ACTIVE
        if self._vice == me:
            return ServiceRole.STANDBY
        # A holder keeps its replica until quorum is back and both roles are taken by others
        # that hold the checkpoint themselves: if every holder closed while the cluster was
        # without quorum or a master -- or between the CMM's MasterChanged and
        # ViceMasterChanged, before the new pair opened it -- the state would be lost.
        held = self.role in (ServiceRole.ACTIVE, ServiceRole.STANDBY)
        holders = self._crc.directory.synced(CHECKPOINT)  # a stale replica holds nothing
        settled = (
            self._quorate
            and self._master is not None
            and self._vice is not None
            and self._master in holders
            and self._vice in holders
        )
        return ServiceRole.STANDBY if held and not settled else ServiceRole.IDLE

    async def _activate(self) -> None:
        started = self._monotonic()
        self._check_master("before opening the checkpoint")
        ckpt = await self._open(Role.ACTIVE)
        self._check_master("after opening the checkpoint")
        raw = ckpt.read(SECTION)
        try:
            brain = self._restore(raw)
        except ModelError as e:
            self.refusal = f"node {self._s.node_id} is master but cannot continue: {e}"
            log.error("%s", self.refusal)
            await self._set_role(ServiceRole.REFUSED)
            return
        # The epoch is claimed and stored before anything is ordered under it.
        brain.epoch = await self._epochs.claim(self._s.node_id, brain.epoch)
        self._check_master(f"after claiming epoch {brain.epoch}")
        await ckpt.write(SECTION, brain.encode(), sync=True)
        self._check_master(f"after storing epoch {brain.epoch}")
        self.restored_at = None if raw is None else brain.seq
        how = "started from the initial state" if raw is None else f"restored at {brain.seq}"
        self.brain, self.refusal = brain, None
        # The full desired state first, under the new epoch; then what changed meanwhile.
        self._sink.resync(brain.seq, brain.crim, brain.epoch)
        self._post_news(brain)  # the restored decision's, again: duplicates are dropped
        fixes = membership_fixes(brain.crim, self._members)
        await self._commit([brain.decide(e, self._clock()) for e in fixes])
        self.took_over_at = self._clock()
        log.info(
            "availability service active on node %d: %s, epoch %d, in %.1f ms",
            self._s.node_id,
            how,
            brain.epoch,
            (self._monotonic() - started) * 1000.0,
        )
        await self._set_role(ServiceRole.ACTIVE)

    def _restore(self, raw: bytes | None) -> Brain:
        """The state to continue from; ModelError when there is none to trust."""
        if raw is not None:
            return Brain.decode(self._s.topo, self._s.correlation, raw, self._clock())
        if self._seen_master:
            raise ModelError(
                f"it holds no '{CHECKPOINT}' checkpoint: it was never a synced standby;"
                " refusing to invent a state (operator action needed)"
            )
        # cluster formation: availability is measured from now on
        return Brain.initial(self._s.topo, self._s.correlation, self._clock())

    async def _standby(self) -> None:
        self.brain = None
        await self._open(Role.STANDBY)
        log.info("availability service standby on node %d", self._s.node_id)
        await self._set_role(ServiceRole.STANDBY)

    async def _idle(self) -> None:
        self.brain = None
        self.refusal = None
        await self._drop_checkpoint()
        await self._set_role(ServiceRole.IDLE)

    async def _drop_checkpoint(self) -> None:
        if self._ckpt is not None:
            ckpt, self._ckpt = self._ckpt, None
            with contextlib.suppress(HaosError):
                await ckpt.close()

    async def _open(self, role: Role) -> Checkpoint:
        if self._ckpt is None or self._ckpt.closed:
            # A node that just joined (a restarted one, say) may be made master or vice-master
            # before the checkpoint directory of the nodes it joined reached it (the CRC's view
            # may lag the CMM's): opening then would find no checkpoint, and invent an initial
            # state beside the real one. The CRC waits until its view covers the CMM's.
            self._ckpt = await self._crc.open(
                CHECKPOINT, role, covering=self._view(), persistent=self._s.persistent
            )
        elif self._ckpt.role is not role:
            await self._ckpt.set_role(role)
        return self._ckpt

    async def _set_role(self, role: ServiceRole) -> None:
        if self.role is ServiceRole.ACTIVE and role is not ServiceRole.ACTIVE:
            log.info("availability service on node %d no longer active", self._s.node_id)
        async with self._role_changed:
            self.role = role
            self._role_changed.notify_all()

    # -- deciding ----------------------------------------------------------------------------

    def _require_active(self) -> Brain:
        if self.role is not ServiceRole.ACTIVE or self.brain is None:
            why = f": {self.refusal}" if self.refusal else ""
            raise UnavailableError(
                f"the availability service on node {self._s.node_id} is {self.role}{why}"
            )
        return self.brain

    async def _commit(self, decisions: list[Decision]) -> None:
        """Store the state, then hand the decisions' actions over (the safety rule)."""
        brain, ckpt = self.brain, self._ckpt
        assert brain is not None and ckpt is not None
        if not self._still_master():
            # Mastership moved while this was being decided: another service orders now.
            await self._fall_back()
            raise UnavailableError(
                f"node {self._s.node_id} is no longer the quorate master: decision"
                f" {brain.seq} of epoch {brain.epoch} dropped, stepped down"
            )
        trace.point("crim.decided", brain.seq)
        try:
            await ckpt.write(SECTION, brain.encode(), sync=True)
        except HaosError as e:
            raise FatalError(f"availability checkpoint not written, stopping: {e}") from e
        trace.point("crim.commit", brain.seq)
        if not self._still_master():
            # Lost while the state was written: the stored decisions are the next master's
            # to carry out (a take-over hands every node its full desired state), not ours.
            await self._fall_back()
            raise UnavailableError(
                f"node {self._s.node_id} stopped being the quorate master while storing"
                f" decision {brain.seq} of epoch {brain.epoch}: not carried out, stepped down"
            )
        first = brain.seq - len(decisions) + 1
        for i, decision in enumerate(decisions):
            log.info("decision %d: %s", first + i, decision.reason)
            await self._sink.carry_out(first + i, decision)
        self._post_news(brain)
        self._changed.set()

    def _post_news(self, brain: Brain) -> None:
        records = brain.take_news()
        if records and self._news is not None:
            self._news.post(records)

    async def _ticker(self) -> None:
        """Decide Tick (CEC releases, CRIM escalations) when the earliest deadline is due."""
        while True:
            self._changed.clear()
            deadline = self.brain.next_deadline() if self.brain is not None else None
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
                continue
            async with self._lock:
                brain = self.brain
                if self.role is not ServiceRole.ACTIVE or brain is None:
                    continue
                due = brain.next_deadline()
                if due is not None and due <= self._clock():  # not woken early by a jump
                    try:
                        await self._commit(brain.tick(self._clock()))
                    except UnavailableError as e:
                        log.warning("%s", e)
