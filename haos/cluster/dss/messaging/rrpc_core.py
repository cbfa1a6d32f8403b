"""RRPC's pure state: the server's record of calls it ran, the caller's outstanding calls."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

CallKey = tuple[int, int, int]  # (caller node, caller instance, call id)


class Seen(enum.Enum):
    NEW = "new"  # run it
    RUNNING = "running"  # a retry of a call still running: drop it, the reply will come
    DONE = "done"  # a retry of a finished call: send the kept reply again


@dataclass
class ReplyCache:
    """Each call a server was asked to run, so a retried request runs it at most once.

    Finished calls keep their reply (the status byte and payload as encoded) until ``limit``
    newer calls finished, or until the caller's node leaves. Running calls are never evicted.
    """

    limit: int = 1024
    _running: set[CallKey] = field(default_factory=set)
    _done: OrderedDict[CallKey, bytes] = field(default_factory=OrderedDict)

    def begin(self, key: CallKey) -> tuple[Seen, bytes | None]:
        if key in self._running:
            return Seen.RUNNING, None
        if key in self._done:
            self._done.move_to_end(key)
            return Seen.DONE, self._done[key]
        self._running.add(key)
        return Seen.NEW, None

    def finish(self, key: CallKey, reply: bytes) -> None:
        self._running.discard(key)
        self._done[key] = reply
        while len(self._done) > self.limit:
            self._done.popitem(last=False)

    def forget_callers_except(self, members: Iterable[int]) -> None:
        """Drop finished calls of callers whose node is no longer a member."""
        alive = set(members)
        for key in [k for k in self._done if k[0] not in alive]:
            del self._done[key]

    def __len__(self) -> int:
        return len(self._running) + len(self._done)


@dataclass
class CallTable:
    """The caller's outstanding calls: call id -> the server node it is waiting on."""

    _calls: dict[int, int] = field(default_factory=dict)

    def start(self, call_id: int, server: int) -> None:
        self._calls[call_id] = server

    def server_of(self, call_id: int) -> int | None:
        return self._calls.get(call_id)

    def finish(self, call_id: int) -> None:
        self._calls.pop(call_id, None)

    def orphaned(self, members: Iterable[int]) -> list[int]:
        """Calls whose server is not among ``members``: they can never be answered."""
        alive = set(members)
        return [c for c, server in self._calls.items() if server not in alive]

    def __len__(self) -> int:
        return len(self._calls)
