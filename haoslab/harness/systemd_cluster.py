"""A haos cluster on nodes with a real systemd: corosync and the haos daemons as services.

Use (a synchronous context manager)::

    with SystemdCluster(ClusterSpec(nodes=3), cache=build_noderoot(REPO, NODEROOT)) as c:
        c.control("n1").request("status")
        old = c.kill_daemon("n3")                 # SIGKILL; systemd restarts it
        c.wait_for(lambda: c.main_pid("n3") not in (0, old), 30.0, "n3 restarted")

The harness topology (:func:`.nspawn.topology`: a namespace per node with two links) holds one
:class:`~.nspawn.NspawnNode` per node, all booted at once. Into each node's overlay go the
harness's corosync.conf and authkey, ``/etc/haos/cluster.toml``, ``/etc/haos/node.env``
(``HAOS_NODE=nK``) and the units of ``units/`` (into ``/etc/systemd/system``), enabled
with ``corosync.service``. haos itself is a copy of this repository's ``haos`` package taken
on entering (every node, also one booted again later, runs the same code however the tree
changes meanwhile), bind-mounted read-only at the same path and put on the units'
``PYTHONPATH`` by a drop-in, with the packages of the repository's ``.venv`` (built by the same
Debian Python 3.11 the node root has); the repository itself is bind-mounted read-only too.

Entering returns once every node's systemd reports ``running``: its boot jobs are done, so
``haos-clusterd`` has sent ``READY=1`` -- it joined the cluster and its repository holds the
cluster's state. A node's control socket (``/run/haos/control.sock``, in the container's own
``/run``) is reached from the host through ``/proc/<its PID 1>/root``.

With ``fence=True`` the daemons fence through a :class:`FenceBridge`: the configuration gets a
``[fencing]`` section (:func:`fencing_toml`, unless it has one of its own) whose ``command``
asks the host (through a directory every node has bind-mounted) to cut a node's power, and
for ``reboot`` to boot it again on its disk -- what a BMC would do for a real board. A
configuration with a ``[fencing]`` of its own (a fence agent, say) keeps it; the bridge still
runs, for whatever that device calls (:func:`request_fence`).

Leaving -- normally or by any exception -- stops the fence bridge, powers every node off,
SIGKILLs what is left, unmounts, removes cgroups, kills whatever still runs in the namespaces
and deletes them and the work directory (see :class:`~.nspawn.NspawnNode`). Power operations
(``stop_node``, ``start_node``, ``power_cut``, the bridge's) run one at a time, and none
while entering boots the nodes: a fencing the daemons ask for meanwhile is carried out once
every node runs (its fencer waits for the answer, and NodeLeft with it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import shutil
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from haos.errors import HaosError, UsageError
from haos.services.control import ControlClient
from haoslab.harness.config import ClusterSpec, render_corosync_conf
from haoslab.harness.errors import HarnessError, HarnessTimeout
from haoslab.harness.nspawn import NspawnNode, Topology, topology
from haoslab.lifecycle import Closing

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
NODEROOT_CACHE = Path("/var/cache/haos/noderoot")
CLUSTERD = "haos-clusterd.service"
AGENTD = "haos-agentd.service"
MGMTD = "haos-mgmtd.service"  # the management daemon (REST, events, /metrics)
AGENT_MODULE = "haos/services/agent/daemon.py"
CONTROL_SOCKET = "/run/haos/control.sock"
_POLL = 0.05  # how often wait_for and the fence bridge re-check their conditions
FENCE_TIMEOUT = 120.0  # seconds a fence request waits for the bridge's answer


def cluster_toml(spec: ClusterSpec, name: str) -> str:
    """A configuration for the harness's nodes ``n1``…: one chassis, a node board per slot."""
    lines = ["[cluster]", f'name = "{name}"', "", "[[components]]", 'name = "shelf1"']
    lines.append('class = "chassis"')
    for n in spec.node_ids:
        for comp, cls in ((f"shelf1/slot{n}", "slot"), (f"shelf1/slot{n}/node", "node")):
            lines += ["", "[[components]]", f'name = "{comp}"', f'class = "{cls}"']
    for n in spec.node_ids:
        lines += ["", "[[nodes]]", f'name = "n{n}"', f"node_id = {n}"]
        lines += [f'component = "shelf1/slot{n}/node"', "priority = 0"]
    return "\n".join(lines) + "\n"


def fencing_toml(command: Sequence[str], action: str = "reboot") -> str:
    """A ``[fencing]`` section that fences every node through ``command`` (argv template)."""
    words = ", ".join(json.dumps(word) for word in command)
    return f'\n[fencing]\ncommand = [{words}]\naction = "{action}"\n'


def agent_available(repo: Path = REPO) -> bool:
    """Whether this tree has the node agent's daemon (``haos.services.agent.daemon``)."""
    return (repo / AGENT_MODULE).is_file()


class SystemdCluster(Closing):
    """See the module docstring."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        cache: Path = NODEROOT_CACHE,
        repo: Path = REPO,
        agent: bool = False,
        mgmt: bool | None = None,
        config_toml: str | None = None,
        fence: bool = False,
        fence_action: str = "reboot",
        boot_timeout: float = 90.0,
        trace_dir: Path | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the cluster; entering it builds and boots it. Does no I/O.

        ``agent``: enable ``haos-agentd.service`` too; ``mgmt``: ``haos-mgmtd.service`` too
        (default: with the agent).
        ``config_toml``: the cluster configuration (default :func:`cluster_toml`).
        ``fence``: the daemons fence through a
        :class:`FenceBridge` (off = power cut, reboot = power cut then boot; ``fence_action``
        says which), configured as ``[fencing]`` in it unless it has its own; else none (a
        departed node stays "to be fenced"). ``files``: more files (absolute path in the
        node: text) for every node, e.g. a fence agent's password file.
        ``boot_timeout``: seconds from launch until every node runs with its daemons ready.
        ``trace_dir``: a host directory, writable in every node, where each node's daemons and
        applications record their tracepoints (``<node>.trace``, see :mod:`haos.trace`).
        """
        if agent and not agent_available(repo):
            raise UsageError(f"no node agent in {repo} ({AGENT_MODULE})")
        self.spec = spec
        self.cache = cache
        self.repo = repo
        full = agent if mgmt is None else mgmt  # a node with its agent has its manager too
        self.units = ((CLUSTERD, AGENTD) if agent else (CLUSTERD,)) + ((MGMTD,) if full else ())
        self.config_toml = config_toml
        self.fence = fence
        self.fence_action = fence_action
        self.files = dict(files or {})
        self.trace_dir = trace_dir
        self.bridge: FenceBridge | None = None
        self.boot_timeout = boot_timeout
        self.topo: Topology | None = None
        self.nodes: dict[str, NspawnNode] = {}
        self.up_after: float | None = None  # seconds from the first launch to all running
        self._files: dict[str, dict[str, str]] = {}
        self._source: Path | None = None  # the copy of haos and haoslab the nodes run
        self._corosync_conf = ""
        self._authkey = b""
        self._stack = contextlib.ExitStack()
        # one power operation at a time: the fence bridge's thread does them too
        self._power = threading.RLock()

    @property
    def names(self) -> tuple[str, ...]:
        """The nodes' names in the configuration: ``n1``, ``n2``, …"""
        return tuple(f"n{k}" for k in self.spec.node_ids)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Power every node off and remove everything (see the module docstring)."""
        if self.bridge is not None:
            self.bridge.stop()  # first: it must not boot a node while they are torn down
        self._stack.close()

    def _open(self) -> None:
        self.topo = self._stack.enter_context(topology(self.spec.nodes))
        self._corosync_conf = render_corosync_conf(self.spec, self.topo.names)
        self._authkey = secrets.token_bytes(256)
        if self.fence:
            self.bridge = FenceBridge(
                self.topo.workdir / "fence", self.power_cut, self.power_on, power=self._power
            )
            self.bridge.start()
        toml = self.config_toml or cluster_toml(self.spec, f"systemd-{self.topo.names.cluster_id}")
        if self.bridge is not None and "fencing" not in tomllib.loads(toml):
            toml += fencing_toml(self.bridge.command(), self.fence_action)
        # A tree edited while the cluster runs would give daemons started at different times
        # different code, even modules of one version mixed with another's (a daemon that
        # then crashes is fenced): the nodes run a copy.
        self._source = self.topo.workdir / "source"
        for package in ("haos", "haoslab"):  # haoslab: the lab's fence command runs on nodes
            shutil.copytree(self.repo / package, self._source / package)
        for name in self.names:
            self._files[name] = self._node_files(name, toml)
        started = time.monotonic()
        # The fence bridge takes requests from the start, but carries them out only once every
        # node runs: a power cut must not pull a node from under the wait for its boot.
        with self._power:
            for name in self.names:
                self._launch(name)
            for name in self.names:
                self._await(name)
        self.up_after = time.monotonic() - started
        log.info("systemd cluster %s up after %.2f s", self.topo.names.cluster_id, self.up_after)
        if self.bridge is not None and (waiting := self.bridge.waiting()):
            log.warning("fence requests made while the cluster formed: %s", waiting)

    def _node_files(self, name: str, toml: str) -> dict[str, str]:
        assert self._source is not None
        venv = sorted((self.repo / ".venv" / "lib").glob("python3*/site-packages"))
        path = ":".join(str(p) for p in [self._source, *venv])
        env = f"HAOS_NODE={name}\n"
        if self.trace_dir is not None:
            env += f"HAOS_TRACE={self.trace_dir / (name + '.trace')}\n"
        files = {**self.files, "/etc/haos/cluster.toml": toml, "/etc/haos/node.env": env}
        for unit in (CLUSTERD, AGENTD, MGMTD):
            files[f"/etc/systemd/system/{unit}"] = (self.repo / "units" / unit).read_text()
            # haos comes from the bind-mounted copy, not from an installed package
            files[f"/etc/systemd/system/{unit}.d/harness.conf"] = (
                f"[Service]\nEnvironment=PYTHONPATH={path}\n"
            )
        return files

    def _launch(self, name: str) -> NspawnNode:
        assert self.topo is not None and self._source is not None
        k = int(name[1:])
        workdir = self.topo.workdir / name
        workdir.mkdir(exist_ok=True)
        node = NspawnNode(
            self.topo.machine(k),
            self.cache,
            self.topo.netns_path(k),
            workdir,
            corosync_conf=self._corosync_conf,
            authkey=self._authkey,
            files=self._files[name],
            enable=self.units,
            bind_ro=(self.repo, self._source),
            bind=tuple(
                d
                for d in (self.bridge.directory if self.bridge else None, self.trace_dir)
                if d is not None
            ),
            boot_timeout=self.boot_timeout,
        )
        self.nodes[name] = node
        self._stack.callback(node.close)
        node.launch()
        return node

    def _await(self, name: str) -> None:
        node = self.nodes[name]
        try:
            node.await_running()
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.diagnose(name)}") from e

    def stop_node(self, name: str) -> None:
        """Shut node ``name`` down cleanly (its disk, the overlay's upper layer, is kept)."""
        with self._power:
            self.node(name).close()

    def power_cut(self, name: str) -> None:
        """Cut node ``name``'s power: everything in it is SIGKILLed (its disk is kept)."""
        with self._power:
            self.node(name).power_cut()

    def poweroff(self, name: str, timeout: float = 60.0) -> float:
        """``systemctl poweroff`` inside node ``name``, as an operator there would do; returns
        once the node has shut down and its container ended: the seconds that took. Its
        disk is kept, and it stays off unless something boots it again: :meth:`start_node`,
        or the fence bridge if its peers fence it. The power lock is not held meanwhile, so
        that such a fencing shows."""
        node = self.node(name)
        started = time.monotonic()
        node.run(["systemctl", "poweroff", "--no-block"])
        node.wait_powered_off(timeout)
        return time.monotonic() - started

    def powered(self, name: str) -> bool:
        """Whether node ``name`` runs (see :attr:`NspawnNode.powered`)."""
        return self.node(name).powered

    def start_node(self, name: str) -> float:
        """Boot node ``name`` again on its disk; return the seconds until it runs (its daemons
        ready: it has rejoined)."""
        return self.start_nodes(name)[name]

    def power_on(self, name: str) -> float:
        """Boot node ``name`` again unless it runs (a BMC's power on); the seconds it took."""
        with self._power:
            return 0.0 if self.powered(name) else self.start_node(name)

    def start_nodes(self, *names: str) -> dict[str, float]:
        """Boot the nodes ``names`` again at once, each on its disk (after a power loss of
        several, which can only rejoin together); the seconds until each runs."""
        with self._power:
            for name in names:
                self.node(name).close()
            nodes = {name: self._launch(name) for name in names}
            for name in names:
                self._await(name)
        out = {}
        for name, node in nodes.items():
            assert node.running_after is not None
            out[name] = node.running_after
        return out

    # -- access ------------------------------------------------------------------------------

    def node(self, name: str) -> NspawnNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise UsageError(f"no node {name!r} (nodes: {', '.join(self.names)})") from None

    def control(self, name: str, timeout: float = 5.0) -> ControlClient:
        """A client of the node's control socket, through its PID 1's root."""
        leader = self.node(name).leader
        return ControlClient(f"/proc/{leader}/root{CONTROL_SOCKET}", timeout=timeout)

    def status(self, name: str) -> dict[str, Any] | None:
        """The daemon's ``status`` answer; None while it cannot answer."""
        try:
            return self.control(name).request("status")
        except HaosError:
            return None

    def main_pid(self, name: str, unit: str = CLUSTERD) -> int:
        """The unit's main pid inside the node (0 while it has none)."""
        return int(self.node(name).unit_property(unit, "MainPID") or 0)

    def restarts(self, name: str, unit: str = CLUSTERD) -> int:
        """How often systemd restarted the unit automatically."""
        return int(self.node(name).unit_property(unit, "NRestarts") or 0)

    # -- faults ------------------------------------------------------------------------------

    def kill_daemon(
        self, name: str, unit: str = CLUSTERD, sig: signal.Signals = signal.SIGKILL
    ) -> int:
        """Send ``sig`` to the unit's main process; return its pid (inside the node)."""
        pid = self.main_pid(name, unit)
        if pid == 0:
            raise HarnessError(f"{unit} on {name} has no main process")
        argv = ["systemctl", "kill", "--kill-who=main", f"--signal={sig.name}", unit]
        self.node(name).run(argv)
        return pid

    def freeze_daemon(self, name: str, unit: str = CLUSTERD) -> int:
        """SIGSTOP the unit's main process (hung, not dead); return its pid."""
        return self.kill_daemon(name, unit, signal.SIGSTOP)

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Re-check ``predicate`` until it holds; return the seconds waited. HarnessTimeout
        (with every node's daemon journal) at the deadline."""
        started = time.monotonic()
        deadline = started + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                tails = "\n".join(self.diagnose(n) for n in self.names)
                raise HarnessTimeout(f"{what}: not true after {timeout:g} s\n{tails}")
            time.sleep(_POLL)
        return time.monotonic() - started

    def diagnose(self, name: str, units: Sequence[str] | None = None) -> str:
        """The end of the node's journal for its haos units (for failure messages)."""
        node = self.nodes.get(name)
        parts = [f"--- {name}"]
        for unit in units or self.units:
            try:
                parts.append(f"{unit}: {node.unit_state(unit) if node else '?'}")
                parts.append(node.journal(unit, 25) if node else "")
            except HaosError as e:
                parts.append(f"{unit}: cannot read its journal: {e}")
        return "\n".join(parts)


class FenceBridge:
    """The harness's fence device for nodes in containers.

    A node's fence command (:meth:`command`, run by its cluster daemon) drops a request
    ``<token>.req`` (JSON: node, action) into ``directory``, which every node has bind-mounted
    at the same path, and waits for ``<token>.done``. A thread on the host carries requests
    out in arrival order: ``off`` cuts the node's power; ``reboot`` cuts it, answers, then
    boots the node again; ``on`` (a simulated BMC's power on) answers, then boots it unless
    it runs. Only the answer ``ok`` counts as fenced. Each request is carried
    out whole while holding ``power``: whoever else powers the nodes (the cluster, booting)
    never sees a node between its power cut and its boot.
    """

    def __init__(
        self,
        directory: Path,
        off: Callable[[str], None],
        on: Callable[[str], object],
        *,
        power: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        self.directory = directory
        self._off = off
        self._on = on
        self._power = power if power is not None else contextlib.nullcontext()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.done: list[tuple[str, str, str]] = []  # (node, action, answer), for tests

    def command(self) -> tuple[str, ...]:
        """The fence command (argv template) that reaches this bridge from inside a node."""
        module = "haoslab.harness.systemd_cluster"
        return (
            "/usr/bin/python3",
            "-m",
            module,
            "fence",
            str(self.directory),
            "{node}",
            "{action}",
        )

    def start(self) -> None:
        self.directory.mkdir(exist_ok=True)
        self._thread = threading.Thread(target=self._serve, name="fence-bridge", daemon=True)
        self._thread.start()

    def waiting(self) -> list[tuple[str, str]]:
        """The requests not yet carried out, (node, action), oldest first."""
        found = []
        for request in self.directory.glob("*.req"):
            with contextlib.suppress(OSError, ValueError, KeyError):  # carried out meanwhile
                ask = json.loads(request.read_text())
                found.append((_mtime(request), str(ask["node"]), str(ask["action"])))
        return [(node, action) for _, node, action in sorted(found)]

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        while not self._stopping.wait(_POLL):
            requests = sorted(self.directory.glob("*.req"), key=_mtime)
            for request in requests:
                self._handle(request)

    def _handle(self, request: Path) -> None:
        with self._power:
            self._carry_out(request)

    def _carry_out(self, request: Path) -> None:
        node, action, answer = "?", "?", "ok"
        try:
            ask = json.loads(request.read_text())
            node, action = str(ask["node"]), str(ask["action"])
            if action not in ("off", "reboot", "on"):
                raise UsageError(f"unknown fence action {action!r}")
            log.info("fence bridge: %s %s", action, node)
            if action != "on":
                self._off(node)
        except (HaosError, OSError, ValueError, KeyError) as e:
            answer = f"error: {e}"
        self.done.append((node, action, answer))
        temporary = request.with_suffix(".tmp")
        temporary.write_text(answer)
        temporary.rename(request.with_suffix(".done"))
        request.unlink()
        if answer == "ok" and action in ("reboot", "on") and not self._stopping.is_set():
            try:
                self._on(node)
            except HaosError as e:
                log.error("fence bridge: %s did not boot again: %s", node, e)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def request_fence(directory: Path, node: str, action: str, timeout: float = FENCE_TIMEOUT) -> str:
    """Ask the :class:`FenceBridge` at ``directory`` to fence ``node``; its answer."""
    token = secrets.token_hex(8)
    temporary = directory / f"{token}.new"
    temporary.write_text(json.dumps({"node": node, "action": action}))
    temporary.rename(directory / f"{token}.req")
    done = directory / f"{token}.done"
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() >= deadline:
            return f"error: no answer within {timeout:g} s"
        time.sleep(_POLL)
    answer = done.read_text()
    done.unlink()
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    """``fence DIR NODE ACTION``: the fence command inside a node (exit 0 once fenced)."""
    p = argparse.ArgumentParser(prog="python -m haoslab.harness.systemd_cluster")
    sub = p.add_subparsers(dest="command", required=True)
    fence = sub.add_parser("fence", help="ask the host's fence bridge to fence a node")
    fence.add_argument("directory", type=Path)
    fence.add_argument("node")
    fence.add_argument("action", choices=("off", "reboot", "on"))
    a = p.parse_args(argv)
    answer = request_fence(a.directory, a.node, a.action)
    print(answer)
    return 0 if answer == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
