"""A virtual Ethernet segment: a hub over unix datagram sockets.

Each guest NIC is a QEMU ``-netdev dgram`` whose local end is its own socket file and whose
remote end is the hub's. The hub repeats every frame it receives to every other port, as a
hub does, without ever blocking on a slow port. Frames never leave the host's unix sockets:
no host interface, no host multicast.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class Hub:
    """Repeats frames between the given port sockets (which QEMU creates when it starts)."""

    def __init__(self, path: Path, ports: list[Path]) -> None:
        self.path = path
        self.ports = [str(p) for p in ports]
        self.frames = 0
        self._closed = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock.bind(str(path))
        self._thread = threading.Thread(target=self._serve, name=f"hub {path}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                frame, sender = self._sock.recvfrom(65536)
            except OSError:
                return  # closed
            if self._closed:
                return
            self.frames += 1
            for port in self.ports:
                if port != sender:
                    # Never block: a guest that is down, or too slow to drain its socket,
                    # misses the frame (as on a congested hub), and the others go on.
                    with contextlib.suppress(OSError):
                        self._sock.sendto(frame, socket.MSG_DONTWAIT, port)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
