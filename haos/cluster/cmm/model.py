"""The CMM's data: settings, state, the events it decides on and the actions it asks for.

Every type here is a frozen dataclass; :mod:`.policy` turns ``(config, state, event, now)``
into a :class:`Decision`. Node ids are corosync's; names and priorities come from the
cluster's :class:`~haos.config.model.NodeSpec` list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from haos.clock import MonoTime
from haos.cluster.crim.events import NodeJoined, NodeLeft
from haos.cluster.fencing.types import FenceAction, FenceResult
from haos.config.model import NodeSpec
from haos.errors import ConfigError, ConfigProblem

# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CmmConfig:
    """What the CMM of node ``local`` decides with. Validated on construction.

    ``demote_within``: after quorum is lost, every primary role on this node must be given
    up within this many seconds (the :class:`Demote` deadline). ``self_fence_after``: if set,
    a node still inquorate this long after losing quorum asks to be reset
    (:class:`SelfFence`). ``fence_action``: what fencing a departed node means.
    ``retry_first``/``retry_cap``: the delay before retrying a failed fencing doubles from
    the first to the cap.
    """

    nodes: tuple[NodeSpec, ...]
    local: int
    demote_within: float = 1.0
    self_fence_after: float | None = None
    fence_action: FenceAction = "reboot"
    retry_first: float = 1.0
    retry_cap: float = 30.0
    source: str = "cmm settings"

    def __post_init__(self) -> None:
        problems: list[ConfigProblem] = []

        def bad(key: str, reason: str) -> None:
            problems.append(ConfigProblem(self.source, key, reason))

        ids = [n.node_id for n in self.nodes]
        names = [n.name for n in self.nodes]
        if len(set(ids)) != len(ids):
            bad("nodes", "node ids must be unique")
        if len(set(names)) != len(names):
            bad("nodes", "node names must be unique")
        if any(i <= 0 for i in ids):
            bad("nodes", "corosync node ids are positive")
        if self.local not in ids:
            bad("local", f"node id {self.local} is not one of the nodes")
        if not self.demote_within > 0:
            bad("demote_within", "must be positive")
        if self.self_fence_after is not None and not self.self_fence_after > self.demote_within:
            bad("self_fence_after", "must exceed demote_within: demote first, then reset")
        if self.fence_action not in ("off", "reboot"):
            bad("fence_action", "must be off or reboot")
        if not 0 < self.retry_first <= self.retry_cap:
            bad("retry_first", "must be positive and at most retry_cap")
        if problems:
            raise ConfigError(problems)

    def spec(self, node_id: int) -> NodeSpec | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def by_name(self, name: str) -> NodeSpec | None:
        return next((n for n in self.nodes if n.name == name), None)

    def name(self, node_id: int | None) -> str:
        if node_id is None:
            return "none"
        spec = self.spec(node_id)
        return spec.name if spec is not None else f"node id {node_id}"

    def retry_delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed fencing of one node (1, 2, ...)."""
        return float(min(self.retry_first * 2 ** max(failures - 1, 0), self.retry_cap))


# ---------------------------------------------------------------------------- state


class NodeState(StrEnum):
    """A configured node as this node's view shows it."""

    MEMBER = "member"
    LEFT = "left"
    NEVER_SEEN = "never-seen"


@dataclass(frozen=True)
class Peer:
    """What this node knows about one configured node (itself included).

    ``admitted``: the CRIM was told NodeJoined and not yet NodeLeft. ``unfenced``: it left
    while admitted and its NodeLeft waits for a confirmed fencing. ``must_fence``: a fencing
    job -- it was absent from a quorate view while unfenced; stays even if it comes back.
    ``fencing_by``: the node with an attempt in flight. ``awaiting_departure``: fenced while
    still in the view, or it announced a clean leave (:class:`LeaveAnnounced`); it is admitted
    again only after it left and came back, and its departure is not fenced.
    """

    node_id: int
    state: NodeState = NodeState.NEVER_SEEN
    since: MonoTime | None = None
    admitted: bool = False
    unfenced: bool = False
    must_fence: bool = False
    attempts: int = 0
    retry_at: float | None = None
    fencing_by: int | None = None
    last_error: str = ""
    awaiting_departure: bool = False


@dataclass(frozen=True)
class CmmState:
    """One node's CMM state. ``quorate`` is effective: corosync's verdict, this node is in
    the view, and the view is either every configured node or this node has synchronised
    with a peer. ``synced_with_peer``: since this state was made (the daemon started) this
    node has been in a quorate view with at least one other configured node.
    ``inquorate_since``: when quorum was lost (None while quorate, and before quorum was
    ever had)."""

    peers: tuple[Peer, ...]
    members: frozenset[int] = frozenset()
    quorate: bool = False
    master: int | None = None
    vice_master: int | None = None
    synced_with_peer: bool = False
    inquorate_since: MonoTime | None = None
    self_fenced: bool = False

    @classmethod
    def initial(cls, config: CmmConfig) -> CmmState:
        return cls(tuple(Peer(n.node_id) for n in sorted(config.nodes, key=lambda n: n.node_id)))

    def peer(self, node_id: int) -> Peer:
        return next(p for p in self.peers if p.node_id == node_id)

    def node_states(self) -> dict[int, NodeState]:
        return {p.node_id: p.state for p in self.peers}

    def pending_fences(self) -> tuple[int, ...]:
        """Nodes that must be fenced before their NodeLeft."""
        return tuple(p.node_id for p in self.peers if p.must_fence)

    def with_peers(self, peers: dict[int, Peer]) -> CmmState:
        return replace(self, peers=tuple(peers[k] for k in sorted(peers)))


# ---------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class ViewChanged:
    """corosync's agreed view of this partition: its member node ids and its quorum."""

    members: frozenset[int]
    quorate: bool

    @classmethod
    def of(cls, *members: int, quorate: bool = True) -> ViewChanged:
        return cls(frozenset(members), quorate)


@dataclass(frozen=True)
class Tick:
    """Time passed: a fencing retry or the self-fence deadline may be due."""


@dataclass(frozen=True)
class LeaveAnnounced:
    """Node ``node`` said, on the CMM group (so every member sees it at the same point of the
    agreed order), that it is leaving cleanly: its agent has stopped, no component of it is
    primary, and it runs nothing until it has left the membership and joined again. Only the
    node itself can say it: the service drops an announcement sent for another node."""

    node: int


CmmInput = ViewChanged | FenceResult | Tick | LeaveAnnounced

# ---------------------------------------------------------------------------- events out


@dataclass(frozen=True)
class MasterChanged:
    old: int | None
    new: int | None


@dataclass(frozen=True)
class ViceMasterChanged:
    old: int | None
    new: int | None


@dataclass(frozen=True)
class QuorumLost:
    """This partition lost quorum: it must stop acting as primary for anything."""


@dataclass(frozen=True)
class QuorumRegained:
    """This partition is quorate (again, or for the first time)."""


CmmEvent = (
    NodeJoined
    | NodeLeft[MonoTime]
    | MasterChanged
    | ViceMasterChanged
    | QuorumLost
    | QuorumRegained
)

# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Publish:
    """Tell the CMM's listeners (the CRIM takes NodeJoined/NodeLeft) what happened at ``at``.

    Times are on this node's monotonic clock, like every time the CMM keeps; a listener that
    shows or stores them converts them (:func:`haos.clock.wall_of`)."""

    event: CmmEvent
    at: MonoTime


@dataclass(frozen=True)
class Fence:
    """Fence ``node`` and feed the FenceResult back (to every node, in agreed order)."""

    node: NodeSpec
    action: FenceAction
    attempt: int


@dataclass(frozen=True)
class Demote:
    """Give up every primary role on this node by ``deadline`` (quorum is lost)."""

    reason: str
    deadline: float


@dataclass(frozen=True)
class SelfFence:
    """Reset this node now (stop petting the watchdog): it stayed inquorate too long."""

    reason: str


Action = Publish | Fence | Demote | SelfFence


@dataclass(frozen=True)
class Decision:
    """The outcome of one event: the next state, the actions in order, and why."""

    state: CmmState
    actions: tuple[Action, ...]
    reason: str

    def events(self) -> tuple[CmmEvent, ...]:
        """The published events, in order."""
        return tuple(a.event for a in self.actions if isinstance(a, Publish))
