"""CNS, the cluster naming service: hierarchical names → handles, cluster-wide.

Use::

    cns = NamingService(transport)           # its own group, e.g. CpgTransport "haos-cns"
    async with running(cns):
        await cns.bind("/svc/db", b"handle")         # the active
        await cns.rebind("/svc/db", b"new handle")   # the standby, taking over
        cns.resolve("/svc/db")
"""

from haos.cluster.dss.naming.service import NamingService
from haos.cluster.dss.naming.table import Binding, Change, NameTable, Reason, validate_name

__all__ = ["Binding", "Change", "NameTable", "NamingService", "Reason", "validate_name"]
