"""Giving memory back to the system after a large transfer.

A state transfer (the repository's snapshot to a replaced node, a checkpoint's content to a new
holder) allocates tens of megabytes for a moment: the encoded message, its chunks, the copies
queued for corosync. Python frees them at once, but glibc keeps the freed heap for reuse: its
mmap threshold rises to the largest block freed (up to 32 MiB), so later blocks of that size
come from the heap, and a heap whose top is still in use is never shrunk. A daemon that sent a
20 MB snapshot stayed 50-90 MB above its level before. ``malloc_trim(0)`` returns every free
page of every arena; a :class:`Trimmer` calls it once a burst of large buffers is over.

Before that it runs a full garbage collection: the messages decoded with construct are
containers that refer to their parents (a reference cycle), so a decoded transfer chunk and
the bytes it holds stay alive until the cyclic collector runs, which a daemon that allocates
few objects does rarely. A node daemon that had sent a snapshot and a checkpoint's content
held 36 MB of them, live, until then.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

MiB = 1024 * 1024
THRESHOLD = 4 * MiB  # bytes of large buffers that make a trim worth its milliseconds
QUIET = 0.5  # seconds without another large buffer before trimming: the burst is over


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``; None where the C library has none (e.g. musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> None:
        trim(0)

    return call


class Trimmer:
    """Trims the heap :data:`QUIET` seconds after the last of at least :data:`THRESHOLD`
    bytes of large buffers were noted (:meth:`note`), on the running loop. ``trim`` is the
    call that returns memory (glibc's ``malloc_trim(0)`` by default; none: a no-op)."""

    def __init__(
        self,
        *,
        threshold: int = THRESHOLD,
        quiet: float = QUIET,
        trim: Callable[[], None] | None = None,
    ) -> None:
        self._threshold = threshold
        self._quiet = quiet
        self._trim = trim if trim is not None else _malloc_trim()
        self._noted = 0
        self._handle: asyncio.TimerHandle | None = None
        self.trims = 0

    def note(self, size: int) -> None:
        """``size`` bytes of transient buffers were (or are about to be) released."""
        if self._trim is None:
            return
        self._noted += size
        if self._noted < self._threshold:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = asyncio.get_running_loop().call_later(self._quiet, self._run)

    def _run(self) -> None:
        self._handle = None
        noted, self._noted = self._noted, 0
        assert self._trim is not None
        gc.collect()  # first free what only reference cycles keep (see the module docstring)
        self._trim()
        self.trims += 1
        log.debug("heap trimmed after %d MiB of transient buffers", noted // MiB)
