"""Self-fencing with a hardware watchdog: a node that must stop acting stops petting it.

A Linux watchdog device (``/dev/watchdog``) resets the board unless it is written to
("petted") within its timeout, from the moment it is opened. Closing it disarms it only
after the magic character ``V`` was written (and only if the driver allows it, i.e. not
``nowayout``); closing it without ``V`` leaves it armed, so the board resets a timeout later.

:class:`SelfFencer` holds the safety rule: it pets only while this node may act -- its
partition is quorate, or lost quorum less than ``self_fence_after`` seconds ago -- and once
that is over it stops for good (:meth:`SelfFencer.fire`): no code path can resume petting.
Tests use :class:`MemoryWatchdog`; they never open a real device.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from typing import Protocol

from haos.errors import UnavailableError, UsageError

log = logging.getLogger(__name__)

MAGIC_CLOSE = b"V"
KEEPALIVE = b"\0"


class Watchdog(Protocol):
    """A watchdog device. Calls are quick writes; errors are UnavailableError."""

    def arm(self) -> None:
        """Open the device: from now on it must be petted within its timeout."""
        ...

    def pet(self) -> None:
        """Restart the device's countdown."""
        ...

    def disarm(self) -> None:
        """Clean stop: write the magic ``V`` and close (the countdown stops)."""
        ...

    def fire(self) -> None:
        """Close without the magic ``V``: the device stays armed and resets the board."""
        ...


# ioctl(WDIOC_SETTIMEOUT, int *): _IOWR('W', 6, int) in <linux/watchdog.h>
WDIOC_SETTIMEOUT = 0xC0045706


class DevWatchdog:
    """The Linux watchdog character device at ``path`` (``/dev/watchdog``).

    ``timeout``: whole seconds to set when armed (None: keep the driver's)."""

    def __init__(self, path: str = "/dev/watchdog", timeout: int | None = None) -> None:
        if timeout is not None and timeout < 1:
            raise UsageError(f"watchdog timeout must be at least 1 s, not {timeout!r}")
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def arm(self) -> None:
        if self._fd is not None:
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise UnavailableError(f"cannot open watchdog {self.path}: {e.strerror}") from e
        if self.timeout is not None:
            self._set_timeout(self._fd, self.timeout)

    def _set_timeout(self, fd: int, seconds: int) -> None:
        try:
            fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
        except OSError as e:
            # Armed with the driver's own timeout: still a watchdog, only slower to reset.
            log.warning("watchdog %s: cannot set its timeout to %d s: %s", self.path, seconds, e)

    def pet(self) -> None:
        self._write(KEEPALIVE)

    def disarm(self) -> None:
        if self._fd is None:
            return
        try:
            self._write(MAGIC_CLOSE)
        finally:
            self._close()

    def fire(self) -> None:
        self._close()  # no magic character: the driver keeps counting down

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise UsageError(f"watchdog {self.path} is not armed")
        try:
            os.write(self._fd, data)
        except OSError as e:
            raise UnavailableError(f"cannot write watchdog {self.path}: {e.strerror}") from e

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class MemoryWatchdog:
    """An in-memory watchdog: records what was done to it; ``armed`` while it counts down."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.armed = False
        self.pets = 0

    @property
    def fired(self) -> bool:
        """Left armed without being petted any more: a real board would reset."""
        return bool(self.calls) and self.calls[-1] == "fire"

    def arm(self) -> None:
        self.calls.append("arm")
        self.armed = True

    def pet(self) -> None:
        if not self.armed:
            raise UsageError("watchdog is not armed")
        self.calls.append("pet")
        self.pets += 1

    def disarm(self) -> None:
        self.calls.append("disarm")
        self.armed = False

    def fire(self) -> None:
        self.calls.append("fire")  # stays armed


class SelfFencer:
    """Pets the watchdog while this node may act; stops for good once it may not."""

    def __init__(
        self, watchdog: Watchdog, *, self_fence_after: float, required: bool = True
    ) -> None:
        """``self_fence_after``: seconds a node may stay inquorate before it must die.
        ``required``: a watchdog that cannot be armed stops the service; else (the default
        device, used where it exists) the service goes on without self-fencing, loudly."""
        if not self_fence_after > 0:
            raise UsageError(f"self_fence_after must be positive, not {self_fence_after!r}")
        self._watchdog = watchdog
        self.required = required
        self._after = self_fence_after
        self._inquorate_since: float | None = None
        self._was_quorate = False
        self._started = False
        self.fired_reason: str | None = None

    @property
    def fired(self) -> bool:
        return self.fired_reason is not None

    def start(self) -> None:
        """Arm the watchdog; call :meth:`observe` every tick from now on."""
        if self.fired:
            raise UsageError("the self-fencer already fired")
        self._watchdog.arm()
        self._started = True

    def observe(self, quorate: bool, now: float) -> bool:
        """Pet if this node may still act at ``now``; else fire. True once fired.

        Call it each tick *after* the quorum state was refreshed from corosync this tick:
        the pet vouches that this node's view is current. Only a *loss* of quorum counts: a
        node that has not been quorate since it started (booted alone, waiting for its
        peers) holds no work and is petted on.
        """
        if self.fired:
            return True
        if not self._started:
            raise UsageError("the self-fencer was not started")
        if quorate:
            self._inquorate_since = None
            self._was_quorate = True
        elif not self._was_quorate:
            pass
        elif self._inquorate_since is None:
            self._inquorate_since = now
        elif now - self._inquorate_since >= self._after:
            self.fire(f"inquorate for {now - self._inquorate_since:.1f} s")
            return True
        self._watchdog.pet()
        return False

    def fire(self, reason: str) -> None:
        """Stop petting for good; the watchdog resets the board. Idempotent."""
        if self.fired:
            return
        self.fired_reason = reason
        log.critical("self-fencing: %s; the watchdog will reset this node", reason)
        if self._started:
            self._watchdog.fire()

    def stop(self) -> None:
        """Clean shutdown of the service: disarm (magic close), unless it fired."""
        if self._started and not self.fired:
            self._watchdog.disarm()
            self._started = False
