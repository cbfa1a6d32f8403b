"""Cluster nodes with a real systemd: one systemd-nspawn container per node.

Use (a synchronous context manager, like :class:`.cluster.Cluster`)::

    with NspawnNode("n1", Path("/var/cache/haos/noderoot"), Path("/run/netns/haos-…-n1"),
                    workdir, corosync_conf=conf, authkey=key) as node:
        node.run(["corosync-quorumtool", "-s"])

The root file system is the cache built by ``image/noderoot.sh`` (systemd, dbus, corosync,
python3, iproute2 and the OCF resource agents; :func:`build_noderoot`). Each node boots an
overlay of it (upper and work directories in ``workdir``), so the cache stays clean and many
nodes share it. Into the overlay go the
node's ``/etc/hostname``, a fresh ``/etc/machine-id`` and, if given, its
``/etc/corosync/corosync.conf`` and authkey, with ``corosync.service`` then enabled (the cache
leaves it disabled), and any further files and units to enable the caller names.
:func:`topology` builds the harness's namespaces and links for such nodes, without the
harness's own corosyncs.

There is no host systemd: ``--register=no --keep-unit`` and the launcher moves itself into its
own cgroup in both hierarchies before it becomes systemd-nspawn, because nspawn puts its payload
in ``<own cgroup>/payload`` and containers launched from one cgroup would collide there. The
container joins a prepared network namespace (``--network-namespace-path``) and may configure
it (``CAP_NET_ADMIN``: an agent adds a virtual IP); addresses added there while it ran are
removed when it stops, as a board's would go with its power.

Entering :class:`NspawnNode` returns once the container's systemd reports ``running``
(``systemctl is-system-running --wait`` run inside it through ``nsenter`` into its PID 1's
namespaces); a ``degraded`` or failed boot raises :class:`~.errors.HarnessError` naming the
failed units. Leaving it — normally or by any exception, also when the boot failed — powers a
booted container off (SIGTERM to nspawn; one that never finished booting is not asked),
SIGKILLs whatever is left in its cgroups after ``stop_timeout``, removes the addresses it
added to its namespace, unmounts the overlay and removes the cgroup directories. Each step runs even
if an earlier one failed; the first failure is raised afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from haos.errors import UsageError
from haos.proc import complete
from haoslab.harness import _proc, netns, owner
from haoslab.harness.errors import CommandFailed, HarnessError, HarnessTimeout
from haoslab.harness.netns import Names, NsIdent
from haoslab.lifecycle import Closing

log = logging.getLogger(__name__)
T = TypeVar("T")

CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
COROSYNC_UNIT = "/lib/systemd/system/corosync.service"
_POLL = 0.01  # how often a condition without a wake-up of its own is re-checked
# The launcher: move into each cgroup given before "--", then become the command after it.
_ENTER_CGROUPS = (
    'for cg; do [ "$cg" = -- ] && break; echo $$ >"$cg/cgroup.procs"; shift; done; shift; exec "$@"'
)


class NspawnNode(Closing):
    """One booted systemd-nspawn container; see the module docstring."""

    def __init__(
        self,
        name: str,
        root_cache: Path,
        netns_path: Path,
        workdir: Path,
        *,
        corosync_conf: str | None = None,
        authkey: bytes | None = None,
        files: Mapping[str, str] | None = None,
        enable: Sequence[str] = (),
        bind_ro: Sequence[Path] = (),
        bind: Sequence[Path] = (),
        boot_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        """Describe the node; entering the context boots it. Does no I/O.

        ``name`` is the machine and host name and the cgroup leaf ``haos/<name>`` (unique
        among running nodes). ``workdir`` must exist and not be on an overlay; it is empty, or
        holds an earlier boot's upper layer (the node's disk: booting again keeps it).
        ``files`` (absolute path in the container → text) are written into the overlay before
        the boot, ``enable`` names units (under ``/etc/systemd/system`` if written there, else
        Debian's ``/lib/systemd/system``) that multi-user.target then wants, and ``bind_ro``
        host directories appear read-only at the same path in the container (``bind`` ones
        writable).
        """
        if (corosync_conf is None) != (authkey is None):
            raise UsageError("corosync_conf and authkey go together")
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"bad node name {name!r}")
        self.name = name
        self.root_cache = root_cache
        self.netns_path = netns_path
        self.workdir = workdir
        self.corosync_conf = corosync_conf
        self.authkey = authkey
        self.files = dict(files or {})
        self.enable = tuple(enable)
        self.bind_ro = tuple(bind_ro)
        self.bind = tuple(bind)
        if any(not PurePosixPath(p).is_absolute() for p in self.files):
            raise UsageError("file paths in the container must be absolute")
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.machine_id = uuid.uuid4().hex
        self.cgroups = tuple(h / "haos" / name for h in CGROUP_HIERARCHIES)
        self._stack = contextlib.ExitStack()
        self._proc: subprocess.Popen[bytes] | None = None
        self._leader: int | None = None
        self._powered_off = False  # stopped (or its power cut) since the last launch
        self.launched_at: float | None = None  # monotonic time nspawn was started
        self.running_after: float | None = None  # seconds from launch to "running"

    @property
    def root(self) -> Path:
        """The overlay mount point: the container's root as the host sees it."""
        return self.workdir / "root"

    @property
    def leader(self) -> int:
        """The host pid of the container's PID 1 (its systemd)."""
        if self._leader is None:
            raise UsageError(f"node {self.name} is not booted")
        return self._leader

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> None:
        self.launch()
        self.await_running()

    def close(self) -> None:
        """Power off, kill leftovers, unmount, remove cgroups (see the module docstring)."""
        self._stack.close()

    def power_cut(self) -> None:
        """Like pulling the plug: SIGKILL everything in the node's cgroups (systemd-nspawn
        too), then :meth:`close`. The overlay's upper layer (the node's disk) stays."""
        if self.launched_at is not None:
            self._powered_off = self._proc is not None  # before nspawn is seen to die
            _kill_cgroup(self.cgroups, self.stop_timeout)
        self.close()

    @property
    def powered(self) -> bool:
        """Whether the container runs: launched, not stopped by the harness, and not powered
        off from inside (its systemd-nspawn has not ended)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def wait_powered_off(self, timeout: float) -> float:
        """Wait until the container has ended by itself (``systemctl poweroff`` inside, say);
        the seconds waited. HarnessError if it still runs after ``timeout``. Nothing boots it
        again: :meth:`close` (or a new :meth:`launch` after it) is still the caller's."""
        proc, started = self._proc, time.monotonic()
        if proc is None:
            return 0.0
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"node {self.name} still runs {timeout:g} s later") from None
        return time.monotonic() - started

    def launch(self) -> None:
        """Prepare the overlay and cgroups and start systemd-nspawn; do not wait.

        For booting several nodes at once: launch each, then :meth:`await_running` each.
        Whoever calls this must call :meth:`close` (also when it raises).
        """
        if not (self.root_cache / "sbin" / "init").exists():
            raise HarnessError(f"{self.root_cache} is no node root (run image/noderoot.sh)")
        if not self.netns_path.exists():
            raise HarnessError(f"no network namespace {self.netns_path}")
        upper, scratch = self.workdir / "upper", self.workdir / "work"
        self.root.mkdir(exist_ok=True)
        if any(self.root.iterdir()):
            raise HarnessError(f"{self.root} is not empty (still mounted?)")
        for d in (upper, scratch):
            d.mkdir(exist_ok=True)
        opts = f"lowerdir={self.root_cache},upperdir={upper},workdir={scratch}"
        _proc.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)])
        self._stack.callback(self._unmount)
        # The namespace outlives the container, but what the node set up in it goes with its
        # power, as on a board: a virtual IP an agent added must not answer from a dead node.
        before = netns.addresses(self.netns_path)
        self._stack.callback(self._forget_addresses, before)
        self._write_node_files()
        self._stack.callback(self._remove_cgroups)
        for cg in self.cgroups:
            cg.mkdir(parents=True, exist_ok=False)
        self._stack.callback(self._stop)
        self._launch()

    def _forget_addresses(self, before: frozenset[netns.Address]) -> None:
        """Remove the addresses added to the node's namespace since ``before``."""
        if self.netns_path.exists():  # else the harness already deleted it
            netns.remove_addresses(self.netns_path, netns.addresses(self.netns_path) - before)

    def _write_node_files(self) -> None:
        # Written through the mount point, so they land in the upper layer only.
        etc = self.root / "etc"
        (etc / "hostname").write_text(f"{self.name}\n")
        (etc / "machine-id").write_text(f"{self.machine_id}\n")
        for path, text in self.files.items():
            target = self.root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        wants = etc / "systemd" / "system" / "multi-user.target.wants"
        for unit in self.enable:
            wants.mkdir(parents=True, exist_ok=True)
            mine = f"/etc/systemd/system/{unit}"
            link = wants / unit
            link.unlink(missing_ok=True)
            link.symlink_to(mine if mine in self.files else f"/lib/systemd/system/{unit}")
        if self.corosync_conf is None or self.authkey is None:
            return
        (etc / "corosync" / "corosync.conf").write_text(self.corosync_conf)
        key = etc / "corosync" / "authkey"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        try:
            os.write(fd, self.authkey)
        finally:
            os.close(fd)
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "corosync.service").unlink(missing_ok=True)
        (wants / "corosync.service").symlink_to(COROSYNC_UNIT)
        # Debian's unit discards corosync's stderr; the harness's corosync.conf logs only there.
        dropin = etc / "systemd" / "system" / "corosync.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "haos.conf").write_text("[Service]\nStandardError=journal\n")

    def _launch(self) -> None:
        argv = [
            "sh", "-c", _ENTER_CGROUPS, "sh", *map(str, self.cgroups), "--",
            "systemd-nspawn", "-b", "-D", str(self.root), f"--machine={self.name}",
            "--register=no", "--keep-unit", "--console=passive",
            f"--network-namespace-path={self.netns_path}",
            # The namespace is the node's own, as its NICs would be: its agents configure it
            # (IPaddr2 adds a virtual IP). nspawn grants this only with --private-network.
            "--capability=CAP_NET_ADMIN",
            *(f"--bind-ro={d}" for d in self.bind_ro),
            *(f"--bind={d}" for d in self.bind),
        ]  # fmt: skip
        with (self.workdir / "nspawn.log").open("wb") as out:
            self.launched_at = time.monotonic()
            self._powered_off = False
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_proc.CLEAN_ENV,
            )

    def await_running(self) -> None:
        """Wait until the container's systemd reports ``running`` (see the module docstring).

        HarnessError if the node is powered off (by :meth:`close` or :meth:`power_cut`, from
        another thread say) before or while it boots.
        """
        if self.launched_at is None:
            raise UsageError(f"node {self.name} was not launched")
        deadline = self.launched_at + self.boot_timeout
        leader = self._wait("the container's PID 1", deadline, self._find_leader)
        self._leader = leader
        # The pid found, not self.leader: a power-off may clear that at any moment.
        state = self._wait(
            "systemd to answer", deadline, lambda: self._system_state(leader, deadline)
        )
        self.running_after = time.monotonic() - self.launched_at
        if state != "running":
            argv = ["systemctl", "--failed", "--no-legend", "--plain"]
            failed = _proc.run(_nsenter(leader, argv), check=False)
            raise HarnessError(
                f"node {self.name} booted {state}; failed units:\n{failed.stdout}"
                f"nspawn said:\n{self.nspawn_log()}"
            )
        log.info("node %s running after %.2f s", self.name, self.running_after)

    def _wait(self, what: str, deadline: float, probe: Callable[[], T]) -> T:
        while True:
            if self._powered_off:
                raise HarnessError(f"node {self.name} was powered off while waiting for {what}")
            if self._proc is not None and self._proc.poll() is not None:
                raise HarnessError(
                    f"systemd-nspawn of {self.name} exited with {self._proc.returncode} while "
                    f"waiting for {what}:\n{self.nspawn_log()}"
                )
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise HarnessTimeout(
                    f"node {self.name}: no {what} within {self.boot_timeout} s\n{self.nspawn_log()}"
                )
            time.sleep(_POLL)

    def _find_leader(self) -> int:
        """The pid in the node's cgroups that is PID 1 of its own pid namespace (0: none yet)."""
        for pid in _cgroup_pids(self.cgroups[0]):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    fields = line.split()
                    # NSpid lists the pid in each nested namespace; the container's is last.
                    if fields[0] == "NSpid:" and len(fields) > 2 and fields[-1] == "1":
                        return pid
        return 0

    def _system_state(self, leader: int, deadline: float) -> str:
        """``running``/``degraded``/… once systemd has finished booting; "" while it cannot
        answer yet (its private socket is not there before it is up) or is gone."""
        remaining = max(deadline - time.monotonic(), 0.1)
        argv = _nsenter(leader, ["systemctl", "is-system-running", "--wait"])
        try:
            out = _proc.run(argv, timeout=remaining, check=False)
        except CommandFailed:
            return ""  # timed out: the caller's deadline check reports it
        state = out.stdout.strip()
        return state if state in ("running", "degraded", "maintenance", "stopping") else ""

    # -- running things in the node ------------------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The host argv that runs ``argv`` in every namespace of the container's PID 1."""
        return _nsenter(self.leader, argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container; CommandFailed on a non-zero exit if ``check``."""
        return _proc.run(self.argv(argv), timeout=timeout, check=check, input=input)

    def unit_state(self, unit: str) -> str:
        """``systemctl is-active``: active, activating, failed, inactive, ..."""
        return self.run(["systemctl", "is-active", unit], check=False).stdout.strip()

    def unit_property(self, unit: str, prop: str) -> str:
        """One property of ``unit`` as ``systemctl show`` gives it (e.g. MainPID, NRestarts)."""
        argv = ["systemctl", "show", "--property", prop, "--value", unit]
        return self.run(argv).stdout.strip()

    def journal(self, unit: str, lines: int = 40) -> str:
        argv = ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines), "-u", unit]
        return self.run(argv, check=False).stdout

    def corosync_members(self) -> set[int]:
        """Node ids in the node's corosync membership; empty while it cannot say."""
        out = self.run(["corosync-quorumtool", "-l", "-p"], timeout=5, check=False)
        found = set()
        for line in out.stdout.splitlines():
            fields = line.split()
            if fields and fields[0].isdigit():
                found.add(int(fields[0]))
        return found

    def quorate(self) -> bool:
        out = self.run(["corosync-quorumtool", "-s"], timeout=5, check=False).stdout
        return any(line.split() == ["Quorate:", "Yes"] for line in out.splitlines())

    def nspawn_log(self, lines: int = 40) -> str:
        path = self.workdir / "nspawn.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- teardown ------------------------------------------------------------------------------

    def _stop(self) -> None:
        proc, self._proc, self._leader = self._proc, None, None
        if proc is None:
            return
        self._powered_off = True
        # A container that never finished booting may not handle the power-off request yet:
        # it gets SIGKILL at once instead of a wait for the full stop_timeout.
        if proc.poll() is None and self.running_after is not None:
            proc.terminate()  # nspawn asks the container's systemd to power off
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("node %s did not power off in %.0f s", self.name, self.stop_timeout)
        _kill_cgroup(self.cgroups, self.stop_timeout)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=self.stop_timeout)

    def _unmount(self) -> None:
        if os.path.ismount(self.root):
            _proc.run(["umount", str(self.root)])

    def _remove_cgroups(self) -> None:
        # Killed processes leave their cgroup a moment after they are reaped: retry to a deadline.
        deadline = time.monotonic() + self.stop_timeout
        for cgroup in self.cgroups:
            while cgroup.exists():
                # A cgroup may vanish under the walk (its last process was just reaped).
                with contextlib.suppress(OSError):
                    dirs = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=_depth)
                    for d in [*dirs, cgroup]:
                        d.rmdir()
                if cgroup.exists() and time.monotonic() > deadline:
                    raise HarnessError(f"cannot remove cgroup {cgroup}")
                if cgroup.exists():
                    time.sleep(_POLL)
        for parent in {cg.parent for cg in self.cgroups}:
            with contextlib.suppress(OSError):  # the shared "haos" level, once unused
                parent.rmdir()

    def leftovers(self) -> list[str]:
        """What of this node still exists (for tests to assert it is nothing after close)."""
        found = [f"cgroup {cg}" for cg in self.cgroups if cg.exists()]
        if os.path.ismount(self.root):
            found.append(f"mount {self.root}")
        return found


def _nsenter(leader: int, argv: Sequence[str]) -> list[str]:
    return ["nsenter", "-t", str(leader), "-a", "--", *argv]


def _depth(path: Path) -> int:
    return -len(path.parts)


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    try:
        found = [cgroup / "cgroup.procs", *cgroup.rglob("*/cgroup.procs")]
    except FileNotFoundError:  # a unit's cgroup went away while the tree was walked
        found = [cgroup / "cgroup.procs"]
    for procs in found:
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _kill_cgroup(cgroups: Sequence[Path], timeout: float) -> None:
    """SIGKILL every process in ``cgroups`` (and below) until none is left."""
    deadline = time.monotonic() + timeout
    while pids := sorted({p for cg in cgroups for p in _cgroup_pids(cg)} - {os.getpid()}):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HarnessError(f"processes {pids} survived SIGKILL for {timeout} s")
        time.sleep(_POLL)


def cgroup_leftovers() -> list[Path]:
    """Node cgroups (``haos/<name>``) present in either hierarchy."""
    roots = [h / "haos" for h in CGROUP_HIERARCHIES]
    return sorted(p for root in roots if root.is_dir() for p in root.iterdir() if p.is_dir())


# -- the harness topology for nspawn nodes ----------------------------------------------------


TOOLS = ("debootstrap", "systemd-nspawn", "mount", "umount", "nsenter", "ip")


def unavailable() -> str | None:
    """Why nspawn nodes cannot run on this machine (for a test's skip), None if they can."""
    if os.geteuid() != 0:
        return "needs root: debootstrap, mounts, cgroups, namespaces, systemd-nspawn"
    for tool in TOOLS:
        if shutil.which(tool, path=_proc.SAFE_PATH) is None:
            return f"needs {tool} (apt-get install debootstrap systemd-container iproute2)"
    if not all(h.is_dir() for h in CGROUP_HIERARCHIES):
        return "needs the unified and name=systemd cgroup hierarchies"
    return None


def build_noderoot(repo: Path, cache: Path, timeout: float = 840.0) -> Path:
    """The node root at ``cache``, built by ``image/noderoot.sh`` if it is not there yet or
    was built from another package list (the old root is then replaced at once: no node may
    be running on it; ``image/rootfs.sh --lock`` waits for its users instead)."""
    done = complete([str(repo / "image" / "noderoot.sh"), str(cache)], timeout)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")
        raise HarnessError(f"image/noderoot.sh failed (mirror unreachable?):\n{err}")
    return Path(done.stdout.decode().strip().splitlines()[-1])


@dataclass
class Topology:
    """The namespaces and links of one harness cluster with nothing running in them yet."""

    names: Names
    workdir: Path
    idents: list[NsIdent] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def netns_path(self, node: int) -> Path:
        return Names.path(self.names.node(node))

    def machine(self, node: int) -> str:
        """The container (machine, host and cgroup) name of harness node ``node``."""
        return f"haos-{self.names.cluster_id}-n{node}"


@contextlib.contextmanager
def topology(nodes: int) -> Iterator[Topology]:
    """The harness's namespaces and links for ``nodes`` nodes (as :class:`.cluster.Cluster`
    builds them, without its corosyncs), owned by this process; on exit every process in
    them is killed and they are deleted with the work directory."""
    workdir = owner.claim_workdir(owner.DEFAULT_BASE)
    topo = Topology(Names(workdir.name), workdir)
    try:
        if not netns.claim_switch(topo.names):
            raise HarnessError(f"namespace {topo.names.switch} exists")
        topo.namespaces.append(topo.names.switch)
        topo.idents.append(netns.ident(topo.names.switch))
        netns.build_switch(topo.names)
        for node in range(1, nodes + 1):
            topo.namespaces.append(topo.names.node(node))
            netns.add_node(topo.names, node)
            topo.idents.append(netns.ident(topo.names.node(node)))
        yield topo
    finally:
        netns.kill_processes(topo.idents)
        for name in reversed(topo.namespaces):
            netns.delete_netns(name)
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            owner.DEFAULT_BASE.rmdir()


def mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` (for tests to assert none is left)."""
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [m for line in f if (m := line.split()[4]).startswith(prefix)]
