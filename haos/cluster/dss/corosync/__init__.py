"""A typed ctypes binding to corosync 3's client libraries (libcpg, libvotequorum, libcmap).

Only the runtime libraries of Debian's ``corosync`` package are needed (``libcpg.so.4``,
``libvotequorum.so.8``, ``libcmap.so.4``); no compiler, no PyPI package.

* :mod:`.cpg` -- closed process groups: join, agreed-order multicast, membership events.
* :mod:`.quorum` -- votequorum: quorate, votes, flags, node list, quorum events.
* :mod:`.cmap` -- read the configuration and runtime map (nodelist, totem timing).

Every call that reaches corosync translates its ``cs_error_t`` into
:class:`~haos.cluster.dss.corosync.errors.CorosyncError`; a corosync that is not running or
went away gives :class:`~haos.cluster.dss.corosync.errors.CorosyncUnavailableError`, which is
a :class:`~haos.errors.UnavailableError`.

Corosync's IPC runs over abstract unix sockets, which belong to a network namespace: a client
must connect from the network namespace corosync runs in.
"""

from haos.cluster.dss.corosync.errors import CorosyncError, CorosyncUnavailableError

__all__ = ["CorosyncError", "CorosyncUnavailableError"]
