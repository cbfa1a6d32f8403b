"""The cluster membership monitor (CMM): who is in, who is master, who must be fenced.

* :mod:`.model` -- settings, state, events and actions (frozen dataclasses).
* :mod:`.policy` -- the pure policy: ``decide(config, state, event, now) -> Decision``.
* :mod:`.service` -- the asyncio adapter over corosync (CPG group + votequorum) and a fencer.
* :mod:`.wire` -- the CMM's messages on its CPG group.
"""
