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


class NodeOrders:
    """See the module docstring. ``receive`` takes what the master sent (already decoded)."""

    def __init__(self, node: str, history: int = 2000) -> None:
        self.node = node
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.epoch = 0  # of the newest mastership whose orders were taken in
        self.seq = -1  # the newest order or full state taken in, within that epoch
        self.refused = 0  # batches refused as coming from a superseded master
        self._noted = (-1, -1)  # (epoch, seq) of the newest notes kept in the history
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
            self._emit({"order": order_to_json(order)})

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

    async def wait_unsynced(self) -> None:
        await self._unsynced.wait()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with the full state now (if known) and with every change; the
        returned function unsubscribes."""
        self._listeners.append(listener)
        if self.synced:
            listener({"roles": {c: s.value for c, s in self.roles.items()}})
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
