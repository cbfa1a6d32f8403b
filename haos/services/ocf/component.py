"""A haos component whose availability state is carried out by an OCF resource agent.

The availability states map onto the agent's three levels -- stopped, started, promoted:

============  ======================  ===================
state         promotable agent        plain agent
============  ======================  ===================
offline       stopped                 stopped
spare         stopped                 stopped
secondary     started (unpromoted)    stopped
primary       promoted                started
============  ======================  ===================

A plain (non-promotable) agent has no standby role it could run in, and running two copies of
one (say, an ``IPaddr2``) would make two primaries: so its secondary is a cold standby,
stopped. :func:`plan` is the pure part; :class:`OcfComponent` runs the plan through an
:class:`OcfRunner` and turns monitor results into :class:`ErrorReport` values.
"""

from __future__ import annotations

from typing import Protocol

from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState, check_transition
from haos.services.ocf.agent import AgentResult, OcfAction, OcfAgentError, OcfRc

_STOPPED, _STARTED, _PROMOTED = 0, 1, 2


def level(state: AvailabilityState, promotable: bool) -> int:
    """0 stopped, 1 started, 2 promoted: what ``state`` means for the agent."""
    if state is AvailabilityState.PRIMARY:
        return _PROMOTED if promotable else _STARTED
    if state is AvailabilityState.SECONDARY and promotable:
        return _STARTED
    return _STOPPED


def plan(
    current: AvailabilityState, new: AvailabilityState, promotable: bool
) -> tuple[OcfAction, ...]:
    """The agent actions, in order, that take the resource from ``current`` to ``new``.

    Total over all pairs (legality of the transition is the caller's business): going up,
    start then promote; going down, demote then stop; no actions when the level is the same.
    """
    old, target = level(current, promotable), level(new, promotable)
    actions: list[OcfAction] = []
    if target > old:
        if old == _STOPPED:
            actions.append(OcfAction.START)
        if target == _PROMOTED:
            actions.append(OcfAction.PROMOTE)
    elif target < old:
        if old == _PROMOTED:
            actions.append(OcfAction.DEMOTE)
        if target == _STOPPED:
            actions.append(OcfAction.STOP)
    return tuple(actions)


# Monitor results that are not healthy: (kind, mildest useful recovery, what it means).
# As in Pacemaker, the return codes fall into three classes: soft errors (generic, not
# running, failed while promoted) may be cured by a restart in place; hard errors (args,
# unimplemented, perm, installed) will happen again on this node, so the component is taken
# out of service here and never retried on it; a configuration error is wrong on every
# node, so the component is stopped everywhere.
_MONITOR_FAILURES: dict[OcfRc, tuple[ErrorKind, RecoveryLevel, str]] = {
    OcfRc.NOT_RUNNING: (ErrorKind.CRASH, RecoveryLevel.RESTART, "not running"),
    OcfRc.ERR_GENERIC: (ErrorKind.ERROR, RecoveryLevel.RESTART, "failed"),
    OcfRc.FAILED_PROMOTED: (ErrorKind.ERROR, RecoveryLevel.RESTART, "failed while promoted"),
    OcfRc.ERR_ARGS: (ErrorKind.HARD, RecoveryLevel.FAILOVER, "bad arguments"),
    OcfRc.ERR_UNIMPLEMENTED: (ErrorKind.HARD, RecoveryLevel.FAILOVER, "action unimplemented"),
    OcfRc.ERR_PERM: (ErrorKind.HARD, RecoveryLevel.FAILOVER, "insufficient permissions"),
    OcfRc.ERR_INSTALLED: (ErrorKind.HARD, RecoveryLevel.FAILOVER, "not installed on this node"),
    OcfRc.ERR_CONFIGURED: (ErrorKind.MISCONFIGURED, RecoveryLevel.FAILOVER, "misconfigured"),
}
HEALTHY = frozenset({OcfRc.SUCCESS, OcfRc.RUNNING_PROMOTED})


def health(
    component: str, result: AgentResult, now: float, source: str = "ocf"
) -> ErrorReport | None:
    """None when a monitor ``result`` says the resource is healthy (0 or 8), else the report.

    A monitor killed at its timeout is a HANG.
    """
    if result.timed_out:
        return ErrorReport(
            component, ErrorKind.HANG, now, source, result.describe(), RecoveryLevel.RESTART
        )
    if result.rc in HEALTHY:
        return None
    kind, recovery, meaning = _MONITOR_FAILURES[result.rc]
    detail = f"{meaning}: {result.describe()}"
    return ErrorReport(component, kind, now, source, detail, recovery)


def failed_action(
    component: str, result: AgentResult, now: float, source: str = "ocf"
) -> ErrorReport | None:
    """The report a failed ``start``/``promote``/... calls for when its code is definitive.

    Hard errors and configuration errors (see ``_MONITOR_FAILURES``) say what no retry will
    change, so they are reported as such (ErrorKind.HARD / MISCONFIGURED). None for the
    others: a soft failure of an action is reported by whoever asked for the action.
    """
    if result.timed_out or result.rc not in _MONITOR_FAILURES:
        return None
    kind, recovery, meaning = _MONITOR_FAILURES[result.rc]
    if not kind.definitive:
        return None
    return ErrorReport(component, kind, now, source, f"{meaning}: {result.describe()}", recovery)


class OcfRunner(Protocol):
    """What :class:`OcfComponent` needs of an agent (:class:`~.agent.OcfAgent` is one)."""

    @property
    def name(self) -> str: ...

    async def run(self, action: OcfAction, *, interval: float = 0.0) -> AgentResult: ...

    async def monitor(self, *, probe: bool = False) -> AgentResult: ...


class OcfComponent:
    """One component carried out by one OCF resource on this node.

    ``state`` is the availability state the resource is believed to be in (``offline``:
    stopped). After a failed action the state is left at the last one fully reached.
    """

    def __init__(
        self,
        name: str,
        agent: OcfRunner,
        *,
        promotable: bool,
        state: AvailabilityState = AvailabilityState.OFFLINE,
    ) -> None:
        self.name = name
        self.agent = agent
        self.promotable = promotable
        self.state = state

    async def transition(self, new: AvailabilityState) -> tuple[AgentResult, ...]:
        """Take the resource to ``new`` (a FIG 5 transition): run :func:`plan`'s actions.

        Raises :class:`~haos.errors.IllegalTransition` before running anything, and
        :class:`OcfAgentError` at the first action that fails (later ones are not run).
        """
        check_transition(self.name, self.state, new)
        results: list[AgentResult] = []
        for action in plan(self.state, new, self.promotable):
            result = await self.agent.run(action)
            results.append(result)
            if not result.ok:
                raise OcfAgentError(f"{self.name} ({self.agent.name})", result)
        self.state = new
        return tuple(results)

    async def check(self, now: float) -> ErrorReport | None:
        """Run the monitor; None when healthy, else the :class:`ErrorReport` to raise."""
        return health(self.name, await self.agent.monitor(), now, source=self.agent.name)
