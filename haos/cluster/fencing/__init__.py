"""Fencing: cut a failed node off before another node takes over its work.

* :mod:`.types` -- the :class:`~.types.Fencer` Protocol and :class:`~.types.FenceResult`.
* :mod:`.agent` -- :class:`~.agent.FenceAgentFencer`: Debian's ``fence-agents``, unchanged.
* :mod:`.command` -- :class:`~.command.CommandFencer`: an argv template (the lab's harness).
* :mod:`.compose` -- one device per node, the fencing delays, no device.
* :mod:`.watchdog` -- self-fencing: :class:`~.watchdog.SelfFencer` over a watchdog device.
* :mod:`.fakes` -- :class:`~.fakes.ScriptedFencer` for tests.
"""

from haos.cluster.fencing.types import (
    FENCE_ACTIONS,
    FenceAction,
    FenceError,
    Fencer,
    FenceResult,
    PowerStatus,
)

__all__ = ["FENCE_ACTIONS", "FenceAction", "FenceError", "FenceResult", "Fencer", "PowerStatus"]
