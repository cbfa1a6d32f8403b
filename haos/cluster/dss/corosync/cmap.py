"""cmap: read corosync's configuration and runtime map.

Use::

    with Cmap.connect() as cmap:
        token = cmap.get_int("runtime.config.totem.token")
        nodes = cmap.nodelist()

Synchronous: meant for start-up and tools. Each read is one IPC round trip to the local
corosync; CS_ERR_TRY_AGAIN is retried with a short *blocking* back-off
(:class:`~haos.cluster.dss.corosync._lib.Backoff`). A missing key raises
:class:`~haos.cluster.dss.corosync.errors.CorosyncError` with ``cs_name`` CS_ERR_NOT_EXIST
(or use :meth:`Cmap.find`); a corosync that is not reachable raises
:class:`~haos.cluster.dss.corosync.errors.CorosyncUnavailableError`.

Useful keys: ``totem.token`` (as configured, absent if not set), ``runtime.config.totem.token``
and ``runtime.config.totem.consensus`` (what corosync really uses, in ms),
``nodelist.node.<i>.{nodeid,name,ring0_addr,...}``, ``totem.cluster_name``.
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType

from haos.cluster.dss.corosync import _lib
from haos.cluster.dss.corosync._lib import DEFAULT_BACKOFF, Backoff
from haos.cluster.dss.corosync.errors import CorosyncError
from haos.errors import UsageError

log = logging.getLogger(__name__)

CmapValue = int | float | str | bytes


class CmapType(IntEnum):
    """``cmap_value_types_t``."""

    INT8 = 1
    UINT8 = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    INT64 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    STRING = 11
    BINARY = 12


_SCALARS: dict[CmapType, type[ctypes._SimpleCData[int]] | type[ctypes._SimpleCData[float]]] = {
    CmapType.INT8: ctypes.c_int8,
    CmapType.UINT8: ctypes.c_uint8,
    CmapType.INT16: ctypes.c_int16,
    CmapType.UINT16: ctypes.c_uint16,
    CmapType.INT32: ctypes.c_int32,
    CmapType.UINT32: ctypes.c_uint32,
    CmapType.INT64: ctypes.c_int64,
    CmapType.UINT64: ctypes.c_uint64,
    CmapType.FLOAT: ctypes.c_float,
    CmapType.DOUBLE: ctypes.c_double,
}
_NODE_KEY = re.compile(r"nodelist\.node\.(\d+)\.(.+)")
_RING_ADDR = re.compile(r"ring(\d+)_addr")


def decode(kind: CmapType, raw: bytes) -> CmapValue:
    """A cmap value's bytes (host byte order) as a Python value."""
    if kind is CmapType.STRING:
        return raw.split(b"\0", 1)[0].decode(errors="replace")
    if kind is CmapType.BINARY:
        return raw
    scalar = _SCALARS[kind]
    value: CmapValue = scalar.from_buffer_copy(raw.ljust(ctypes.sizeof(scalar), b"\0")).value
    return value


@dataclass(frozen=True)
class NodelistEntry:
    """One ``nodelist.node.<index>`` section: node id, name and link addresses by link."""

    index: int
    node_id: int
    name: str | None
    addrs: tuple[tuple[int, str], ...]  # (link number, address), by link number


class Cmap:
    """One cmap handle. Not thread-safe."""

    def __init__(self, *, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        """``cmap_initialize``; raises CorosyncUnavailableError if corosync is unreachable."""
        self._lib = _lib.cmap()
        self._backoff = backoff
        handle = ctypes.c_uint64()
        _lib.call(self._lib.cmap_initialize, ctypes.byref(handle), backoff=backoff)
        self._handle: int | None = handle.value

    @classmethod
    def connect(cls, *, backoff: Backoff = DEFAULT_BACKOFF) -> Cmap:
        """A connected handle; use it as a context manager to finalize it."""
        return cls(backoff=backoff)

    def __enter__(self) -> Cmap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """``cmap_finalize``; idempotent, never raises."""
        handle, self._handle = self._handle, None
        if handle is not None:
            rc = int(self._lib.cmap_finalize(handle))
            if rc != _lib.CS_OK:
                log.debug("cmap_finalize on close: %s", _lib.error_for("cmap_finalize", rc))

    def get(self, key: str) -> CmapValue:
        """The value of ``key``, typed by its cmap type (strings decoded as UTF-8)."""
        kind, raw = self._get_raw(key)
        return decode(kind, raw)

    def find(self, key: str) -> CmapValue | None:
        """The value of ``key``, or None if it does not exist."""
        try:
            return self.get(key)
        except CorosyncError as e:
            if e.cs_code == _lib.CS_ERR_NOT_EXIST:
                return None
            raise

    def get_int(self, key: str) -> int:
        """An integer-typed key; TypeError if it holds another type."""
        value = self.get(key)
        if not isinstance(value, int):
            raise TypeError(f"cmap key {key} is {type(value).__name__}, not an integer")
        return value

    def get_str(self, key: str) -> str:
        """A string-typed key; TypeError if it holds another type."""
        value = self.get(key)
        if not isinstance(value, str):
            raise TypeError(f"cmap key {key} is {type(value).__name__}, not a string")
        return value

    def keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, in cmap's (sorted) order."""
        return list(self._iter_keys(prefix))

    def items(self, prefix: str = "") -> dict[str, CmapValue]:
        """Keys starting with ``prefix`` and their values (keys deleted meanwhile are skipped)."""
        result: dict[str, CmapValue] = {}
        for key in self.keys(prefix):
            value = self.find(key)
            if value is not None:
                result[key] = value
        return result

    def nodelist(self) -> tuple[NodelistEntry, ...]:
        """The ``nodelist`` sections of corosync.conf as corosync holds them, by index."""
        sections: dict[int, dict[str, CmapValue]] = {}
        for key, value in self.items("nodelist.node.").items():
            match = _NODE_KEY.fullmatch(key)
            if match:
                sections.setdefault(int(match[1]), {})[match[2]] = value
        entries = []
        for index, fields in sorted(sections.items()):
            node_id = fields.get("nodeid")
            if not isinstance(node_id, int):
                continue  # corosync refuses to start without node ids on knet; be lenient
            name = fields.get("name")
            addrs = sorted(
                (int(m[1]), str(v)) for k, v in fields.items() if (m := _RING_ADDR.fullmatch(k))
            )
            entries.append(
                NodelistEntry(index, node_id, name if isinstance(name, str) else None, tuple(addrs))
            )
        return tuple(entries)

    # -- internals ---------------------------------------------------------------------------

    def _live_handle(self) -> int:
        if self._handle is None:
            raise UsageError("cmap handle was closed")
        return self._handle

    @staticmethod
    def _key(key: str) -> bytes:
        raw = key.encode()
        if not 0 < len(raw) <= _lib.CMAP_KEYNAME_MAXLEN or b"\0" in raw:
            raise UsageError(f"cmap key must be 1..{_lib.CMAP_KEYNAME_MAXLEN} bytes: {key!r}")
        return raw

    def _get_raw(self, key: str) -> tuple[CmapType, bytes]:
        handle, name = self._live_handle(), self._key(key)
        kind = ctypes.c_int()
        for _ in range(3):  # the value may grow between asking its length and reading it
            length = ctypes.c_size_t()
            _lib.call(
                self._lib.cmap_get,
                handle,
                name,
                None,
                ctypes.byref(length),
                ctypes.byref(kind),
                backoff=self._backoff,
            )
            buffer = ctypes.create_string_buffer(max(length.value, 1))
            size = ctypes.c_size_t(len(buffer))
            rc = int(
                self._lib.cmap_get(handle, name, buffer, ctypes.byref(size), ctypes.byref(kind))
            )
            if rc == _lib.CS_ERR_INVALID_PARAM:
                continue
            _lib.check("cmap_get", rc)
            try:
                return CmapType(kind.value), buffer.raw[: size.value]
            except ValueError:
                raise CorosyncError(
                    "cmap_get", None, f"{key} has unknown type {kind.value}"
                ) from None
        raise CorosyncError("cmap_get", _lib.CS_ERR_INVALID_PARAM, f"{key} kept changing size")

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        handle = self._live_handle()
        iterator = ctypes.c_uint64()
        _lib.call(
            self._lib.cmap_iter_init,
            handle,
            prefix.encode() or None,
            ctypes.byref(iterator),
            backoff=self._backoff,
        )
        try:
            name = ctypes.create_string_buffer(_lib.CMAP_KEYNAME_MAXLEN + 1)
            while True:
                rc = int(self._lib.cmap_iter_next(handle, iterator.value, name, None, None))
                if rc == _lib.CS_ERR_NO_SECTIONS:
                    return
                _lib.check("cmap_iter_next", rc)
                yield name.value.decode(errors="replace")
        finally:
            rc = int(self._lib.cmap_iter_finalize(handle, iterator.value))
            if rc != _lib.CS_OK:
                log.debug("cmap_iter_finalize: %s", _lib.error_for("cmap_iter_finalize", rc))
