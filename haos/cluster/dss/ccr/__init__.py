"""CCR, the cluster configuration repository: a replicated, durable, hierarchical key space.

Every node keeps a full copy in SQLite, updated in the order of one sequencer per epoch over
CPG; writes are accepted only in the partition holding a majority (in a two-node cluster, also
by a survivor whose peer was confirmed fenced), acknowledged once durable on a majority, and
watchers get every committed change under a prefix in order. The replication
rules (sync rounds, epochs, quorum, why a sequencer) are in :mod:`.protocol`; the asyncio
service is :mod:`.service`.

Modules: :mod:`.model` (keys, operations, entries), :mod:`.state` (a copy in memory),
:mod:`.protocol` (the pure state machine), :mod:`.sync` (its pure round pieces),
:mod:`.actions` (its configuration and outputs), :mod:`.wire` (message bodies),
:mod:`.store` (SQLite and memory stores), :mod:`.quorum` (quorum sources), :mod:`.watch`
(watches, :func:`follow`), :mod:`.service` (:class:`CcrService`), :mod:`.errors`.
"""

from haos.cluster.dss.ccr.actions import CcrConfig, Phase, Status
from haos.cluster.dss.ccr.errors import OutcomeUnknownError, WatchLostError
from haos.cluster.dss.ccr.model import (
    Compare,
    Delete,
    DeletePrefix,
    Item,
    Put,
    in_prefix,
    validate_key,
    validate_prefix,
)
from haos.cluster.dss.ccr.quorum import ManualQuorum, QuorumSource, VoteQuorumSource
from haos.cluster.dss.ccr.service import CcrService
from haos.cluster.dss.ccr.store import MemoryStore, SqliteStore, Store
from haos.cluster.dss.ccr.watch import Watch, WatchEvent, follow

__all__ = [
    "CcrConfig",
    "CcrService",
    "Compare",
    "Delete",
    "DeletePrefix",
    "Item",
    "ManualQuorum",
    "MemoryStore",
    "OutcomeUnknownError",
    "Phase",
    "Put",
    "QuorumSource",
    "SqliteStore",
    "Status",
    "Store",
    "VoteQuorumSource",
    "Watch",
    "WatchEvent",
    "WatchLostError",
    "follow",
    "in_prefix",
    "validate_key",
    "validate_prefix",
]
