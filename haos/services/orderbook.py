"""A node's order book: the batches the master sends, and the latest desired role of each
local component.

* :class:`Batch` — what the master's dispatcher (:mod:`haos.services.executor`) delivers to one
  node for one decision: its orders, optionally a full desired state, and the history notes.
* :class:`NodeOrders` — on every node: the latest desired role of each local component and the
  stream of orders to the node's agent. A subscriber (the agent) first gets the full desired
  state, then each order as it arrives; an agent that restarts converges without the master.

Mastership epochs: every batch names the epoch of the mastership whose availability service
made it (a number claimed in the repository when a service becomes active, unique and
increasing across the cluster's life, whole-cluster restarts included). Orders are ordered by
``(epoch, seq)``: a batch of a newer epoch supersedes everything of older ones, whatever its
sequence number (a service restored after a whole-cluster restart may number lower than what
a node holds), and a batch of an older epoch than the newest seen is refused with
:class:`~haos.errors.ConflictError`: it comes from a master that has been superseded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from haos import trace
from haos.errors import ConflictError, UsageError
from haos.model.states import AvailabilityState
from haos.services.orders import (
    Order,
    RoleOrder,
    order_from_json,
    order_to_json,
    roles_from_json,
)


@dataclass(frozen=True)
class Batch:
    seq: int
    orders: tuple[Order, ...] = ()
    roles: Mapping[str, AvailabilityState] | None = None  # a full desired state
    notes: tuple[dict[str, Any], ...] = ()  # for every node's history
    epoch: int = 0  # of the mastership that made it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "seq": self.seq,
            "orders": [order_to_json(o) for o in self.orders],
        }
        if self.roles is not None:
            out["roles"] = {c: s.value for c, s in self.roles.items()}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def batch_from_json(obj: object) -> Batch:
    if not isinstance(obj, dict):
        raise UsageError(f"orders: expected an object, got {obj!r}")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise UsageError(f"orders: bad seq {seq!r}")
    epoch = obj.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise UsageError(f"orders: bad epoch {epoch!r}")
    raw = obj.get("orders", [])
    if not isinstance(raw, list):
        raise UsageError("orders: 'orders' must be a list")
    roles = roles_from_json(obj["roles"]) if "roles" in obj else None
    notes = obj.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, dict) for n in notes):
        raise UsageError("orders: 'notes' must be a list of objects")
    return Batch(seq, tuple(order_from_json(o) for o in raw), roles, tuple(notes), epoch)


Listener = Callable[[dict[str, Any]], None]

# What the node's agent says a component runs as: an availability state it reached, or
# FAILED (it could not reach its state, or its driver reported it broken since).
FAILED = "failed"
RUNNING_STATES = frozenset({*(s.value for s in AvailabilityState), FAILED})


@dataclass(frozen=True)
class Running:
    """What a component runs as, by its node agent's last word, and when that was said."""

    state: str  # one of RUNNING_STATES
    at: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "at": self.at, "detail": self.detail}


def running_from_json(obj: object) -> tuple[str, Running]:
    """``(component, Running)`` from the agent's ``running`` request; UsageError naming
    what is wrong."""
    if not isinstance(obj, Mapping):
        raise UsageError(f"running: expected an object, got {obj!r}")
    component, state = obj.get("component"), obj.get("state")
    if not isinstance(component, str) or not component:
        raise UsageError(f"running: bad component {component!r}")
    if state not in RUNNING_STATES:
        raise UsageError(f"running: bad state {state!r} (one of {sorted(RUNNING_STATES)})")
    at = obj.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise UsageError(f"running: field 'at' must be a number, got {at!r}")
    detail = obj.get("detail", "")
    if not isinstance(detail, str):
        raise UsageError(f"running: field 'detail' must be text, got {detail!r}")
    return component, Running(str(state), float(at), detail[:500])


class NodeOrders:
    """See the module docstring. ``receive`` takes what the master sent (already decoded)."""

    def __init__(self, node: str, history: int = 2000) -> None:
        self.node = node
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.epoch = 0  # of the newest mastership whose orders were taken in
        self.seq = -1  # the newest order or full state taken in, within that epoch
        self.refused = 0  # batches refused as coming from a superseded master
        self._noted = (-1, -1)  # (epoch, seq) of the newest notes kept in the history
        self.running: dict[str, Running] = {}  # what the agent says each component runs as
        # Graceful role orders that came while no agent listened (component -> order, epoch).
        self._unconfirmed: dict[str, tuple[RoleOrder, int]] = {}
        self.roles: dict[str, AvailabilityState] = {}
        self.synced = False  # has had a full desired state
        self._listeners: list[Listener] = []
        self._unsynced = asyncio.Event()
        self._unsynced.set()

    def receive(self, batch: Batch) -> None:
        """Take ``batch`` in; ConflictError (nothing taken) if its epoch is superseded."""
        trace.point("orders.recv", batch.seq)
        if batch.epoch < self.epoch:
            self.refused += 1
            raise ConflictError(
                f"orders {batch.seq} of mastership epoch {batch.epoch} refused on {self.node}:"
                f" it follows epoch {self.epoch} (the sender is no longer master)"
            )
        if batch.epoch > self.epoch:
            # A newer mastership: its numbering supersedes the older one's.
            self.epoch, self.seq = batch.epoch, -1
        if batch.notes and (batch.epoch, batch.seq) > self._noted:
            self._noted = (batch.epoch, batch.seq)
            self.history.extend(batch.notes)
        if batch.roles is not None and (batch.seq >= self.seq or not self.synced):
            changed = not self.synced or dict(batch.roles) != self.roles
            self.roles = dict(batch.roles)
            self.seq = max(self.seq, batch.seq)
            self.synced = True
            self._unsynced.clear()
            if changed:  # the same full state again (a resync) changes nothing
                self._emit({"roles": {c: s.value for c, s in self.roles.items()}})
        for order in batch.orders:
            if order.seq < self.seq and isinstance(order, RoleOrder):
                continue  # older than what we hold (a late retry)
            self.seq = max(self.seq, order.seq)
            if isinstance(order, RoleOrder):
                self.roles[order.component] = order.state
                if order.graceful and not self._listeners:
                    # The master waits for this one's confirmation: an agent that subscribes
                    # later gets it after the full state (a full state is not confirmed).
                    self._unconfirmed[order.component] = (order, self.epoch)
            self._emit({"order": order_to_json(order), "epoch": self.epoch})

    def step_down(self) -> None:
        """This node lost quorum: no local component may stay primary (each becomes a spare),
        and the next full desired state is taken whatever its sequence number."""
        self.synced = False
        self._unsynced.set()
        primary = AvailabilityState.PRIMARY
        self.roles = {
            c: AvailabilityState.SPARE if s is primary else s for c, s in self.roles.items()
        }
        self._emit({"roles": {c: s.value for c, s in self.roles.items()}})

    def ran(self, component: str, running: Running) -> None:
        """The node's agent says what ``component`` runs as now."""
        self.running[component] = running

    def agent_gone(self) -> None:
        """The agent's feed closed: what it said no longer holds (it says it again when it
        comes back and brings the components to their roles)."""
        self.running.clear()

    async def wait_unsynced(self) -> None:
        await self._unsynced.wait()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with the full state now (if known) and with every change; the
        returned function unsubscribes."""
        self._listeners.append(listener)
        if self.synced:
            listener({"roles": {c: s.value for c, s in self.roles.items()}})
        for order, epoch in self._unconfirmed.values():
            if self.roles.get(order.component) is order.state and epoch == self.epoch:
                listener({"order": order_to_json(order), "epoch": epoch})
        self._unconfirmed.clear()
        return lambda: self._listeners.remove(listener)

    def _emit(self, item: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(item)


def encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise UsageError(f"{what}: not JSON: {e}") from e
