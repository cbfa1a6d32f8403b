"""The cluster's events, for any program on a node: role changes, recoveries, node events,
operator commands' outcomes, outages and restorations, as the availability service decided
them (the records ``haosctl events`` prints).

::

    async for event in cluster_events(since=time.time() - 600):
        print(event.at, event.kind, event.text)

It reads the node's cluster daemon (its control socket, ``/run/haos/control.sock`` by
default): first the events the node keeps (all, or those at or after ``since``), then, with
``follow`` (the default), each new one as it comes. Without ``follow`` and without ``since``
it yields every event the node keeps and ends.

Raises :class:`~haos.errors.UnavailableError` when the daemon cannot be reached, closes a
followed stream or the reader fell so far behind that it missed events (subscribe again, with
``since`` set to the last event's ``at``; :attr:`ClusterEvent.key` tells duplicates apart), and
:class:`DaemonError` when it refuses the request (:class:`~haos.errors.UsageError`, nothing
sent, for a ``since`` that is not a finite number). Imports only :mod:`haos.errors` and
:mod:`haos.jsonlines`, like the rest of this package.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from haos import jsonlines
from haos.errors import HaosError, UnavailableError

__all__ = ["DEFAULT_CONTROL", "ClusterEvent", "DaemonError", "cluster_events"]

DEFAULT_CONTROL = "/run/haos/control.sock"


class DaemonError(HaosError):
    """The cluster daemon refused the request; ``error`` is its code."""

    code = "daemon"

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        super().__init__(f"{error}: {message}")


@dataclass(frozen=True)
class ClusterEvent:
    """One event. ``at``: wall-clock time (seconds since the epoch); ``kind``: ``role``,
    ``recovery``, ``node``, ``operator``, ``outage`` or ``restored``; ``subject``: the
    component, node, instance or operator target; ``text``: what happened, in words;
    ``details``: the same as data (for a role: ``old``, ``new``, ``node``, ``instances``)."""

    epoch: int
    seq: int
    index: int
    at: float
    kind: str
    subject: str
    text: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, int, int]:
        """Unique in the cluster: the mastership, the decision and its place in it."""
        return (self.epoch, self.seq, self.index)


async def cluster_events(
    *,
    control: str = DEFAULT_CONTROL,
    since: float | None = None,
    follow: bool = True,
    timeout: float = 15.0,
) -> AsyncGenerator[ClusterEvent, None]:
    """See the module docstring; ``timeout`` bounds the connection and the daemon's first
    answer (not the wait for events)."""
    request = {"op": "events", "cluster": True, "since": since, "follow": follow}
    line = jsonlines.encode(request)  # UsageError (nothing sent) for a since not finite
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await jsonlines.open_unix_connection(control)
    except (OSError, TimeoutError) as e:
        raise UnavailableError(f"cluster daemon at {control} unreachable: {e}") from e
    try:
        try:
            async with asyncio.timeout(timeout):
                writer.write(line)
                await writer.drain()
                _opening(await _read(reader, control), control)
        except TimeoutError:
            raise UnavailableError(f"cluster daemon at {control} did not answer in time") from None
        while (message := await _read(reader, control)) is not None:
            if message.get("ok") is False:
                raise _refusal(message)
            yield _event(message, control)
        if follow:
            raise UnavailableError(f"cluster daemon at {control} closed the events stream")
    finally:
        writer.close()


async def _read(reader: asyncio.StreamReader, control: str) -> dict[str, Any] | None:
    try:
        line = await jsonlines.read_line(reader, "an events line")
        return None if line is None else jsonlines.decode(line)
    except jsonlines.BadLine as e:
        raise UnavailableError(f"cluster daemon at {control} sent a bad line: {e}") from None
    except ConnectionError as e:
        raise UnavailableError(f"cluster daemon at {control}: {e}") from e


def _opening(message: dict[str, Any] | None, control: str) -> None:
    if message is None:
        raise UnavailableError(f"cluster daemon at {control} closed without an answer")
    if message.get("ok") is not True:
        raise _refusal(message)


def _refusal(message: dict[str, Any]) -> HaosError:
    error, text = str(message.get("error")), str(message.get("message"))
    if error == UnavailableError.code:
        return UnavailableError(text)
    return DaemonError(error, text)


def _event(obj: dict[str, Any], control: str) -> ClusterEvent:
    try:
        epoch, seq, index = (obj[name] for name in ("epoch", "seq", "index"))
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (epoch, seq, index)):
            raise TypeError("epoch, seq and index must be whole numbers")
        at, details = obj["at"], obj.get("details", {})
        if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(details, dict):
            raise TypeError("at must be a number and details an object")
        kind, subject, text = (obj[name] for name in ("kind", "subject", "text"))
        if not all(isinstance(t, str) for t in (kind, subject, text)):
            raise TypeError("kind, subject and text must be strings")
    except (KeyError, TypeError, ValueError) as e:
        raise UnavailableError(f"cluster daemon at {control} sent a bad event: {e}") from None
    return ClusterEvent(epoch, seq, index, float(at), kind, subject, text, details)
