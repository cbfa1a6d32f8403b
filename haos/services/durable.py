"""Durable copies of persistent checkpoints, kept in the repository (CCR).

The checkpoint service's :class:`~haos.cluster.dss.checkpoint.durable.DurableStore` for a
cluster daemon: checkpoint ``name`` is one key, ``/haos/checkpoints/<name>``, whose value holds
every section (base64 in a JSON object), written in one transaction on a majority and on disk
like every repository write. So a persistent checkpoint survives the power loss of the whole
cluster, and a save is all or nothing.

A repository value holds at most 256 KiB, so a persistent checkpoint's sections may hold about
190 KiB together; a larger save is refused with a UsageError naming the checkpoint and the size
(the write that caused it fails; nothing is half-saved).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from haos.cluster.dss.ccr.model import MAX_VALUE_BYTES, Compare, Delete, Item, Op, Put
from haos.errors import UnavailableError, UsageError

PREFIX = "/haos/checkpoints"
FORMAT = 1
_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,200}")


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


def encode_sections(name: str, sections: Mapping[str, bytes]) -> bytes:
    body = {s: base64.b64encode(d).decode("ascii") for s, d in sorted(sections.items())}
    raw = json.dumps({"format": FORMAT, "name": name, "sections": body}).encode()
    if len(raw) > MAX_VALUE_BYTES:
        raise UsageError(
            f"persistent checkpoint {name!r}: its sections take {len(raw)} bytes stored,"
            f" more than the repository's {MAX_VALUE_BYTES} per value"
        )
    return raw


def decode_sections(name: str, raw: bytes) -> dict[str, bytes]:
    """The sections stored for ``name``; UnavailableError naming what is damaged."""
    try:
        obj = json.loads(raw)
        if obj["format"] != FORMAT:
            raise ValueError(f"format {obj['format']!r}")
        sections = obj["sections"]
        if not isinstance(sections, dict):
            raise ValueError("sections is not an object")
        return {str(s): base64.b64decode(d, validate=True) for s, d in sections.items()}
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise UnavailableError(f"durable copy of checkpoint {name!r} is damaged: {e}") from e


class RepositoryCheckpoints:
    """:class:`~haos.cluster.dss.checkpoint.durable.DurableStore` on the repository."""

    def __init__(self, ccr: Repository, timeout: float = 5.0) -> None:
        self._ccr = ccr
        self._timeout = timeout

    async def load(self, name: str) -> dict[str, bytes] | None:
        item = await self._ccr.get(key_of(name))
        return None if item is None else decode_sections(name, item.value)

    async def save(self, name: str, sections: Mapping[str, bytes]) -> None:
        raw = encode_sections(name, sections)
        await self._ccr.txn((), (Put(key_of(name), raw),), timeout=self._timeout)

    async def delete(self, name: str) -> None:
        await self._ccr.txn((), (Delete(key_of(name)),), timeout=self._timeout)
