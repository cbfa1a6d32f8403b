"""Group messaging for the distributed services.

* :mod:`.group` — :class:`GroupLink`, one service's end of its group (envelope, ordered
  sending, the receive loop that drops and counts malformed messages), and :func:`running`.
* :mod:`.statesync` — pure state-transfer bookkeeping, shared by CNS and CRC.
* :mod:`.rrpc` — RRPC, request/response with timeout, retries and prompt failure.

Test support (in-memory members; members by pid on one real corosync) is in
:mod:`haoslab.fakes.localnet` and :mod:`haoslab.fakes.pidtransport`.
"""

from haos.cluster.dss.messaging.group import GroupLink, GroupService, running
from haos.cluster.dss.messaging.rrpc import Call, CallTimeout, RemoteError, RpcService

__all__ = [
    "Call",
    "CallTimeout",
    "GroupLink",
    "GroupService",
    "RemoteError",
    "RpcService",
    "running",
]
