"""The availability service's news: one record per event, its wire form, each node's history.

A :class:`Record` says what happened in the cluster as the availability service (the CRIM on
the master) decided it: a component's new role, a recovery, a node joined or left, an
operator command's outcome, an instance no longer served or served again. It names the
decision it came of, and that makes it unique in the cluster:

* ``epoch`` -- the mastership that made the decision (claimed in the repository, increasing
  across the cluster's life, whole-cluster restarts included);
* ``seq`` -- the decision's number (a new master continues from the checkpointed one);
* ``index`` -- its place among that decision's records.

Records travel over CES as UTF-8 JSON objects (event type ``crim/<kind>``). Every node keeps
the last ones in an :class:`EventRing`, which drops what it holds already and what a
superseded master still sends (see :meth:`EventRing.add`): a new master publishes again the
records of the last decision it restored (its predecessor may have died before publishing
them), and the nodes that had them drop them. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from haos.errors import UsageError

PREFIX = "crim/"  # the CES event types of records: crim/<kind>
KINDS = ("role", "recovery", "node", "operator", "outage", "restored")
MAX_TEXT = 4096  # characters of a record's text or subject
_MAX_NUMBER = 2**63 - 1

Key = tuple[int, int, int]


@dataclass(frozen=True)
class Record:
    """One event as every node keeps it; ``at`` is wall-clock time (seconds since the epoch).

    ``text`` says it in words; ``details`` holds the same as data (strings, numbers, lists of
    strings), e.g. ``{"old": "secondary", "new": "primary", "node": "n2"}`` for a role.
    """

    epoch: int
    seq: int
    index: int
    at: float
    kind: str
    subject: str
    text: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.epoch, self.seq, self.index)

    @property
    def event_type(self) -> str:
        return PREFIX + self.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "seq": self.seq,
            "index": self.index,
            "at": self.at,
            "kind": self.kind,
            "subject": self.subject,
            "text": self.text,
            "details": dict(self.details),
        }


def record_from_json(obj: object) -> Record:
    """The record ``obj`` holds; UsageError naming the field that is wrong."""
    if not isinstance(obj, Mapping):
        raise UsageError(f"event record: expected an object, got {type(obj).__name__}")
    numbers = {}
    for name in ("epoch", "seq", "index"):
        value = obj.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_NUMBER:
            raise UsageError(f"event record: {name} must be a whole number >= 0, not {value!r}")
        numbers[name] = value
    at = obj.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise UsageError(f"event record: at must be a finite number, not {at!r}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise UsageError(f"event record: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    texts = {}
    for name in ("subject", "text"):
        value = obj.get(name)
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise UsageError(f"event record: {name} must be text of <= {MAX_TEXT} characters")
        texts[name] = value
    details = obj.get("details", {})
    if not isinstance(details, Mapping) or not all(isinstance(k, str) for k in details):
        raise UsageError("event record: details must be an object")
    return Record(
        numbers["epoch"],
        numbers["seq"],
        numbers["index"],
        float(at),
        str(kind),
        texts["subject"],
        texts["text"],
        dict(details),
    )


def encode(record: Record) -> bytes:
    """The CES payload of ``record``."""
    return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")).encode()


def decode(payload: bytes) -> Record:
    """The record in a CES payload; UsageError if it is not one."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"event record is not UTF-8 JSON: {e}") from None
    return record_from_json(obj)


class EventRing:
    """The last ``size`` records a node received, oldest first, without duplicates.

    :meth:`add` keeps a record only if it is news: of a newer mastership than every record so
    far, or of the newest one and later (``(seq, index)``) than the last kept. So a record
    kept already, and whatever a superseded master sends once a newer one published, are
    dropped (and counted in ``dropped``).
    """

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError("an event ring holds at least one record")
        self._records: deque[Record] = deque(maxlen=size)
        self._last: Key | None = None
        self.dropped = 0

    @property
    def last(self) -> Key | None:
        """The key of the newest record kept (None before the first)."""
        return self._last

    def add(self, record: Record) -> bool:
        """Keep ``record`` if it is news (see the class docstring); whether it was kept."""
        if self._last is not None and not is_news(record.key, self._last):
            self.dropped += 1
            return False
        self._records.append(record)
        self._last = record.key
        return True

    def since(self, at: float | None = None) -> list[Record]:
        """The records kept, oldest first; only those at or after ``at`` if given."""
        if at is None:
            return list(self._records)
        return [r for r in self._records if r.at >= at]

    def __len__(self) -> int:
        return len(self._records)


def is_news(key: Key, last: Key) -> bool:
    """Whether a record keyed ``key`` follows the one keyed ``last`` (see :class:`EventRing`)."""
    epoch, seq, index = key
    last_epoch, last_seq, last_index = last
    if epoch != last_epoch:
        return epoch > last_epoch
    return (seq, index) > (last_seq, last_index)
