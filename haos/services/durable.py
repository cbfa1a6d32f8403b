"""Durable copies of persistent checkpoints, kept in the repository (CCR).

The checkpoint service's :class:`~haos.cluster.dss.checkpoint.durable.DurableStore` for a
cluster daemon: checkpoint ``name`` is kept under ``/haos/checkpoints/<name>``, written on a
majority and on disk like every repository write, so a persistent checkpoint survives the
power loss of the whole cluster, and a save is all or nothing.

A copy that fits one repository value (256 KiB) is that value: every section, base64 in a
JSON object (format 1). A larger one (up to :data:`MAX_COPY` bytes of sections) is cut into
*parts* of :data:`PART_BYTES`, written a few per transaction under ``<key>/parts/<slot>/``,
and the key holds a manifest (format 2: the slot, the sections' sizes, the digest). Two slots
take turns: a save writes the slot the manifest does not name (emptied first: a save cut off
midway left parts there), and one last transaction points the manifest at it and deletes the
other slot, if no other save changed the manifest or the new parts meanwhile. So a reader sees
the old copy or the new one, whole; a save that lost such a race fails and is retried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from haos.cluster.dss.ccr.model import (
    MAX_TXN_BYTES,
    MAX_VALUE_BYTES,
    Compare,
    Delete,
    DeletePrefix,
    Item,
    Op,
    Put,
)
from haos.errors import UnavailableError, UsageError
from haos.limits import MAX_CHECKPOINT_SECTION, MiB

PREFIX = "/haos/checkpoints"
FORMAT = 1  # every section inline, in the key's value
PARTED = 2  # a manifest in the key's value; the sections in parts
_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Bytes of sections per part, and parts per transaction: two parts and their keys stay under
# the repository's transaction bound.
PART_BYTES = 200 * 1024
PARTS_PER_TXN = MAX_TXN_BYTES // (PART_BYTES + 8 * 1024)
# The most bytes of sections a durable copy holds: four sections at the limit. The manifest's
# last transaction names every part (one compare each), within the repository's 1024 items.
MAX_COPY = 4 * MAX_CHECKPOINT_SECTION
_SLOTS = ("a", "b")


class Repository(Protocol):
    async def get(self, key: str) -> Item | None: ...

    async def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], *, timeout: float | None = None
    ) -> int: ...


def key_of(name: str) -> str:
    """The repository key of checkpoint ``name`` (names outside ``[A-Za-z0-9._-]`` are
    hex-encoded, so every name has exactly one key)."""
    if _PLAIN.fullmatch(name) and not name.startswith("x-"):
        return f"{PREFIX}/{name}"
    return f"{PREFIX}/x-{name.encode().hex()}"


def slot_prefix(name: str, slot: str) -> str:
    """The prefix of the parts in ``slot`` (part ``i`` is ``<prefix>/<i>``)."""
    return f"{key_of(name)}/parts/{slot}"


def encode_sections(name: str, sections: Mapping[str, bytes]) -> bytes | None:
    """The inline (format 1) value of ``sections``; None if it would not fit one value."""
    body = {s: base64.b64encode(d).decode("ascii") for s, d in sorted(sections.items())}
    raw = json.dumps({"format": FORMAT, "name": name, "sections": body}).encode()
    return raw if len(raw) <= MAX_VALUE_BYTES else None


def decode_sections(name: str, raw: bytes) -> dict[str, bytes]:
    """The sections of an inline value; UnavailableError naming what is damaged."""
    try:
        sections = _manifest(name, raw, FORMAT)["sections"]
        if not isinstance(sections, dict):
            raise ValueError("sections is not an object")
        return {str(s): base64.b64decode(d, validate=True) for s, d in sections.items()}
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise _damaged(name, e) from e


def _manifest(name: str, raw: bytes, expect: int | None = None) -> dict[str, Any]:
    obj = json.loads(raw)
    if not isinstance(obj, dict) or obj.get("format") not in (FORMAT, PARTED):
        raise ValueError(f"format {obj.get('format') if isinstance(obj, dict) else obj!r}")
    if expect is not None and obj["format"] != expect:
        raise ValueError(f"format {obj['format']!r}")
    return obj


def _damaged(name: str, why: object) -> UnavailableError:
    return UnavailableError(f"durable copy of checkpoint {name!r} is damaged: {why}")


class RepositoryCheckpoints:
    """:class:`~haos.cluster.dss.checkpoint.durable.DurableStore` on the repository."""

    def __init__(self, ccr: Repository, timeout: float = 5.0) -> None:
        self._ccr = ccr
        self._timeout = timeout

    async def load(self, name: str) -> dict[str, bytes] | None:
        item = await self._ccr.get(key_of(name))
        if item is None:
            return None
        try:
            manifest = _manifest(name, item.value)
        except (ValueError, TypeError) as e:
            raise _damaged(name, e) from e
        if manifest["format"] == FORMAT:
            return decode_sections(name, item.value)
        return await self._load_parts(name, manifest)

    async def save(self, name: str, sections: Mapping[str, bytes]) -> None:
        raw = encode_sections(name, sections)
        current = await self._ccr.get(key_of(name))
        if raw is not None:
            await self._commit(name, current, Put(key_of(name), raw), ())
            return
        await self._save_parts(name, sections, current)

    async def delete(self, name: str) -> None:
        ops = (Delete(key_of(name)), DeletePrefix(f"{key_of(name)}/parts"))
        await self._ccr.txn((), ops, timeout=self._timeout)

    # -- copies in parts ---------------------------------------------------------------------

    async def _save_parts(
        self, name: str, sections: Mapping[str, bytes], current: Item | None
    ) -> None:
        ordered = sorted(sections.items())
        size = sum(len(d) for _, d in ordered)
        if size > MAX_COPY:
            raise UsageError(
                f"persistent checkpoint {name!r}: its sections take {size} bytes, more than"
                f" the {MAX_COPY} bytes ({MAX_COPY // MiB} MiB) a durable copy holds"
            )
        slot = _SLOTS[1] if _slot_of(name, current) == _SLOTS[0] else _SLOTS[0]
        prefix = slot_prefix(name, slot)
        data = b"".join(d for _, d in ordered)
        await self._ccr.txn((), (DeletePrefix(prefix),), timeout=self._timeout)
        revisions = await self._write_parts(prefix, data)
        manifest = {
            "format": PARTED,
            "name": name,
            "slot": slot,
            "parts": len(revisions),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "sections": [[s, len(d)] for s, d in ordered],
        }
        made = tuple(Compare(f"{prefix}/{i}", r) for i, r in enumerate(revisions))
        await self._commit(name, current, Put(key_of(name), json.dumps(manifest).encode()), made)

    async def _write_parts(self, prefix: str, data: bytes) -> list[int]:
        """Write ``data`` as parts ``<prefix>/0``, ``<prefix>/1``, …; each one's revision."""
        view = memoryview(data)
        starts = range(0, max(len(data), 1), PART_BYTES)
        revisions: list[int] = []
        for batch in range(0, len(starts), PARTS_PER_TXN):
            ops = [
                Put(f"{prefix}/{i}", bytes(view[at : at + PART_BYTES]))
                for i, at in enumerate(starts[batch : batch + PARTS_PER_TXN], start=batch)
            ]
            revision = await self._ccr.txn((), ops, timeout=self._timeout)
            revisions += [revision] * len(ops)
        return revisions

    async def _commit(
        self, name: str, current: Item | None, put: Put, made: tuple[Compare, ...]
    ) -> None:
        """Point the key at the new copy, if neither it nor the new parts changed since, and
        drop the parts of the copy it replaces."""
        compares = (Compare(key_of(name), 0 if current is None else current.mod_revision), *made)
        old = _slot_of(name, current)
        ops: tuple[Op, ...] = (put,)
        if old is not None:
            ops += (DeletePrefix(slot_prefix(name, old)),)
        await self._ccr.txn(compares, ops, timeout=self._timeout)

    async def _load_parts(self, name: str, manifest: dict[str, Any]) -> dict[str, bytes]:
        try:
            prefix = slot_prefix(name, str(manifest["slot"]))
            count, size = int(manifest["parts"]), int(manifest["size"])
            layout = [(str(s), int(n)) for s, n in manifest["sections"]]
        except (KeyError, TypeError, ValueError) as e:
            raise _damaged(name, f"manifest: {e!r}") from e
        parts = []
        for i in range(count):
            item = await self._ccr.get(f"{prefix}/{i}")
            if item is None:
                raise _damaged(name, f"part {i} of {count} is missing")
            parts.append(item.value)
        data = b"".join(parts)
        if len(data) != size or hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            raise _damaged(name, "its parts do not match the manifest's size and digest")
        if sum(n for _, n in layout) != size:
            raise _damaged(name, "the sections' sizes do not add up")
        out, at = {}, 0
        for section, n in layout:
            out[section] = data[at : at + n]
            at += n
        return out


def _slot_of(name: str, item: Item | None) -> str | None:
    """The slot a stored manifest names (None: no copy, or an inline one)."""
    if item is None:
        return None
    try:
        manifest = _manifest(name, item.value)
    except (ValueError, TypeError):
        return None  # damaged: replaced whole by the save; any parts stay behind
    slot = manifest.get("slot") if manifest["format"] == PARTED else None
    return slot if slot in _SLOTS else None
