"""Corosync's ``cs_error_t`` codes and the haos errors they translate into."""

from __future__ import annotations

from enum import IntEnum

from haos.errors import HaosError, UnavailableError


class CsError(IntEnum):
    """``cs_error_t`` from ``<corosync/corotypes.h>`` (corosync 3.1); 29 is unassigned."""

    CS_OK = 1
    CS_ERR_LIBRARY = 2
    CS_ERR_VERSION = 3
    CS_ERR_INIT = 4
    CS_ERR_TIMEOUT = 5
    CS_ERR_TRY_AGAIN = 6
    CS_ERR_INVALID_PARAM = 7
    CS_ERR_NO_MEMORY = 8
    CS_ERR_BAD_HANDLE = 9
    CS_ERR_BUSY = 10
    CS_ERR_ACCESS = 11
    CS_ERR_NOT_EXIST = 12
    CS_ERR_NAME_TOO_LONG = 13
    CS_ERR_EXIST = 14
    CS_ERR_NO_SPACE = 15
    CS_ERR_INTERRUPT = 16
    CS_ERR_NAME_NOT_FOUND = 17
    CS_ERR_NO_RESOURCES = 18
    CS_ERR_NOT_SUPPORTED = 19
    CS_ERR_BAD_OPERATION = 20
    CS_ERR_FAILED_OPERATION = 21
    CS_ERR_MESSAGE_ERROR = 22
    CS_ERR_QUEUE_FULL = 23
    CS_ERR_QUEUE_NOT_AVAILABLE = 24
    CS_ERR_BAD_FLAGS = 25
    CS_ERR_TOO_BIG = 26
    CS_ERR_NO_SECTIONS = 27
    CS_ERR_CONTEXT_NOT_FOUND = 28
    CS_ERR_TOO_MANY_GROUPS = 30
    CS_ERR_SECURITY = 100


def cs_error_name(rc: int) -> str:
    """The ``CS_ERR_*`` name of ``rc``, or ``CS_ERR_UNKNOWN_<rc>`` for a code we do not know."""
    try:
        return CsError(rc).name
    except ValueError:
        return f"CS_ERR_UNKNOWN_{rc}"


class CorosyncError(HaosError):
    """A corosync library call failed.

    ``operation`` names the C function (``cpg_join``), ``cs_code`` is the raw ``cs_error_t``
    (``None`` when the failure happened before corosync answered, e.g. a missing library) and
    ``cs_name`` its symbolic name (``CS_ERR_EXIST``), which also appears in the message.
    """

    code = "corosync"

    def __init__(self, operation: str, cs_code: int | None, detail: str = "") -> None:
        self.operation = operation
        self.cs_code = cs_code
        self.cs_name = cs_error_name(cs_code) if cs_code is not None else "no cs_error_t"
        message = f"{operation}: {self.cs_name}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class CorosyncUnavailableError(CorosyncError, UnavailableError):
    """Corosync is not running, not reachable from this network namespace, went away, or kept
    answering CS_ERR_TRY_AGAIN for longer than the retry budget. Retrying later may succeed."""

    code = "corosync-unavailable"
