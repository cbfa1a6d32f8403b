"""``python -m haoslab.vm.qmp_forward SOCKET``: one guest's TCP connection to a peer's QMP monitor.

The guests' fence path. A guest's third NIC is QEMU user networking, restricted (no route to
the host or beyond), whose only destinations are ``guestfwd`` rules: ``10.0.2.100:<4400+N>``
runs this module for each connection, with the connection as stdin and stdout (QEMU's slirp
hands the same socket as stderr too, so nothing may be written there). It connects to guest
N's fencing monitor, ``SOCKET`` on the host, and copies bytes both ways until either side
closes: the guest's ``fence_haos_qmp`` (options ``ip``, ``ipport``) speaks QMP to the peer's
QEMU unchanged.

When ``SOCKET`` does not exist or nobody listens on it (guest N's QEMU has exited), it answers
``{"absent": "<why>"}`` instead of QMP's greeting and ends, so the agent tells a guest that is
off from a path that is broken (see :mod:`haos.cluster.fencing.qmp_monitor`).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys

from haos.cluster.fencing.qmp_monitor import ABSENT_KEY

_CHUNK = 65536


def _send_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def forward(path: str, fd_in: int, fd_out: int) -> int:
    """Copy between the connection (``fd_in``/``fd_out``) and the unix socket ``path``."""
    monitor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        monitor.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        line = json.dumps({ABSENT_KEY: f"no QEMU listens on {path} ({e.strerror})"})
        _send_all(fd_out, line.encode() + b"\n")
        return 0
    with monitor, selectors.DefaultSelector() as sel:
        sel.register(fd_in, selectors.EVENT_READ, "guest")
        sel.register(monitor, selectors.EVENT_READ, "monitor")
        while True:
            for key, _ in sel.select():
                if key.data == "guest":
                    data = os.read(fd_in, _CHUNK)
                    if not data:
                        return 0
                    monitor.sendall(data)
                else:
                    data = monitor.recv(_CHUNK)
                    if not data:
                        return 0
                    _send_all(fd_out, data)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # stderr is the guest's connection: a traceback there would corrupt its QMP stream.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    if len(args) != 1:
        return 2
    try:
        return forward(args[0], 0, 1)
    except ConnectionError:
        return 0  # either side went away (a QEMU that quit resets its monitor): the end
    except OSError:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
