"""A real corosync cluster of N nodes in network namespaces, with fault injectors.

Use (a *synchronous* context manager: faults are subprocess calls and signals, and what the
nodes report arrives on watcher threads, so a test needs no event loop; from asyncio code call
the blocking methods through ``asyncio.to_thread``)::

    with Cluster(ClusterSpec(nodes=3)) as cluster:     # returns once all see all, quorate
        killed_at = cluster.kill(3)
        cluster.wait_membership({1, 2}, timeout=5)
        assert cluster.quorate(1)

Node ids are 1..N. Each node is a network namespace with two links (eth0 on br0, eth1 on
br1, see :mod:`.netns`) and runs ``corosync -f`` in a private mount namespace (see
:mod:`.node`). What the nodes report is collected by one watcher thread per node (see
:mod:`.watch`): :meth:`Cluster.members` and :meth:`Cluster.quorate` read the latest report,
:meth:`Cluster.observations` the whole history with arrival times.

Cleanup guarantee: leaving the ``with`` block — normally, by an exception, by a failed
assertion, by KeyboardInterrupt or a pytest-timeout signal — SIGKILLs every process in the
cluster's namespaces (frozen ones too) and reaps them, ends the watcher threads, removes
libqb's ``/dev/shm`` files of every corosync the cluster ran, ends the spawner thread,
deletes every namespace (with them the veths, bridges and nft tables) and last the work
directory that records the owner (see :mod:`.owner`). Each step runs even if an earlier one
failed; the first failure is raised afterwards. If the whole process is killed, the kernel
SIGKILLs the corosyncs (parent-death signal) and ``python -m haoslab.harness cleanup``
removes the rest.

Not thread-safe: drive one cluster from one thread. The observation methods (``members``,
``quorate``, ``view``, ``observations``, ``wait_for``) may be called from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from haos.errors import UsageError
from haoslab.harness import _proc, netns, owner
from haoslab.harness.config import ClusterSpec, render_corosync_conf
from haoslab.harness.errors import HarnessError, HarnessTimeout
from haoslab.harness.netns import LINKS, Names, NsIdent
from haoslab.harness.node import CorosyncProcess, Spawner, node_argv, prepare_nodedir
from haoslab.harness.watch import Journal, NodeWatcher, Observation, View
from haoslab.lifecycle import Closing

log = logging.getLogger(__name__)

DEFAULT_BASE = owner.DEFAULT_BASE
_POLL = 0.05  # predicates that do not depend on observations are re-checked this often


class Cluster(Closing):
    """See the module docstring."""

    def __init__(self, spec: ClusterSpec | None = None, *, base_dir: Path = DEFAULT_BASE) -> None:
        """Describe the cluster; :meth:`start` (or ``with``) builds it. Does no I/O."""
        self.spec = spec or ClusterSpec()
        self.base_dir = base_dir
        self.journal = Journal(self.spec.node_ids)
        self._names: Names | None = None
        self._workdir: Path | None = None
        self._stack = contextlib.ExitStack()
        self._netns: list[str] = []  # every namespace created (or attempted), in order
        self._idents: dict[str, NsIdent] = {}  # their identities, kept after deletion
        self._nodes: dict[int, CorosyncProcess] = {}
        self._watchers: dict[int, NodeWatcher] = {}
        self._frozen: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> None:
        self.start()

    def start(self, timeout: float | None = None) -> None:
        """Build the namespaces, start every corosync and wait until each sees all N nodes and
        is quorate (default deadline ``spec.start_timeout``). On any failure, clean up and raise.
        """
        if self._names is not None:
            raise UsageError("the cluster was already started")
        try:
            self._build()
            self._start_nodes(self.node_ids)
            self.wait_membership(self.node_ids, timeout=timeout or self.spec.start_timeout)
            self.wait_for(
                lambda: all(self.quorate(n) for n in self.node_ids),
                timeout or self.spec.start_timeout,
                "every node quorate",
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove everything the cluster created (see the module docstring). Idempotent."""
        self._stack.close()

    @property
    def names(self) -> Names:
        if self._names is None:
            raise UsageError("the cluster is not started")
        return self._names

    @property
    def cluster_id(self) -> str:
        return self.names.cluster_id

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise UsageError("the cluster is not started")
        return self._workdir

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self.spec.node_ids

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace this cluster created (also after they were deleted)."""
        return tuple(self._netns)

    def pid(self, node: int) -> int | None:
        """The process id of the node's running corosync, None while it is down."""
        return self._nodes[self._check(node)].pid

    def _build(self) -> None:
        # Registered in creation order; ExitStack undoes them in reverse, each step even if an
        # earlier one failed: kill processes, stop watchers, /dev/shm, spawner, netns, files.
        self._stack.callback(self._remove_workdir)
        self._stack.callback(self._delete_namespaces)
        names = self._claim()
        self._idents[names.switch] = netns.ident(names.switch)
        workdir = self.workdir
        netns.build_switch(names)
        for node in self.node_ids:
            self._netns.append(names.node(node))  # before it exists: a half-made one is deleted
            netns.add_node(names, node)
            self._idents[names.node(node)] = netns.ident(names.node(node))
        spawner = Spawner(f"haos-{names.cluster_id}-spawn")
        self._stack.callback(spawner.close)
        conf, authkey = render_corosync_conf(self.spec, names), secrets.token_bytes(256)
        for node in self.node_ids:
            prepare_nodedir(workdir / f"n{node}", conf, authkey)
            self._nodes[node] = CorosyncProcess(
                node, names.node(node), workdir / f"n{node}", spawner
            )
        self._stack.callback(self._remove_shm_leftovers)
        self._stack.callback(self._stop_watchers)
        for node in self.node_ids:
            self._watchers[node] = NodeWatcher(node, names.node(node), self.journal)
            self._watchers[node].start()
        self._stack.callback(self._kill_everything)

    def _claim(self) -> Names:
        for _ in range(16):
            workdir = self._workdir = owner.claim_workdir(self.base_dir)
            names = Names(workdir.name)
            self._netns.append(names.switch)
            if netns.claim_switch(names):
                self._names = names
                return names
            # A namespace of a crashed run holds this id: leave it to cleanup, take another.
            self._netns.pop()
            shutil.rmtree(workdir, ignore_errors=True)
        raise HarnessError("no free cluster id")

    def _start_nodes(self, nodes: Iterable[int]) -> None:
        started = list(nodes)
        for node in started:
            self._nodes[node].spawn()
        deadline = time.monotonic() + self.spec.start_timeout
        for node in started:
            self._nodes[node].await_ready(deadline)
        for node in started:
            self._watchers[node].connect(max(deadline - time.monotonic(), 1.0))

    def _kill_everything(self) -> None:
        netns.kill_processes(self._idents.values(), self.spec.stop_timeout)
        for process in self._nodes.values():
            process.reap(self.spec.stop_timeout)

    def _stop_watchers(self) -> None:
        errors = []
        for watcher in self._watchers.values():
            try:
                watcher.stop(self.spec.stop_timeout)
            except HarnessError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _remove_shm_leftovers(self) -> None:
        for process in self._nodes.values():
            process.remove_shm_leftovers()

    def _remove_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the shared base, once no cluster uses it
            self.base_dir.rmdir()

    def _delete_namespaces(self) -> None:
        for name in reversed(self._netns):
            netns.delete_netns(name)

    def leftovers(self) -> list[str]:
        """What of this cluster still exists (for tests to assert it is nothing after close)."""
        found = [f"namespace {n}" for n in self._netns if netns.exists(n)]
        tasks = netns.tasks_in(self._idents.values())
        # A worker thread of the corosync binding, started by a watcher inside a node's
        # namespace, exits once its last call to the killed corosync returns: give it a moment.
        deadline = time.monotonic() + 5.0
        while any(pid == os.getpid() for pid, _ in tasks) and time.monotonic() < deadline:
            time.sleep(0.05)
            tasks = netns.tasks_in(self._idents.values())
        found += [f"task {pid}/{tid} in a cluster namespace" for pid, tid in tasks]
        found += [f"watcher thread of node {n}" for n, w in self._watchers.items() if w.alive]
        if self._workdir is not None and self._workdir.exists():
            found.append(f"work directory {self._workdir}")
        pids = [p for node in self._nodes.values() for p in node.pids]
        found += [f"/dev/shm/{p.name}" for p in Path("/dev/shm").glob("qb-*") if _owned(p, pids)]
        return found

    # -- observation -------------------------------------------------------------------------

    def view(self, node: int) -> View:
        """The node's latest report: connected, ring id, members, quorate."""
        return self.journal.view(self._check(node))

    def members(self, node: int) -> set[int]:
        """Node ids in the node's current ring; empty while its corosync is down.

        A frozen node's answer is what it last reported before it was frozen.
        """
        return set(self.view(node).members)

    def quorate(self, node: int) -> bool:
        """Whether the node's partition is quorate; False while its corosync is down."""
        return self.view(node).quorate

    def observations(self, since: float = 0.0) -> list[Observation]:
        """Every report that arrived at or after monotonic time ``since``, in arrival order."""
        return self.journal.since(since)

    def membership_changes(
        self, since: float = 0.0, nodes: Iterable[int] | None = None
    ) -> list[Observation]:
        """Every new ring any of ``nodes`` (default all) reported since ``since``.

        A ring superseded during synchronisation is not reported (see :mod:`.watch`); to prove
        that *nothing* happened, also compare :meth:`srp_stats` ``gather_entered``.
        """
        wanted = set(self.node_ids if nodes is None else nodes)
        return [o for o in self.journal.since(since) if o.is_membership_change and o.node in wanted]

    def wait_for(
        self, predicate: Callable[[], object], timeout: float, what: str = "the condition"
    ) -> float:
        """Wait until ``predicate()`` is truthy; return the seconds waited.

        Re-checked on every new observation and at least every 50 ms; raises
        :class:`HarnessTimeout` (naming ``what`` and showing every view) after ``timeout``.
        """
        start = time.monotonic()
        if not self.wait_until(predicate, timeout):
            raise HarnessTimeout(f"{what}: not true after {timeout} s\n{self.describe()}")
        return time.monotonic() - start

    def wait_until(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Like :meth:`wait_for`, but return False at the deadline instead of raising.

        Also the way to *hold* a fault for a while and see whether something happens in it:
        ``assert not cluster.wait_until(lambda: cluster.membership_changes(t0), 3.0)``.
        """
        deadline = time.monotonic() + timeout
        while True:
            generation = self.journal.generation
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.journal.wait_change(generation, min(remaining, _POLL))

    def wait_membership(
        self, members: Iterable[int], *, on: Iterable[int] | None = None, timeout: float = 10.0
    ) -> float:
        """Wait until every node in ``on`` (default: ``members``) sees exactly ``members``."""
        expected = set(members)
        observers = sorted(expected if on is None else set(on))
        return self.wait_for(
            lambda: all(self.members(n) == expected for n in observers),
            timeout,
            f"nodes {observers} see members {sorted(expected)}",
        )

    def describe(self) -> str:
        """Every node's view, one line each (for failure messages and people)."""
        lines = []
        for node, view in self.journal.views().items():
            state = "frozen" if node in self._frozen else "up" if view.connected else "down"
            lines.append(
                f"  n{node} {state:6} ring={view.ring_id} members={sorted(view.members)} "
                f"quorate={view.quorate}"
            )
        return "\n".join(lines)

    # -- node faults -------------------------------------------------------------------------

    def kill(self, node: int) -> float:
        """SIGKILL every process of the node; return the monotonic time of the kill."""
        name = self.names.node(self._check(node))
        at = time.monotonic()
        netns.kill_processes([self._idents[name]], self.spec.stop_timeout)
        self._nodes[node].reap(self.spec.stop_timeout)
        self._frozen.discard(node)
        self._watchers[node].disconnect()
        return at

    def stop(self, node: int) -> float:
        """Stop the node's corosync gracefully (SIGTERM: it leaves the ring); SIGKILL after
        ``spec.stop_timeout``. Returns the monotonic time of the SIGTERM."""
        self._check(node)
        self.thaw(node)
        at = time.monotonic()
        pid = self._nodes[node].pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(HarnessError):
                self._nodes[node].reap(self.spec.stop_timeout)
        self.kill(node)
        return at

    def restart(self, node: int) -> None:
        """Kill the node if it runs, start its corosync and return at READY=1 with the watcher
        connected; wait for the membership separately (e.g. :meth:`wait_membership`)."""
        self._check(node)
        if self._nodes[node].running:
            self.kill(node)
        self._start_nodes([node])

    def freeze(self, node: int) -> float:
        """SIGSTOP every process of the node (corosync stops answering; the view goes stale)."""
        name = self.names.node(self._check(node))
        at = time.monotonic()
        netns.signal_processes([self._idents[name]], signal.SIGSTOP)
        self._frozen.add(node)
        return at

    def thaw(self, node: int) -> float:
        """SIGCONT every process of the node."""
        name = self.names.node(self._check(node))
        at = time.monotonic()
        netns.signal_processes([self._idents[name]], signal.SIGCONT)
        self._frozen.discard(node)
        return at

    # -- network faults ----------------------------------------------------------------------

    def cut_link(self, node: int, link: int) -> float:
        """Down the switch-side port of the node's link (0 or 1); return the time."""
        node, link = self._check(node), self._link(link)
        at = time.monotonic()
        netns.set_port(self.names, node, link, up=False)
        return at

    def restore_link(self, node: int, link: int) -> float:
        node, link = self._check(node), self._link(link)
        at = time.monotonic()
        netns.set_port(self.names, node, link, up=True)
        return at

    def isolate(self, node: int) -> float:
        """Cut all of the node's links; return the time of the first cut."""
        at = time.monotonic()
        for link in LINKS:
            self.cut_link(node, link)
        return at

    def reconnect(self, node: int) -> float:
        """Restore all of the node's links."""
        at = time.monotonic()
        for link in LINKS:
            self.restore_link(node, link)
        return at

    def partition(self, groups: Sequence[Iterable[int]]) -> float:
        """Let frames pass only within each group (on both links); nodes in no group are
        alone. Replaces any earlier partition; return the time it took effect."""
        sets = [frozenset(self._check(n) for n in group) for group in groups]
        listed = [n for group in sets for n in group]
        if len(listed) != len(set(listed)):
            raise UsageError(f"partition groups overlap: {[sorted(g) for g in sets]}")
        sets += [frozenset({n}) for n in self.node_ids if n not in listed]
        netns.set_partition(self.names, [g for g in sets if g])
        return time.monotonic()

    def heal(self) -> float:
        """Remove the partition (links cut and packet loss stay as they are)."""
        netns.clear_partition(self.names)
        return time.monotonic()

    def loss(self, node: int, percent: int) -> None:
        """Drop ``percent`` % of the frames the node *sends* on each link (0: none)."""
        if not 0 <= percent <= 100:
            raise UsageError(f"loss must be 0..100 %, got {percent}")
        node = self._check(node)
        netns.set_loss(self.names, node, percent)

    # -- running things on nodes ---------------------------------------------------------------

    def run(
        self,
        node: int,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node's network namespace with its private mounts (so the
        corosync tools see its corosync); raise CommandFailed on failure if ``check``."""
        nodedir = self.workdir / f"n{self._check(node)}"
        full = node_argv(self.names.node(node), nodedir, list(argv))
        return _proc.run(full, timeout=timeout, check=check, input=input)

    def srp_stats(self, node: int, timeout: float = 5.0) -> dict[str, int]:
        """Totem's counters (``stats.srp.*``, e.g. ``gather_entered``, ``operational_entered``):
        any membership protocol run increments them. Times out on a frozen node."""
        out = self.run(node, ["corosync-cmapctl", "-m", "stats", "stats.srp."], timeout=timeout)
        return _parse_cmap_ints(out.stdout, "stats.srp.")

    def knet_connected(self, node: int, peer: int, link: int, timeout: float = 5.0) -> bool:
        """Whether knet on ``node`` has ``link`` to ``peer`` up."""
        key = f"stats.knet.node{self._check(peer)}.link{self._link(link)}.connected"
        out = self.run(node, ["corosync-cmapctl", "-m", "stats", key], timeout=timeout)
        return _parse_cmap_ints(out.stdout, "stats.knet.").get(key.removeprefix("stats.knet.")) == 1

    def log_tail(self, node: int, lines: int = 40) -> str:
        """The last lines of the node's corosync log (all its runs)."""
        return self._nodes[self._check(node)].log_tail(lines)

    # -- internals ---------------------------------------------------------------------------

    def _check(self, node: int) -> int:
        if node not in self.node_ids:
            raise UsageError(f"no node {node} in a cluster of {self.spec.nodes}")
        return node

    @staticmethod
    def _link(link: int) -> int:
        if link not in LINKS:
            raise UsageError(f"no link {link}; links are {list(LINKS)}")
        return link


def _parse_cmap_ints(text: str, prefix: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" = ")
        name = key.split(" (", 1)[0]
        if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
            values[name.removeprefix(prefix)] = int(value)
    return values


def _owned(path: Path, pids: list[int]) -> bool:
    return any(path.name.startswith((f"qb-{p}-", f"qb-corosync-{p}-")) for p in pids)
