"""The CCR's data: keys, operations, changes, log entries, snapshots, and their limits.

Keys are ``/``-separated paths such as ``/services/web/port``: they start with ``/``, have at
least one segment, no empty segment (no ``//``, no trailing ``/``), only printable
non-blank characters, and at most :data:`MAX_KEY_BYTES` bytes of UTF-8. A *prefix* (for
ranges and watches) is ``/`` (everything) or a key; it selects that key and every key below
it: ``/a/b`` selects ``/a/b`` and ``/a/b/c`` but not ``/a/bc``.

Values are bytes; the API also takes ``str``, stored as UTF-8.

Every applied transaction is one :class:`Entry` with the next revision: the store's revision
is the number of transactions applied. A key's ``mod_revision`` is the revision of the entry
that last wrote it; 0 in a :class:`Compare` means "the key does not exist".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from haos.errors import UsageError

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 256 * 1024
MAX_TXN_BYTES = 512 * 1024  # stays well below corosync's ~1 MiB IPC message bound
MAX_TXN_ITEMS = 1024  # compares + ops in one transaction


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"a key must be a str, not {type(key).__name__}"
    if not key.startswith("/") or key == "/":
        return f"key {key!r} must start with '/' and name at least one segment"
    if len(key.encode("utf-8", errors="replace")) > MAX_KEY_BYTES:
        return f"key of {len(key.encode('utf-8', errors='replace'))} bytes exceeds {MAX_KEY_BYTES}"
    # Of the blank characters only the ASCII space is printable: a printable key without it
    # has no character to look at one by one.
    clean = key.isprintable() and " " not in key
    for segment in key[1:].split("/"):
        if not segment:
            return f"key {key!r} has an empty segment"
        if not clean and not all(c.isprintable() and not c.isspace() for c in segment):
            return f"key {key!r} has a blank or unprintable character"
    return None


def validate_key(key: str) -> str:
    """``key`` if it is a valid key; else UsageError naming the problem."""
    problem = _key_problem(key)
    if problem is not None:
        raise UsageError(problem)
    return key


def validate_prefix(prefix: str) -> str:
    """``prefix`` if it is ``/`` or a valid key; else UsageError."""
    return prefix if prefix == "/" else validate_key(prefix)


def is_key(key: object) -> bool:
    return _key_problem(key) is None


def in_prefix(prefix: str, key: str) -> bool:
    """Whether ``prefix`` selects ``key`` (see the module docstring)."""
    return prefix == "/" or key == prefix or key.startswith(prefix + "/")


def as_value(value: bytes | str) -> bytes:
    """The stored form of a value; UsageError if it is too large or of another type."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise UsageError(f"a value must be bytes or str, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise UsageError(f"value of {len(value)} bytes exceeds {MAX_VALUE_BYTES}")
    return value


# -- operations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True)
class Delete:
    """Delete ``key``; deleting a key that does not exist changes nothing."""

    key: str


@dataclass(frozen=True)
class DeletePrefix:
    """Delete every key ``prefix`` selects."""

    prefix: str


Op = Put | Delete | DeletePrefix


@dataclass(frozen=True)
class Compare:
    """The transaction applies only if ``key``'s mod_revision equals ``mod_revision``.

    ``mod_revision == 0`` requires that the key does not exist.
    """

    key: str
    mod_revision: int


def check_txn(compares: Iterable[Compare], ops: Iterable[Op]) -> None:
    """UsageError unless every key, prefix and value of a transaction is valid."""
    count = 0
    for c in compares:
        validate_key(c.key)
        if c.mod_revision < 0:
            raise UsageError(f"compare on {c.key}: mod_revision must be >= 0")
        count += 1
    for op in ops:
        if isinstance(op, Put):
            validate_key(op.key)
            as_value(op.value)
        elif isinstance(op, Delete):
            validate_key(op.key)
        elif isinstance(op, DeletePrefix):
            validate_prefix(op.prefix)
        else:
            raise UsageError(f"not a CCR operation: {op!r}")
        count += 1
    if count > MAX_TXN_ITEMS:
        raise UsageError(f"a transaction holds at most {MAX_TXN_ITEMS} compares and ops")


# -- what a transaction did ----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class RequestId:
    """Names a write request: origin node, that process's incarnation, a sequence number."""

    node: int
    incarnation: int
    seq: int


@dataclass(frozen=True)
class Change:
    """One key's new value after a transaction; None: deleted."""

    key: str
    value: bytes | None


@dataclass(frozen=True)
class Entry:
    """One applied transaction: its revision, the epoch it was applied in, who asked, what
    changed (sorted by key; empty if it changed nothing)."""

    revision: int
    epoch: int
    request: RequestId
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Item:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True, order=True)
class Version:
    """How far a copy is: the epoch of its last entry, then its revision.

    Two copies with the same version hold the same history (one epoch has one writable view
    and one agreed order); a higher version holds every committed entry of a lower one.
    """

    epoch: int
    revision: int


@dataclass(frozen=True)
class Image:
    """A whole copy: its version and every item, sorted by key."""

    version: Version
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Durable:
    """What a store holds: the copy, the highest epoch promised, and the recent log.

    ``log`` holds the entries after ``base`` (oldest first); ``base`` is the version just
    before the first of them (the image's version when the log is empty).
    """

    image: Image
    promised_epoch: int
    base: Version
    log: tuple[Entry, ...]


EMPTY = Durable(Image(Version(0, 0), ()), 0, Version(0, 0), ())


def entry_bytes(entry: Entry) -> int:
    """About the bytes an entry's changes take (keys and values): what bounds the log."""
    return sum(len(c.key) + len(c.value or b"") + 8 for c in entry.changes)


def content_hash(revision: int, items: Iterable[Item]) -> bytes:
    """SHA-256 over the revision and every (key, value, mod_revision), sorted by key."""
    h = hashlib.sha256(b"haos-ccr-1")
    h.update(revision.to_bytes(8, "big"))
    for item in sorted(items, key=lambda i: i.key):
        key = item.key.encode("utf-8")
        h.update(len(key).to_bytes(4, "big"))
        h.update(key)
        h.update(len(item.value).to_bytes(4, "big"))
        h.update(item.value)
        h.update(item.mod_revision.to_bytes(8, "big"))
    return h.digest()
