"""The one small error tree of haos.

Every error carries a stable ``code`` that ``haosctl --json`` prints. Foreign errors are
translated with ``raise ... from e`` at the adapter boundary.
"""

from __future__ import annotations

from dataclasses import dataclass


class HaosError(Exception):
    """Base of every error haos raises on purpose."""

    code = "haos"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in one configuration file: where it is and what is wrong."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class ConfigError(HaosError):
    """Configuration is invalid; nothing of it was applied.

    ``problems`` lists every problem found, one per entry, each naming file, key path and
    reason.
    """

    code = "config"

    def __init__(self, problems: list[ConfigProblem] | tuple[ConfigProblem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ModelError(HaosError):
    """A request violates the availability model (bad name, unknown component, ...)."""

    code = "model"


class IllegalTransition(ModelError):
    """An availability state transition that FIG 5 of the design does not allow."""

    code = "illegal-transition"


class UsageError(HaosError):
    """A command-line or API request is malformed."""

    code = "usage"


class UnavailableError(HaosError):
    """A dependency is unreachable right now; retrying may succeed."""

    code = "unavailable"


class NotActiveError(UnavailableError):
    """A request for the active availability service reached a node whose service is not
    active (mastership moved, or it is still taking over): ask the master again."""

    code = "not-active"


class NotOpenError(UsageError):
    """A checkpoint operation named a checkpoint this node's daemon has not opened (it may
    have restarted and forgotten it): open it again."""

    code = "not-open"


class ConflictError(HaosError):
    """A compare-and-swap lost: the revision changed under the caller."""

    code = "conflict"


class FatalError(HaosError):
    """The process cannot go on safely."""

    code = "fatal"
