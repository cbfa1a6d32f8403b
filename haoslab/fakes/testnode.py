"""One real corosync in its own network and mount namespaces, for adapter tests.

How a test reaches it: corosync's IPC (libqb) listens on *abstract* unix sockets, which
belong to a network namespace, so a client must connect from corosync's network namespace.
:meth:`CorosyncTestNode.attached` moves the *calling thread* into that namespace with
``setns(2)`` and back on exit (network namespaces are per thread). A connection made inside
stays usable after the thread returns to its own namespace, and a subprocess started inside
inherits the namespace. The shared-memory rings of libqb live in ``/dev/shm``, which the node
shares with the host, so the mount namespace does not stand in the way.

What the node gets:

* ``unshare --net --mount``: a network namespace with only ``lo`` (up), so knet traffic stays
  on 127.0.0.1 inside it, and a private mount namespace where ``/run``, ``/var/lib/corosync``
  and ``/var/log`` are bind mounts of directories in the node's work directory (corosync's
  pid lock, state and logs never touch the host's).
* knet transport with crypto on (aes256/sha256) and a fresh random 256-byte authkey;
  votequorum; a one-node nodelist; logs to stderr, kept in the work directory.
* ``corosync -f`` with ``NOTIFY_SOCKET`` pointing at a datagram socket in the work
  directory: its ``READY=1`` is the start signal (its IPC services exist by then).
* ``setpriv --pdeathsig TERM``: corosync is stopped when the thread that started it exits,
  even if the test process dies without cleaning up.

:meth:`CorosyncTestNode.close` stops corosync (SIGTERM, then SIGKILL after a deadline),
removes any libqb files it left in ``/dev/shm``, and deletes the work directory. The network
namespace lives as long as the node holds a descriptor to it (until :meth:`close`), so tests
can also probe a namespace whose corosync has stopped. Only a test process killed outright
leaves something behind: its ``/tmp/haos-corosync-*`` work directory (corosync itself still
gets SIGTERM through the parent-death signal).

Requires root, ``unshare``/``setpriv`` (util-linux), ``ip`` (iproute2) and ``corosync``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from haos.errors import FatalError, HaosError

CLONE_NEWNET = 0x40000000
_SHM = Path("/dev/shm")
_PRIVATE_DIRS = {"run": "/run", "lib": "/var/lib/corosync", "log": "/var/log"}

# Runs inside the new namespaces: "$1" is the work directory.
_INSIDE = """
ip link set lo up
mount --bind "$1/run" /run
mount --bind "$1/lib" /var/lib/corosync
mount --bind "$1/log" /var/log
exec corosync -f -c "$1/corosync.conf"
"""


class TestNodeError(HaosError):
    """The test corosync could not be started or stopped as asked."""

    __test__ = False  # not a pytest test class, whatever its name
    code = "test-node"


@dataclass(frozen=True)
class SingleNodeConfig:
    """The corosync.conf settings a test may vary."""

    cluster_name: str = "haos-test"
    node_id: int = 1
    node_name: str = "node1"
    token_ms: int = 1000


def render_config(config: SingleNodeConfig, workdir: Path) -> str:
    """corosync.conf text for one knet node on 127.0.0.1 (``{`` on the section's line)."""
    return f"""totem {{
    version: 2
    cluster_name: {config.cluster_name}
    transport: knet
    token: {config.token_ms}
    crypto_cipher: aes256
    crypto_hash: sha256
    keyfile: {workdir}/authkey
}}
logging {{
    to_stderr: yes
    to_logfile: no
    to_syslog: no
    timestamp: hires
    blackbox: off
}}
quorum {{
    provider: corosync_votequorum
}}
nodelist {{
    node {{
        nodeid: {config.node_id}
        name: {config.node_name}
        ring0_addr: 127.0.0.1
    }}
}}
"""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(netns_fd: int) -> Iterator[None]:
    """Run the calling thread in the network namespace ``netns_fd``, then return it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


class CorosyncTestNode:
    """A single-node corosync cluster in private namespaces. See the module docstring."""

    def __init__(
        self,
        config: SingleNodeConfig | None = None,
        *,
        parent_dir: Path | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.config = config or SingleNodeConfig()
        self._parent_dir = parent_dir
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._netns_fd: int | None = None
        self._corosync_pid: int | None = None

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, config: SingleNodeConfig | None = None, *, parent_dir: Path | None = None
    ) -> Iterator[CorosyncTestNode]:
        """A started node, closed (stopped and removed) on exit, also on errors."""
        node = cls(config, parent_dir=parent_dir)
        try:
            node.start()
            yield node
        finally:
            node.close()

    @property
    def pid(self) -> int:
        """Corosync's process id (also after it exited, for log and /dev/shm names)."""
        if self._corosync_pid is None:
            raise TestNodeError("the test node was never started")
        return self._corosync_pid

    @property
    def running_now(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start corosync and return after its READY=1; raise with its log if it fails."""
        if self._proc is not None:
            raise TestNodeError("the test node was already started")
        self.workdir = Path(tempfile.mkdtemp(prefix="haos-corosync-", dir=self._parent_dir))
        for sub in _PRIVATE_DIRS:
            (self.workdir / sub).mkdir()
        (self.workdir / "corosync.conf").write_text(render_config(self.config, self.workdir))
        key = os.open(self.workdir / "authkey", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        try:
            os.write(key, secrets.token_bytes(256))
        finally:
            os.close(key)
        notify_path = self.workdir / "notify.sock"
        if len(os.fsencode(notify_path)) >= 108:
            raise TestNodeError(f"work directory path too long for a unix socket: {notify_path}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(os.fspath(notify_path))
            self._spawn(notify_path)
            self._await_ready(notify)
        self._netns_fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def _spawn(self, notify_path: Path) -> None:
        assert self.workdir is not None
        argv = [
            "setpriv", "--pdeathsig", "TERM", "--",
            "unshare", "--net", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-euc", _INSIDE, "sh", os.fspath(self.workdir),
        ]  # fmt: skip
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": os.fspath(notify_path)}
        with open(self.workdir / "corosync.log", "wb") as log:
            # setpriv, unshare and sh each exec the next: the child's pid is corosync's.
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._corosync_pid = self._proc.pid

    def _await_ready(self, notify: socket.socket) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        pidfd = os.pidfd_open(self._proc.pid)
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([notify.fileno(), pidfd], [], [], remaining)
                if notify.fileno() in readable and b"READY=1" in notify.recv(4096).split(b"\n"):
                    return
                if pidfd in readable:
                    code = self._proc.wait()
                    raise TestNodeError(
                        f"corosync exited with {code} before READY=1:\n{self.log_tail()}"
                    )
        finally:
            os.close(pidfd)
        raise TestNodeError(
            f"no READY=1 from corosync in {self._start_timeout} s:\n{self.log_tail()}"
        )

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Run the calling thread in the node's network namespace (see module docstring)."""
        if self._netns_fd is None:
            raise TestNodeError("the test node is not started")
        with in_netns(self._netns_fd):
            yield

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Signal corosync and wait for it to exit (SIGKILL after the stop timeout).

        Returns its exit status (negative: killed by that signal), None if not running.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(self._stop_timeout)

    def close(self) -> None:
        """Stop corosync, free its namespaces and files. Idempotent; raises only if it stays."""
        try:
            self.stop()
        finally:
            if self._netns_fd is not None:
                os.close(self._netns_fd)
                self._netns_fd = None
            if self._corosync_pid is not None:
                self._remove_shm_leftovers(self._corosync_pid)
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
        if self.running_now:
            raise FatalError(f"test corosync {self.pid} survived SIGKILL")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines corosync wrote to stdout/stderr."""
        if self.workdir is None:
            return "(no log: the work directory is gone)"
        try:
            text = (self.workdir / "corosync.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _remove_shm_leftovers(pid: int) -> None:
        # libqb names its per-connection rings qb-<server pid>-<client pid>-... and the
        # blackbox qb-corosync-<pid>-...; a SIGKILLed corosync leaves them behind.
        for prefix in (f"qb-{pid}-", f"qb-corosync-{pid}-"):
            for path in _SHM.glob(f"{prefix}*"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
