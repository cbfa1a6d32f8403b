"""A node that stops cleanly: its primaries switched over, its agent stopped, its leave
announced, so that its peers do not fence it.

The order of a clean stop (the units order it, see ``units/``):

1. The agent, told to stop while the system shuts down, asks its cluster daemon to *prepare*
   (control op ``leave``). The daemon submits the operator intent ``leave <node>``
   (:mod:`haos.services.intents`); the active availability service carries it out as one
   planned switchover per primary component of the node (:func:`leave_switchovers`), and the
   daemon waits, bounded, until no component of the node is primary in its desired state nor
   by its agent's word (:meth:`Departure.prepare`). The agent meanwhile carries out the
   demotions it is sent, as always.
2. The agent ends; systemd stops the components (their units are ordered before the agent's
   and the cluster daemon's, so they stop after the one and before the other).
3. The cluster daemon, told to stop, announces the leave on the CMM group only if
   :meth:`Departure.refusal` finds nothing against it: prepared, the agent gone since, and
   no component primary (desired, or by the agent's word) when it went. Otherwise it goes
   without a word and is fenced, as any departure.

Leaving a cluster of three, the second node to go in quick succession takes the quorum
with it: the last node is then inquorate and gives up its primaries (quorum rules, no two
primaries); it is not fenced either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from haos.cluster.crim import events as ev
from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology
from haos.errors import HaosError, UnavailableError
from haos.model.states import AvailabilityState
from haos.services.orderbook import NodeOrders

log = logging.getLogger(__name__)

LEAVE = "leave"  # the intent's action, and the control op
_PRIMARY = AvailabilityState.PRIMARY
_POLL = 0.02  # how often prepare() re-reads the order book (it has no change signal for
# what the agent says a component runs as)


@dataclass(frozen=True)
class NodeLeaving:
    """The intent ``leave <node>``: move every primary of ``node`` away before it stops."""

    node: str


def leave_switchovers(topo: Topology, crim: CrimState, node: str) -> list[ev.OperatorSwitchover]:
    """One planned switchover per component hosted on ``node`` that is primary now."""
    return [
        ev.OperatorSwitchover(c)
        for c in topo.hosted.get(node, ())
        if c in crim.components and crim.components[c].state is _PRIMARY
    ]


async def carry_out_leave(
    topo: Topology,
    crim: Callable[[], CrimState | None],
    submit: Callable[[ev.Event], Awaitable[Any]],
    leaving: NodeLeaving,
) -> dict[str, Any]:
    """Switch every primary of ``leaving.node`` over, one decision each; the outcome
    (``refused`` when one of them could not be moved, or the node is unknown)."""
    if leaving.node not in topo.nodes:
        return {"state": "done", "refused": True, "reason": f"unknown node {leaving.node!r}"}
    state = crim()
    if state is None:
        raise UnavailableError("the availability service is not active")
    reasons, refused = [], False
    for switchover in leave_switchovers(topo, state, leaving.node):
        decision = await submit(switchover)
        refused = refused or bool(decision.refused)
        reasons.append(str(decision.reason))
    reason = "; ".join(reasons) if reasons else f"no primary on {leaving.node}"
    return {"state": "done", "refused": refused, "reason": f"{leaving.node} leaving: {reason}"}


def local_primaries(orders: NodeOrders) -> list[str]:
    """Components of this node primary in its desired state or by its agent's last word."""
    desired = {c for c, s in orders.roles.items() if s is _PRIMARY}
    running = {c for c, r in orders.running.items() if r.state == _PRIMARY.value}
    return sorted(desired | running)


def refusal(prepared: bool, agents: int, left_primary: Iterable[str] | None) -> str | None:
    """Why this node may not announce a clean leave now; None when it may.

    ``prepared``: its primaries were switched over (:meth:`Departure.prepare` ran);
    ``agents``: agents following its orders now (one still connected may run anything);
    ``left_primary``: the components that were primary, desired or by the agent's word,
    when the agent last hung up after the leave was prepared (None: it has not).

    Only the agent makes a component primary, so once it is gone nothing becomes primary
    here: a promotion ordered after it hung up (a peer's switchover that picked this node
    while it was leaving) reached nobody, and does not forbid the leave; the announcement
    makes the availability service move that role on. That the components' processes have
    stopped is the units' ordering: they stop before the cluster daemon does.
    """
    if not prepared:
        return "no leave was prepared (the agent did not ask for one)"
    if agents:
        return "the agent is still connected"
    if left_primary is None:
        return "the agent has not ended since the leave was prepared"
    still = sorted(left_primary)
    if still:
        return f"still primary when the agent ended: {', '.join(still)}"
    return None


class Departure:
    """This node's clean stop as its cluster daemon runs it (see the module docstring).

    ``submit(timeout)``: writes the ``leave`` intent for this node and returns its outcome
    (:func:`~haos.services.intents.submit_intent`); ``agents()``: how many agents follow
    this node's orders now. The daemon calls :meth:`agent_left` when its agent hangs up.
    """

    def __init__(
        self,
        node: str,
        orders: NodeOrders,
        submit: Callable[[float], Awaitable[dict[str, Any]]],
        agents: Callable[[], int],
        clock: Callable[[], float],
    ) -> None:
        self._node = node
        self._orders = orders
        self._submit = submit
        self._agents = agents
        self._clock = clock
        self.prepared = False
        self.outcome: dict[str, Any] | None = None
        self._left_primary: list[str] | None = None  # see refusal()

    async def prepare(self, timeout: float) -> dict[str, Any]:
        """Have this node's primaries switched over; wait, up to ``timeout`` in all, until
        none is primary here. Returns ``{"outcome", "primaries", "prepared"}``: a leave stays
        allowed only when no primary is left."""
        deadline = self._clock() + timeout
        self._left_primary = None
        try:
            self.outcome = await self._submit(max(0.1, deadline - self._clock()))
        except HaosError as e:  # no master, say: still wait for what the node runs
            self.outcome = {"state": "failed", "refused": True, "reason": str(e)}
        log.info("leaving: %s", self.outcome.get("reason"))
        while (left := local_primaries(self._orders)) and self._clock() < deadline:
            await asyncio.sleep(_POLL)
        self.prepared = not left
        if left:
            log.warning("leaving: still primary after %g s: %s", timeout, ", ".join(left))
        return {"outcome": self.outcome, "primaries": left, "prepared": self.prepared}

    def agent_left(self) -> None:
        """The agent's feed ended: note what it may have left primary (what it was told, or
        said, up to now). Called before the order book forgets the agent's word."""
        self._left_primary = local_primaries(self._orders)

    def refusal(self) -> str | None:
        return refusal(self.prepared, self._agents(), self._left_primary)


class Stopped(Exception):
    """The daemon was told to stop and has done what a stop needs: end its task group."""


async def stop_cleanly(
    departure: Departure, leave: Callable[[float], Awaitable[None]], timeout: float
) -> str:
    """On the cluster daemon's stop: announce the leave (``leave(timeout)``) if
    :meth:`Departure.refusal` allows it. What was done, in words, for the log."""
    why = departure.refusal()
    if why is not None:
        return f"stopping without announcing a leave (the peers will fence this node): {why}"
    try:
        await leave(timeout)
    except HaosError as e:
        return f"leave not announced (the peers will fence this node): {e}"
    return "leave announced: the peers take this node's departure as clean"
