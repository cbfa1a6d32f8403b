"""External management: the managed objects of the live cluster and the management daemon
(``haos-mgmtd``) that serves them over REST, server-sent events and ``/metrics``.

:mod:`~haos.mgmt.objects` is the model, :mod:`~haos.mgmt.build` makes it from the cluster
daemon's answers, :mod:`~haos.mgmt.source` fetches them, :mod:`~haos.mgmt.api` and
:mod:`~haos.mgmt.metrics` render it, :mod:`~haos.mgmt.auth` decides who may ask, and
:mod:`~haos.mgmt.daemon` is the daemon's composition root.
"""
