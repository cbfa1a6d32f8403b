"""The CMM's policy core: ``decide(config, state, event, now) -> Decision``.

Pure: no I/O, no clock reads, no logging. The rules, each with a test:

* **Election.** The master and vice-master are a function of the current view alone: the
  configured members ordered by priority (higher first), then node id (lower first); none
  while the partition is not quorate. So every node given the same view elects the same
  master, whatever it saw before.
* **Wait for a peer.** Until this node has been in a quorate view together with another
  configured node since its state was made (the daemon started: ``synced_with_peer``), a
  view of fewer than all configured nodes counts as inquorate for it: no master, no fencing
  by this node. votequorum's ``wait_for_all`` (implied by ``two_node``) means the same, but
  its verdict and the CMM group's view arrive separately: a node booted alone that gets
  "quorate" (corosync saw the peer) before the group view with the peer would otherwise be
  master of a view of itself alone, and act on a stale picture of the cluster. The view
  with the peer is the CMM's own exchange: corosync delivers it to both nodes at the same
  point of the agreed order, and the election depends on the view alone.
* **Stale quorum.** A view counts as quorate only if votequorum says so *and* it holds a
  majority of the configured nodes (:func:`majority`; two-node clusters: either node).
* **Quorum loss.** When this node's partition loses quorum it publishes QuorumLost and
  :class:`Demote` with a deadline ``demote_within`` away; if ``self_fence_after`` is set and
  it is still inquorate that long after, :class:`SelfFence`. A view that does not contain
  this node counts as inquorate.
* **Fence before takeover.** A node that leaves while admitted is not announced to the CRIM
  until it is fenced: the policy asks for :class:`Fence` and publishes NodeLeft only on a
  FenceResult with ``ok``; a failure is retried with a doubling delay, NodeLeft withheld.
  A node must be fenced once it is absent from a *quorate* view (left while this side was
  inquorate and came back before quorum: no fencing, and nothing to announce). A node that
  must be fenced stays so even if it comes back, and is admitted again only after it was
  fenced, left and returned.
* **One fencer.** Only the *fencer* fences: the first node in election order that is not
  itself waiting to be fenced or to depart -- the master of the surviving quorate partition,
  or the next one when the master itself must be fenced or is leaving. A new fencer
  re-issues attempts in flight.
* **Announced leave.** A node that stops cleanly first has its primaries switched over and
  its agent stopped, then says so on the CMM group (:class:`LeaveAnnounced`, in the agreed
  order, so every member takes it at the same point). From then on it counts as gone, as if
  fenced while still in the view: NodeLeft at once (the CRIM moves what is left), not
  admitted, and its departure is not fenced. If it is seen again without having left, it
  stays unadmitted (no NodeJoined, so no work) until it has left and come back. An
  announcement from a node that must be fenced, or is not in the view, changes nothing: a
  departure that was not announced is fenced exactly as before.
"""

from __future__ import annotations

from dataclasses import replace

from haos.clock import MonoTime
from haos.cluster.cmm.model import (
    Action,
    CmmConfig,
    CmmInput,
    CmmState,
    Decision,
    Demote,
    Fence,
    LeaveAnnounced,
    MasterChanged,
    NodeState,
    Peer,
    Publish,
    QuorumLost,
    QuorumRegained,
    SelfFence,
    Tick,
    ViceMasterChanged,
    ViewChanged,
)
from haos.cluster.crim.events import NodeJoined, NodeLeft
from haos.cluster.fencing.types import FenceResult
from haos.config.model import NodeSpec


def elect(
    config: CmmConfig, members: frozenset[int], quorate: bool
) -> tuple[int | None, int | None]:
    """``(master, vice_master)`` of a view; None where there is nobody (or no quorum)."""
    if not quorate:
        return (None, None)
    ranked = election_order(config, members)
    return (ranked[0] if ranked else None, ranked[1] if len(ranked) > 1 else None)


def majority(config: CmmConfig, members: frozenset[int]) -> bool:
    """Whether ``members`` hold a majority of the configured nodes (one vote each): the
    stale-quorum rule, applied to every view together with votequorum's verdict.

    votequorum's verdict can arrive after the CPG view that changed it: a node cut off from
    the rest must not act on its old "quorate" for even one view (it would fence the
    majority). Two-node clusters follow votequorum's two_node rule: one node is enough, and
    fencing decides. The verdict can also come *before* the view: a node booted alone is told
    "quorate" once corosync sees its peer, while the group still shows it alone; the "wait
    for a peer" rule keeps it from counting that view.
    """
    configured = {n.node_id for n in config.nodes}
    present = len(members & configured)
    if len(configured) == 2:
        return present >= 1
    return present * 2 > len(configured)


def election_order(config: CmmConfig, members: frozenset[int]) -> list[int]:
    """The configured members, best candidate first: higher priority, then lower node id."""
    specs = [n for n in config.nodes if n.node_id in members]
    return [n.node_id for n in sorted(specs, key=lambda n: (-n.priority, n.node_id))]


def fencer(config: CmmConfig, state: CmmState) -> int | None:
    """The node that fences for this partition, as this node sees it; None when inquorate."""
    if not state.quorate:
        return None
    # Neither a node to be fenced nor one on its way out (fenced, or leaving cleanly: it
    # would be gone before its attempt ended) fences.
    out = set(state.pending_fences()) | {p.node_id for p in state.peers if p.awaiting_departure}
    return next((n for n in election_order(config, state.members) if n not in out), None)


def fence_delay(
    nodes: tuple[NodeSpec, ...], me: NodeSpec, target: NodeSpec, base: float, priority: float
) -> float:
    """Seconds node ``me`` waits before fencing ``target``: ``base`` always (like Pacemaker's
    ``pcmk_delay_base``), plus ``priority`` in a two-node cluster when ``target`` is the
    preferred node (higher priority, then lower id). In a two-node split both sides are
    quorate and fence each other: the preferred node shoots first and survives. With three
    or more nodes only the quorate side fences: there is no race to break."""
    preferred = (target.priority, -target.node_id) > (me.priority, -me.node_id)
    return base + (priority if len(nodes) == 2 and preferred else 0.0)


def next_deadline(config: CmmConfig, state: CmmState) -> float | None:
    """When a Tick is next needed: a fencing retry, or the self-fence deadline."""
    times = [p.retry_at for p in state.peers if p.must_fence and p.retry_at is not None]
    after, since = config.self_fence_after, state.inquorate_since
    if after is not None and since is not None and not state.self_fenced:
        times.append(since + after)
    return min(times) if times else None


def decide(config: CmmConfig, state: CmmState, event: CmmInput, now: MonoTime) -> Decision:
    work = _Work(config, state, now)
    if isinstance(event, ViewChanged):
        work.view(event)
    elif isinstance(event, FenceResult):
        work.fenced(event)
    elif isinstance(event, LeaveAnnounced):
        work.announced(event)
    elif isinstance(event, Tick):
        work.notes.append("tick")
    work.fence_due()
    work.self_fence_due()
    return work.finish()


class _Work:
    """A mutable copy of the state for one decision, and the actions and notes it makes."""

    def __init__(self, config: CmmConfig, state: CmmState, now: MonoTime) -> None:
        self.config = config
        self.state = state
        self.peers = {p.node_id: p for p in state.peers}
        self.now = now
        self.actions: list[Action] = []
        self.notes: list[str] = []

    def name(self, node_id: int | None) -> str:
        return self.config.name(node_id)

    def publish(
        self, event: NodeJoined | NodeLeft[MonoTime] | MasterChanged | ViceMasterChanged
    ) -> None:
        self.actions.append(Publish(event, self.now))

    def update(self, node_id: int, **changes: object) -> Peer:
        peer = replace(self.peers[node_id], **changes)  # type: ignore[arg-type]
        self.peers[node_id] = peer
        return peer

    # -- views --------------------------------------------------------------------------------

    def view(self, event: ViewChanged) -> None:
        members = frozenset(n for n in event.members if n in self.peers)
        unknown = sorted(event.members - members)
        quorate = event.quorate and self.config.local in members
        names = ", ".join(self.name(n) for n in sorted(members)) or "nobody"
        unsynced = quorate and not self.synced(members)
        quorate = quorate and not unsynced
        self.notes.append(f"view [{names}] {'quorate' if quorate else 'inquorate'}")
        if unknown:
            self.notes.append(f"ignoring unconfigured node ids {unknown}")
        if event.quorate and self.config.local not in members:
            self.notes.append("this node is not in the view: counted as inquorate")
        if unsynced:
            self.notes.append(
                "not synchronised with a peer since start: a view of fewer than all "
                f"{len(self.config.nodes)} nodes counts as inquorate"
            )
        self.quorum(quorate)
        for node_id in sorted(self.peers):
            if node_id in members:
                self.present(node_id)
            else:
                self.absent(node_id, quorate)
        master, vice = elect(self.config, members, quorate)
        self.state = replace(self.state, members=members, quorate=quorate)
        if master != self.state.master:
            self.publish(MasterChanged(self.state.master, master))
        if vice != self.state.vice_master:
            self.publish(ViceMasterChanged(self.state.vice_master, vice))
        self.state = replace(self.state, master=master, vice_master=vice)
        self.notes.append(f"master {self.name(master)}, vice-master {self.name(vice)}")

    def synced(self, members: frozenset[int]) -> bool:
        """Whether this node may count a quorate view of ``members`` (see "Wait for a peer").

        Records the first quorate view with another configured node in it."""
        if members - {self.config.local}:
            if not self.state.synced_with_peer:
                self.state = replace(self.state, synced_with_peer=True)
                self.notes.append("synchronised with a peer")
            return True
        return self.state.synced_with_peer or len(members) >= len(self.config.nodes)

    def quorum(self, quorate: bool) -> None:
        if self.state.quorate and not quorate:
            deadline = self.now + self.config.demote_within
            self.actions.append(Demote("quorum lost", deadline))
            self.actions.append(Publish(QuorumLost(), self.now))
            self.state = replace(self.state, inquorate_since=self.now, self_fenced=False)
            self.notes.append(f"quorum lost: demote by {deadline:g}")
        elif quorate and not self.state.quorate:
            self.actions.append(Publish(QuorumRegained(), self.now))
            self.state = replace(self.state, inquorate_since=None)
            self.notes.append("quorum regained")

    def present(self, node_id: int) -> None:
        peer = self.peers[node_id]
        if peer.state is NodeState.MEMBER:
            return
        peer = self.update(node_id, state=NodeState.MEMBER, since=self.now)
        name = self.name(node_id)
        if peer.must_fence:
            self.notes.append(f"{name} is back but must still be fenced: NodeJoined withheld")
        elif peer.unfenced:
            self.update(node_id, unfenced=False)
            self.notes.append(f"{name} is back (it left while this side was inquorate)")
        elif not peer.admitted:
            self.update(node_id, admitted=True)
            self.publish(NodeJoined(name))
            self.notes.append(f"{name} joined")

    def absent(self, node_id: int, quorate: bool) -> None:
        peer = self.peers[node_id]
        name = self.name(node_id)
        if peer.state is NodeState.MEMBER:
            peer = self.update(node_id, state=NodeState.LEFT, since=self.now)
            if peer.awaiting_departure:
                self.update(node_id, awaiting_departure=False)
                self.notes.append(f"{name} went away after its fencing or announced leave")
                return
            if peer.admitted and not peer.unfenced:
                peer = self.update(node_id, unfenced=True)
                self.notes.append(f"{name} left: NodeLeft waits for its fencing")
        if quorate and peer.unfenced and not peer.must_fence:
            self.update(node_id, must_fence=True, attempts=0, retry_at=None, fencing_by=None)

    def announced(self, event: LeaveAnnounced) -> None:
        """A clean leave (see "Announced leave"): gone now, its departure not fenced."""
        peer = self.peers.get(event.node)
        if peer is None:
            self.notes.append(f"ignored leave of unconfigured node id {event.node}")
            return
        name = self.name(event.node)
        if peer.state is not NodeState.MEMBER:
            self.notes.append(f"ignored leave of {name}: not in the view")
        elif peer.must_fence:
            self.notes.append(f"ignored leave of {name}: it must be fenced first")
        elif peer.awaiting_departure:
            self.notes.append(f"{name} announced its leave again")
        else:
            self.update(event.node, admitted=False, awaiting_departure=True)
            if peer.admitted:
                self.publish(NodeLeft(name, self.now, how="left cleanly"))
            self.notes.append(f"{name} leaves cleanly (runs nothing): NodeLeft, no fencing")

    # -- fencing ------------------------------------------------------------------------------

    def fenced(self, result: FenceResult) -> None:
        spec = self.config.by_name(result.node)
        if spec is None or not self.peers[spec.node_id].must_fence:
            self.notes.append(f"ignored fence result for {result.node}: no fencing pending")
            return
        peer = self.peers[spec.node_id]
        if not result.ok:
            failures = peer.attempts + 1
            retry_at = self.now + self.config.retry_delay(failures)
            self.update(
                spec.node_id,
                attempts=failures,
                retry_at=retry_at,
                fencing_by=None,
                last_error=result.detail,
            )
            self.notes.append(
                f"fencing {spec.name} failed (attempt {failures}: {result.detail}); "
                f"NodeLeft withheld, retry at {retry_at:g}"
            )
            return
        present = peer.state is NodeState.MEMBER
        self.update(
            spec.node_id,
            must_fence=False,
            unfenced=False,
            admitted=False,
            attempts=0,
            retry_at=None,
            fencing_by=None,
            last_error="",
            awaiting_departure=present,
        )
        at = self.now if present or peer.since is None else peer.since
        self.publish(NodeLeft(spec.name, at, how=f"fenced ({result.action})"))
        self.notes.append(f"{spec.name} fenced ({result.action}): NodeLeft")

    def fence_due(self) -> None:
        self.state = self.state.with_peers(self.peers)
        by = fencer(self.config, self.state)
        if by is None:
            return
        for node_id in self.state.pending_fences():
            peer = self.peers[node_id]
            waiting = peer.retry_at is not None and peer.retry_at > self.now
            if peer.fencing_by == by or (peer.fencing_by is None and waiting):
                continue
            self.update(node_id, fencing_by=by, retry_at=None)
            spec = self.config.spec(node_id)
            assert spec is not None
            if by == self.config.local:
                attempt = peer.attempts + 1
                self.actions.append(Fence(spec, self.config.fence_action, attempt))
                self.notes.append(f"fencing {spec.name} (attempt {attempt})")
            else:
                self.notes.append(f"{self.name(by)} fences {spec.name}")

    def self_fence_due(self) -> None:
        after = self.config.self_fence_after
        since = self.state.inquorate_since
        if after is None or since is None or self.state.self_fenced or self.state.quorate:
            return
        if self.now - since >= after:
            reason = f"inquorate for {self.now - since:g} s (limit {after:g} s)"
            self.actions.append(SelfFence(reason))
            self.state = replace(self.state, self_fenced=True)
            self.notes.append(f"self-fence: {reason}")

    def finish(self) -> Decision:
        state = self.state.with_peers(self.peers)
        return Decision(state, tuple(self.actions), "; ".join(self.notes))
