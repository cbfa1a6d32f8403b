"""A small synchronous QMP client and the fault helpers the VM tests use.

One connection per guest, on the unix socket QEMU listens on (``-qmp unix:PATH,server=on``).
Events that arrive while waiting for a command's answer are kept, so :meth:`Qmp.wait_event`
sees a ``WATCHDOG`` or ``RESET`` that came before it was called.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

from haos.errors import UnavailableError
from haoslab.lifecycle import Closing


class QmpError(UnavailableError):
    """QEMU answered a command with an error."""

    code = "qmp"


class Qmp(Closing):
    """A QMP session: capabilities negotiated on connect, commands answered in order."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(path))
            greeting = self._read(time.monotonic() + timeout)
            if "QMP" not in greeting:
                raise UnavailableError(f"{path}: not a QMP greeting: {greeting}")
            self.execute("qmp_capabilities")
        except OSError as e:
            self._sock.close()
            raise UnavailableError(f"cannot connect to QMP at {path}: {e}") from e

    def close(self) -> None:
        self._sock.close()

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UnavailableError(f"{self.path}: no answer from QEMU in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                raise UnavailableError(f"{self.path}: {e}") from e
            if not chunk:
                raise UnavailableError(f"{self.path}: QEMU closed the monitor")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; its ``return`` value, or :class:`QmpError`."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            raise UnavailableError(f"{self.path}: {e}") from e
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                err = msg["error"]
                raise QmpError(f"{command}: {err.get('class')}: {err.get('desc')}")
            elif "return" in msg:
                return msg["return"]

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """The first event ``name`` (kept or new), removed from the kept ones."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            msg = self._read(deadline)
            if "event" in msg:
                self.events.append(msg)

    # --- faults ----------------------------------------------------------------------------

    def set_link(self, netdev: str, up: bool) -> None:
        """Cut (``up=False``) or restore a NIC's link: the guest sees carrier loss."""
        self.execute("set_link", name=netdev, up=up)

    def system_reset(self) -> None:
        """Press the reset button."""
        self.execute("system_reset")

    def kill(self) -> None:
        """Pull the plug: QEMU exits at once."""
        # QEMU may close the socket before answering.
        with contextlib.suppress(UnavailableError):
            self.execute("quit")

    def device_add(self, driver: str, dev_id: str, **props: Any) -> None:
        """Hot-plug a device (e.g. into the free ``pcie-root-port`` ``hp0``)."""
        self.execute("device_add", driver=driver, id=dev_id, **props)

    def device_del(self, dev_id: str, timeout: float = 60.0) -> None:
        """Hot-unplug ``dev_id`` and wait until the guest has released it."""
        self.execute("device_del", id=dev_id)
        deadline = time.monotonic() + timeout
        while True:
            ev = self.wait_event("DEVICE_DELETED", deadline - time.monotonic())
            if ev.get("data", {}).get("device") == dev_id:
                return
