"""What the CCR state machine is configured with and what it asks its adapter to do.

The adapter carries out :data:`Action` s in the order given: a store write (:class:`Persist`,
:class:`Install`, :class:`Promise`) must be durable before any action after it is carried out,
because those may tell other members or a caller that it is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from haos.cluster.dss.ccr.model import MAX_TXN_BYTES, Entry, Image, RequestId, Version
from haos.cluster.dss.ccr.wire import Message, encode_message
from haos.errors import HaosError, UsageError


@dataclass(frozen=True)
class CcrConfig:
    """``nodes``: how many nodes the cluster is configured with (the majority is of this).

    ``log_limit``: entries kept for deltas and watch replays, and ``log_bytes``: at most
    so many bytes of their changes (the store's default bound). ``chunk_bytes``: the largest
    DATA message. ``request_timeout``: default deadline of a write, seconds.
    ``watch_queue``: events a watcher may lag behind before it is dropped.
    """

    nodes: int
    log_limit: int = 1000
    log_bytes: int = 4 * 1024 * 1024
    chunk_bytes: int = 256 * 1024
    request_timeout: float = 10.0
    watch_queue: int = 10_000

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise UsageError(f"CCR nodes must be >= 1, got {self.nodes}")
        if self.log_limit < 1 or self.watch_queue < 1:
            raise UsageError("CCR log_limit and watch_queue must be >= 1")
        if self.log_bytes < MAX_TXN_BYTES:
            raise UsageError(f"CCR log_bytes must be >= {MAX_TXN_BYTES} (one transaction)")
        if not 1024 <= self.chunk_bytes <= MAX_TXN_BYTES:
            raise UsageError(f"CCR chunk_bytes must be 1024..{MAX_TXN_BYTES}")
        if self.request_timeout <= 0:
            raise UsageError("CCR request_timeout must be > 0")

    @property
    def majority(self) -> int:
        return self.nodes // 2 + 1


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    message: Message

    @property
    def payload(self) -> bytes:
        return encode_message(self.message)


@dataclass(frozen=True)
class Persist:
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Install:
    image: Image


@dataclass(frozen=True)
class Promise:
    epoch: int


@dataclass(frozen=True)
class Resolve:
    """A request's outcome: the revision it was committed at, or the error."""

    request: RequestId
    revision: int | None = None
    error: HaosError | None = None


@dataclass(frozen=True)
class Release:
    """Committed entries, in order, for the watchers."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Reset:
    """Watchers started before ``generation`` can no longer be continued without a gap."""

    generation: int
    reason: str


@dataclass(frozen=True)
class Note:
    """Something worth a log line."""

    reason: str


Action = Send | Persist | Install | Promise | Resolve | Release | Reset | Note


class Phase(enum.Enum):
    JOINING = "joining"  # no view yet
    WAITING = "waiting"  # view changed, waiting for START
    SYNCING = "syncing"  # collecting SYNCs
    TRANSFER = "transfer"  # waiting for the chosen member's DATA
    READY = "ready"  # collecting READYs
    NORMAL = "normal"  # round over: writable or read-only


@dataclass(frozen=True)
class Status:
    node_id: int
    phase: Phase
    members: tuple[int, ...]
    synced: bool
    writable: bool
    quorate: bool
    epoch: int
    revision: int
    commit_revision: int
    version: Version
