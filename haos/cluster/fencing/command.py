"""Fencing through a command: an argv template run once per fencing (``[fencing] command``).

The template's words may hold ``{node}`` (the node's name), ``{node_id}`` and ``{action}``
(``off`` or ``reboot``). Exit status 0 means the node is fenced; anything else, or running
past the timeout, is a failed fencing (the command's process group is killed). The command
inherits the daemon's environment (the lab's fence command is a Python module found through
the unit's ``PYTHONPATH``); its stdin is closed and its output kept for the failure reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from haos.cluster.fencing.types import FenceAction, FenceError, FenceResult, PowerStatus
from haos.cluster.fencing.types import check_action as _check_action
from haos.config.model import NodeSpec
from haos.errors import UnavailableError, UsageError
from haos.proc import run_program

log = logging.getLogger(__name__)

_TAIL = 300  # characters of the command's output kept in a failure reason


class CommandFencer:
    """A :class:`~haos.cluster.fencing.types.Fencer` that runs ``template`` for a node."""

    def __init__(self, template: Sequence[str], *, timeout: float = 60.0) -> None:
        if not template:
            raise UsageError("a fence command needs at least the program")
        if not timeout > 0:
            raise UsageError(f"fence timeout must be positive, not {timeout!r}")
        self._template = tuple(template)
        self._timeout = timeout

    def argv(self, node: NodeSpec, action: FenceAction) -> list[str]:
        return [
            word.format(node=node.name, node_id=node.node_id, action=action)
            for word in self._template
        ]

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        """Run the command; ok on exit status 0 within the timeout."""
        action = _check_action(action)
        argv = self.argv(node, action)
        try:
            detail = await self._run(argv)
        except OSError as e:
            detail = f"fence command {argv[0]} cannot run: {e.strerror or e}"
        if detail is None:
            log.info("fenced %s (%s) by command %s", node.name, action, argv[0])
            return FenceResult(node.name, action, True, f"fence command {action} done")
        log.warning("fencing %s failed: %s", node.name, detail)
        return FenceResult(node.name, action, False, detail)

    async def _run(self, argv: list[str]) -> str | None:
        """None when it succeeded, else why not."""
        try:
            # The daemon's own environment: a command may rely on what its unit sets (the
            # lab's fence command finds haos through the unit's PYTHONPATH).
            done = await run_program(argv, dict(os.environ), timeout=self._timeout, tail=_TAIL)
        except UnavailableError as e:
            return str(e)
        if done.timed_out:
            return f"fence command timed out after {self._timeout:g} s"
        if done.returncode == 0:
            return None
        tail = (done.stdout + done.stderr).strip()[-_TAIL:]
        return f"fence command exited {done.returncode}: {tail or 'no output'}"

    async def status(self, node: NodeSpec) -> PowerStatus:
        """A command has no status action."""
        raise FenceError(f"the fence command cannot tell the power state of {node.name}")
