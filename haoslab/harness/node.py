"""One node's corosync: its private mount namespace, start with READY=1, stop, leftovers.

A node's processes run in the node's network namespace (``nsenter --net``) and in a fresh
private mount namespace (``unshare --mount --propagation private``) where the node's own
directories are bind-mounted over ``/run``, ``/var/lib/corosync``, ``/var/log`` and
``/etc/corosync`` (its corosync.conf and the cluster's shared authkey). Every command the
harness runs "on a node" gets the same view, so the corosync tools find what corosync uses.
``/dev/shm`` stays shared with the host: libqb's IPC rings live there.

Parent-death signal: corosync is started through ``setpriv --pdeathsig KILL`` from the
:class:`Spawner`'s thread, which lives exactly as long as the cluster. If the test process
dies without cleaning up, the kernel SIGKILLs every corosync it started. (The signal is tied
to the *thread* that forked, which is why a dedicated thread does the forking: a short-lived
worker thread would take corosync down with it.)
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from haoslab.harness._proc import CLEAN_ENV
from haoslab.harness.errors import HarnessError
from haoslab.harness.netns import nsenter

SHM = Path("/dev/shm")
PRIVATE_DIRS = {
    "run": "/run",
    "lib": "/var/lib/corosync",
    "log": "/var/log",
    "etc": "/etc/corosync",
}

# Runs inside the node's fresh mount namespace: "$1" is the node directory, the rest the argv.
_INSIDE = "\n".join(
    [f'mount --bind "$1/{sub}" {target}' for sub, target in PRIVATE_DIRS.items()]
    + ["shift", 'exec "$@"']
)


def node_argv(netns: str, nodedir: Path, argv: list[str]) -> list[str]:
    """The argv that runs ``argv`` in the node's network namespace and private mounts."""
    return [
        *nsenter(netns),
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-euc", _INSIDE, "sh", os.fspath(nodedir), *argv,
    ]  # fmt: skip


def prepare_nodedir(nodedir: Path, conf: str, authkey: bytes) -> None:
    """The node's private directories, its corosync.conf and a copy of the shared authkey."""
    for sub in PRIVATE_DIRS:
        (nodedir / sub).mkdir(parents=True)
    (nodedir / "etc" / "corosync.conf").write_text(conf)
    fd = os.open(nodedir / "etc" / "authkey", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, authkey)
    finally:
        os.close(fd)


class Spawner:
    """Starts processes from one long-lived thread (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def popen(self, argv: list[str], env: dict[str, str], log: BinaryIO) -> subprocess.Popen[bytes]:
        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

        return self._pool.submit(spawn).result()

    def close(self) -> None:
        """Ends the thread: only after every process it started is gone."""
        self._pool.shutdown(wait=True)


class CorosyncProcess:
    """``corosync -f`` of one node; one run at a time, restartable."""

    def __init__(self, node: int, netns: str, nodedir: Path, spawner: Spawner) -> None:
        self.node = node
        self.netns = netns
        self.nodedir = nodedir
        self._spawner = spawner
        self._proc: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self.pids: list[int] = []  # every corosync this node ever ran, for /dev/shm cleanup

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def spawn(self) -> None:
        """Start corosync; :meth:`await_ready` waits for it. Raises if it is still running."""
        if self.running:
            raise HarnessError(f"corosync of node {self.node} is already running")
        notify_path = self.nodedir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._notify.bind(os.fspath(notify_path))
        env = {**CLEAN_ENV, "NOTIFY_SOCKET": os.fspath(notify_path)}
        argv = ["setpriv", "--pdeathsig", "KILL", "--"]
        argv += node_argv(self.netns, self.nodedir, ["corosync", "-f"])
        with open(self.nodedir / "corosync.log", "ab") as log:
            log.write(f"==== harness: starting corosync of node {self.node}\n".encode())
            log.flush()
            # setpriv, nsenter, unshare and sh each exec the next: the pid is corosync's.
            self._proc = self._spawner.popen(argv, env, log)
        self.pids.append(self._proc.pid)
        with open(self.nodedir / "pids", "a") as pids:
            pids.write(f"{self._proc.pid}\n")

    def await_ready(self, deadline: float) -> None:
        """Return at corosync's READY=1; raise with its log if it exits or the deadline passes."""
        proc, notify = self._proc, self._notify
        if proc is None or notify is None:
            raise HarnessError(f"corosync of node {self.node} was not spawned")
        try:
            pidfd = os.pidfd_open(proc.pid)
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    ready, _, _ = select.select([notify.fileno(), pidfd], [], [], remaining)
                    if notify.fileno() in ready and b"READY=1" in notify.recv(4096).split(b"\n"):
                        return
                    if pidfd in ready:
                        raise HarnessError(
                            f"corosync of node {self.node} exited with {proc.wait()} "
                            f"before READY=1:\n{self.log_tail()}"
                        )
            finally:
                os.close(pidfd)
            raise HarnessError(f"no READY=1 from node {self.node}:\n{self.log_tail()}")
        finally:
            notify.close()
            self._notify = None

    def reap(self, timeout: float) -> int | None:
        """Wait for the (killed) corosync to exit and collect it; its exit status or None."""
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"corosync of node {self.node} did not exit") from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.nodedir / "corosync.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def remove_shm_leftovers(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        remove_shm_leftovers(self.pids)


def remove_shm_leftovers(pids: list[int]) -> None:
    """libqb's rings of these corosync pids (``qb-<pid>-…``, ``qb-corosync-<pid>-…``).

    A SIGKILLed corosync cannot remove the rings of its IPC connections itself.
    """
    for pid in pids:
        for prefix in (f"qb-{pid}-", f"qb-corosync-{pid}-"):
            for path in SHM.glob(f"{prefix}*"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
