"""Multi-node corosync test clusters in network namespaces, with fault injectors.

See :mod:`.cluster` for the :class:`Cluster` context manager and its cleanup guarantee,
:mod:`.netns` for the topology, :mod:`.watch` for how membership changes are observed,
:mod:`.soak` for counting membership changes over time, and ``python -m haoslab.harness
cleanup`` for the leftovers of crashed runs. Needs root, iproute2, nftables, util-linux
(nsenter, unshare, setpriv) and corosync 3 with knet.
"""

from haoslab.harness.cleanup import CleanupReport, cleanup
from haoslab.harness.cluster import Cluster
from haoslab.harness.config import ClusterSpec
from haoslab.harness.errors import CommandFailed, HarnessError, HarnessTimeout
from haoslab.harness.soak import SoakReport, soak
from haoslab.harness.watch import Kind, Observation, View

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
