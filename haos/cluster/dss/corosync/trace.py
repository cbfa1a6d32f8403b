"""Tracepoints on the message path, for latency breakdowns (``bench/cluster.py --trace``).

A tracepoint is a :func:`sys.audit` event named :data:`EVENT` with two arguments: the point's
name and the object it is about (a payload, entries, a write id). Nothing listens unless a
process installs an audit hook, and then the hook takes the time and keeps the object; an
unheard tracepoint costs one C call. Points, in the order a message passes them:

* ``cpg.mcast`` (payload) -- :meth:`~.cpg.CpgGroup.mcast` called, on the loop;
* ``cpg.sent`` (payload) -- ``cpg_mcast_joined`` returned, on the handle's worker thread;
* ``cpg.deliver`` (payload) -- corosync's deliver callback, on the dispatching thread;
* ``cpg.pickup`` (payload) -- the message queued on the group's event stream, on the loop;
* ``ccr.write`` (ops) -- a CCR write request enters the service;
* ``ccr.persist`` / ``ccr.durable`` (entries) -- the CCR's store append starts / returns;
* ``ccr.release`` (entries) -- committed entries handed to the watch hub;
* ``ccr.resolve`` (revision) -- a writer's request acknowledged;
* ``ccr.watch`` (events) -- a watcher in the process picked up a batch of events;
* ``crc.write`` / ``crc.done`` (write id) -- a synchronous checkpoint write starts / returns.
"""

from __future__ import annotations

from haos.trace import EVENT

__all__ = ["EVENT"]
