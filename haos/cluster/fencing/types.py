"""What every fencer promises: the :class:`Fencer` Protocol and the result of one fencing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from haos.config.model import NodeSpec
from haos.errors import UnavailableError, UsageError

FenceAction = Literal["off", "reboot"]
PowerStatus = Literal["on", "off"]
FENCE_ACTIONS: tuple[FenceAction, ...] = ("off", "reboot")


def check_action(action: str) -> FenceAction:
    """``action`` as a :data:`FenceAction`; UsageError for anything else."""
    if action == "off":
        return "off"
    if action == "reboot":
        return "reboot"
    raise UsageError(f"fence action must be one of {', '.join(FENCE_ACTIONS)}, not {action!r}")


@dataclass(frozen=True)
class FenceResult:
    """The outcome of fencing ``node`` (its name): ``ok`` only when the device confirmed it.

    ``detail`` says why it failed (or how it succeeded) in one line, for logs and reasons.
    """

    node: str
    action: FenceAction
    ok: bool
    detail: str = ""


class FenceError(UnavailableError):
    """The fence device could not be asked (unreachable, timed out, refused); retry later."""

    code = "fence"


class Fencer(Protocol):
    """Cuts a node off from shared resources: power it off or reset it.

    Contract, for every implementation:

    * :meth:`fence` is idempotent (fencing a node that is already off succeeds) and bounded
      in time (each adapter has a timeout). It reports device failures in the result
      (``ok=False``, never an exception) so the caller retries; it raises only
      :class:`~haos.errors.UsageError` for a request it cannot even try (unknown node,
      unknown action).
    * ``ok=True`` means the device confirmed: the node is off (``off``), or was off and was
      switched on again (``reboot``). Only then may another node take over its work.
    * :meth:`status` asks the device; raises :class:`FenceError` when it cannot tell.
    """

    async def fence(self, node: NodeSpec, action: FenceAction = "off") -> FenceResult:
        """Power ``node`` off, or reset it; see the class contract."""
        ...

    async def status(self, node: NodeSpec) -> PowerStatus:
        """Whether ``node`` is powered on or off; FenceError if the device cannot tell."""
        ...
