"""CRC, the checkpoint service: named checkpoints of named sections, written by the active,
replicated where the standbys run, read by a standby that takes over. See ``service``."""

from haos.cluster.dss.checkpoint.replica import Role
from haos.cluster.dss.checkpoint.service import Checkpoint, CheckpointService

__all__ = ["Checkpoint", "CheckpointService", "Role"]
