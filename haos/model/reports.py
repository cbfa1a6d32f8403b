"""Error reports, recovery levels and the notifications the availability manager publishes.

These are the messages that flow HM -> CEC -> CRIM -> (executor, ASR, subscribers). They are
plain frozen data so every policy core stays pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RecoveryLevel(enum.IntEnum):
    """The recovery ladder, mildest first."""

    SOFT_RESET = 1
    RESTART = 2  # kill and hot restart in place
    FAILOVER = 3  # standby takes over, failed unit taken off-line
    REBOOT_NODE = 4

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


class ErrorKind(enum.Enum):
    CRASH = "crash"  # the process or unit died
    HANG = "hang"  # stopped answering (e.g. watchdog or audit overdue)
    AUDIT_FAILED = "audit-failed"
    AUDIT_OVERDUE = "audit-overdue"
    ERROR = "error"  # an in-line error check fired
    HARDWARE = "hardware"
    # Errors that will happen again however often the component is restarted on its node
    # (OCF's ERR_ARGS, ERR_UNIMPLEMENTED, ERR_PERM, ERR_INSTALLED: a missing binary, no
    # permission): the component is taken out of service on that node, never retried there.
    HARD = "hard"
    # The component's configuration is wrong (OCF's ERR_CONFIGURED): it is wrong on every
    # node, so every member of the group run the same way is stopped and an alarm raised.
    MISCONFIGURED = "misconfigured"

    def __str__(self) -> str:
        return self.value

    @property
    def definitive(self) -> bool:
        """Whether no recovery in place can help: the report is a verdict on the component."""
        return self in (ErrorKind.HARD, ErrorKind.MISCONFIGURED)


# The mildest recovery that can possibly help, per kind of error: a dead process cannot be
# soft-reset.
MINIMUM_LEVEL: dict[ErrorKind, RecoveryLevel] = {
    ErrorKind.CRASH: RecoveryLevel.RESTART,
    ErrorKind.HANG: RecoveryLevel.SOFT_RESET,
    ErrorKind.AUDIT_FAILED: RecoveryLevel.SOFT_RESET,
    ErrorKind.AUDIT_OVERDUE: RecoveryLevel.SOFT_RESET,
    ErrorKind.ERROR: RecoveryLevel.SOFT_RESET,
    ErrorKind.HARDWARE: RecoveryLevel.FAILOVER,
    ErrorKind.HARD: RecoveryLevel.FAILOVER,
    ErrorKind.MISCONFIGURED: RecoveryLevel.FAILOVER,
}


@dataclass(frozen=True)
class ErrorReport:
    """A report that something is wrong with ``component``.

    ``observed_at`` is when the cause was observed (not when the report arrived): it is what
    staleness is judged by. ``recommended`` is the mildest recovery the reporter (or the CEC
    after escalation) asks for; the CRIM never does less.
    """

    component: str
    kind: ErrorKind
    observed_at: float
    source: str = ""
    detail: str = ""
    recommended: RecoveryLevel | None = None

    def minimum_level(self) -> RecoveryLevel:
        base = MINIMUM_LEVEL[self.kind]
        if self.recommended is not None and self.recommended > base:
            return self.recommended
        return base


# --- notifications published by the CRIM -------------------------------------------------


@dataclass(frozen=True)
class RecoveryInitiated:
    component: str
    level: RecoveryLevel
    at: float
    reason: str = ""


@dataclass(frozen=True)
class ServiceOutage:
    """A service instance stopped being served by a healthy primary."""

    instance: str
    at: float
    cause: str = ""


@dataclass(frozen=True)
class ServiceRestored:
    """A service instance is served again by a healthy primary."""

    instance: str
    at: float
    by: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateChanged:
    component: str
    old: str
    new: str
    at: float


@dataclass(frozen=True)
class ComponentOutOfService:
    """A component was taken out of service and stays so until an operator brings it on-line.

    ``reason`` says why (a hard error, failing again while on probation, a node reboot that
    could not be ordered); ``haosctl online`` clears it.
    """

    component: str
    at: float
    reason: str


@dataclass(frozen=True)
class ComponentMisconfigured:
    """Alarm: ``component``'s configuration is wrong; ``stopped`` are the members stopped."""

    component: str
    at: float
    detail: str
    stopped: tuple[str, ...] = ()


Notification = (
    RecoveryInitiated
    | ServiceOutage
    | ServiceRestored
    | StateChanged
    | ComponentOutOfService
    | ComponentMisconfigured
)
