"""CRC, the checkpoint service: named checkpoints of named sections, written by the active,
replicated where the standbys run, read by a standby that takes over; optionally persistent.
See ``service``."""

from haos.cluster.dss.checkpoint.durable import DurableStore
from haos.cluster.dss.checkpoint.handle import Checkpoint
from haos.cluster.dss.checkpoint.replica import Role
from haos.cluster.dss.checkpoint.service import CheckpointService

__all__ = ["Checkpoint", "CheckpointService", "DurableStore", "Role"]
