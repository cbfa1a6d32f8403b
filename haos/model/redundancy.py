"""Redundancy models, recovery policy, service groups and service instances (pure data)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RedundancyModel(enum.Enum):
    TWO_N = "2N"
    N_PLUS_M = "N+M"
    N_WAY_ACTIVE = "N-way-active"  # load sharing
    HOT_RESTART = "hot-restart"
    NO_REDUNDANCY = "no-redundancy"

    def __str__(self) -> str:
        return self.value

    @property
    def has_standby(self) -> bool:
        """Whether each service instance gets a secondary (hot standby)."""
        return self in (RedundancyModel.TWO_N, RedundancyModel.N_PLUS_M)

    @property
    def exclusive_primary(self) -> bool:
        """Whether a service instance must never have two primaries."""
        return self is not RedundancyModel.N_WAY_ACTIVE


@dataclass(frozen=True)
class RecoveryPolicy:
    """Limits and probation windows of the recovery ladder (OpenSAF-style probation).

    Within ``component_probation`` seconds a component gets at most ``soft_reset_max`` soft
    resets and ``restart_max`` hot restarts; beyond that its service group fails over. Within
    ``group_probation`` seconds a service group fails over at most ``failover_max`` times;
    beyond that the failed component's node is rebooted, if those fail-overs all happened on
    that node (else the fault follows the component, and it only fails over). A member that
    fails over twice within ``component_probation`` stays out of service. A recovery action
    that has not brought the component back within ``recovery_timeout`` seconds counts as
    failed and escalates. With ``auto_repair`` a component taken off-line is restarted so it
    can come back as a spare.
    """

    soft_reset_max: int = 1
    restart_max: int = 2
    component_probation: float = 60.0
    failover_max: int = 3
    group_probation: float = 300.0
    recovery_timeout: float = 10.0
    auto_repair: bool = True
    reboot_node: bool = True  # may the ladder end in a node reboot?


@dataclass(frozen=True)
class ServiceGroup:
    """Components that together provide service instances under one redundancy model.

    ``active`` is N (components that may be primary), ``standby`` is M (components that may
    be secondary). For 2N both are 1; for hot-restart and no-redundancy ``standby`` is 0.
    ``failback`` moves work back to a higher-ranked member when it returns.
    ``persistent_checkpoint``: the members' shared checkpoint is also kept on disk in the
    repository, so it survives the power loss of the whole cluster (each synchronous write
    then waits for a repository write too).
    """

    name: str
    model: RedundancyModel
    members: tuple[str, ...]
    active: int
    standby: int
    recovery: RecoveryPolicy
    failback: bool = False
    persistent_checkpoint: bool = False


@dataclass(frozen=True)
class ServiceInstance:
    """A unit of work assigned to components of one service group.

    ``actives`` is how many primaries it wants (more than one only under N-way-active).
    ``rank`` orders assignment when capacity is short: lower ranks are served first.
    """

    name: str
    group: str
    rank: int = 0
    actives: int = 1
