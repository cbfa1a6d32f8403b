"""Multi-node corosync test clusters in network namespaces, with fault injectors.

See :mod:`.cluster` for the :class:`Cluster` context manager and its cleanup guarantee,
:mod:`.netns` for the topology, :mod:`.watch` for how membership changes are observed,
:mod:`.soak` for counting membership changes over time, and ``python -m haos.cluster.harness
cleanup`` for the leftovers of crashed runs. Needs root, iproute2, nftables, util-linux
(nsenter, unshare, setpriv) and corosync 3 with knet.
"""

from haos.cluster.harness.cleanup import CleanupReport, cleanup
from haos.cluster.harness.cluster import Cluster
from haos.cluster.harness.config import ClusterSpec
from haos.cluster.harness.errors import CommandFailed, HarnessError, HarnessTimeout
from haos.cluster.harness.soak import SoakReport, soak
from haos.cluster.harness.watch import Kind, Observation, View

__all__ = [
    "CleanupReport",
    "Cluster",
    "ClusterSpec",
    "CommandFailed",
    "HarnessError",
    "HarnessTimeout",
    "Kind",
    "Observation",
    "SoakReport",
    "View",
    "cleanup",
    "soak",
]
