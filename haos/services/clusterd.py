"""The cluster daemon of one node: CMM (membership, master, fencing) and CCR over corosync.

Run inside the node's network namespace (corosync's IPC is per namespace)::

    python -m haos.services.clusterd --config cluster.toml --node n1 \\
        --state-dir /var/lib/haos --control /run/haos/control.sock

How it fences (a fence agent, a command, none) and whether it self-fences comes from the
configuration's ``[fencing]`` section, built by :mod:`haos.services.fencing_root`.

Serves the control channel of :mod:`haos.services.control`; its operations are the one table
:data:`haos.services.clusterctl.OPERATIONS`, among them:

* ``status`` — node id, members, quorate, master, vice-master, whether this node must have
  demoted (quorum lost), the CCR's phase, revision and content hash;
* ``put`` / ``get`` / ``range`` — the CCR (``expect`` = compare-on-revision);
* ``watch`` (stream) — committed CCR changes under a prefix, in revision order;
* ``events`` (stream) — the CMM's notices (joins, leaves, master changes, quorum, demote);
  with ``cluster``, the availability service's events over CES (:mod:`.newsroom`);
* ``availability`` — the ASR's availability report, from the active availability service;
* ``locks``, ``lock_take``, ``lock_release``, ``lock_break`` — the operation locks
  (:mod:`haos.services.oplocks`); this node drops the locks of every node that leaves.

READY=1 is sent to systemd (when run by it) once the CCR has received the cluster's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

from haos.clock import MonoTime, MonotonicClock, WallTime, mono_now, wall_now, wall_of
from haos.cluster.cmm.model import CmmConfig, Demote, Publish, QuorumLost, QuorumRegained
from haos.cluster.cmm.service import CmmService, Notice
from haos.cluster.cmm.service import VoteQuorumSource as CmmQuorum
from haos.cluster.crim.events import NodeLeft
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.ccr.actions import CcrConfig
from haos.cluster.dss.ccr.quorum import VoteQuorumSource as CcrQuorum
from haos.cluster.dss.ccr.service import CcrService
from haos.cluster.dss.ccr.store import SqliteStore
from haos.cluster.dss.ccr.watch import follow
from haos.cluster.dss.checkpoint.service import CheckpointService
from haos.cluster.dss.corosync.quorum import VoteQuorum
from haos.cluster.dss.messaging.rrpc import RpcService
from haos.cluster.dss.naming import NamingService
from haos.cluster.dss.transport import CpgTransport
from haos.config.model import ClusterConfig, NodeSpec
from haos.errors import ConfigError, HaosError
from haos.services.bootgates import NodeView, ProvingGates
from haos.services.clusterapi import ClusterApi, RpcChannel
from haos.services.clusterctl import ControlServer
from haos.services.crimd import AvailabilityService
from haos.services.crimd import Settings as AvailabilitySettings
from haos.services.durable import RepositoryCheckpoints
from haos.services.entry import load_node, run_daemon, settle_heap
from haos.services.epochs import RepositoryEpochs
from haos.services.executor import Dispatcher
from haos.services.fencing_root import build_fencing
from haos.services.intents import IntentFollower, submit_intent
from haos.services.leaving import LEAVE, Departure, Stopped, stop_cleanly
from haos.services.names import NameDirectory
from haos.services.newsroom import ClusterNews
from haos.services.notify import Notifier, in_words
from haos.services.oplocks import OpLocks
from haos.services.orderbook import NodeOrders
from haos.services.settings import SUBTREE, LiveSettings, parse_settings

log = logging.getLogger(__name__)

# How long a stopping daemon waits for its leave to come back from the group: well inside
# the unit's TimeoutStopSec.
LEAVE_WITHIN = 3.0


@dataclass(frozen=True)
class Settings:
    config: Path
    node: str
    state_dir: Path
    control: Path
    demote_within: float = 1.0


def _jsonable(obj: object) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"type": type(obj).__name__, **fields}
    if isinstance(obj, tuple | list | set | frozenset):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return obj


def notice_record(notice: Notice, wall: WallTime, mono: MonoTime) -> dict[str, Any]:
    """A CMM notice as this node records it (``notices``, ``events``): JSON in wall-clock time.

    The CMM dates what it publishes on this node's monotonic clock, meaningless to a reader;
    ``wall`` and ``mono`` are readings of both clocks taken together, to convert with."""
    data = _jsonable(notice)
    if isinstance(notice, Publish):
        data["at"] = wall_of(notice.at, wall, mono)
        if isinstance(notice.event, NodeLeft):
            data["event"] = _jsonable(notice.event.on_wall_clock(wall, mono))
    elif isinstance(notice, Demote):
        data["deadline"] = wall_of(MonoTime(notice.deadline), wall, mono)  # the CMM's clock
    return {"at": wall, "notice": data}


class NodeDaemon:
    def __init__(
        self,
        settings: Settings,
        config: ClusterConfig,
        me: NodeSpec,
        notifier: Notifier | None = None,
    ) -> None:
        self.s = settings
        self.config = config
        self.me = me
        self.cmm: CmmService | None = None
        self.ccr: CcrService | None = None
        self.crc: CheckpointService | None = None
        self.availability: AvailabilityService | None = None
        self.news: ClusterNews | None = None  # the availability service's events, CES
        self.names: NameDirectory | None = None  # the names applications bind, CNS
        self.oplocks: OpLocks | None = None  # operation locks (COpCo), in the CCR
        self.left: asyncio.Queue[str] = asyncio.Queue()  # nodes gone: their locks go
        self.demoted = False
        fencing = config.fencing
        self.started_with = LiveSettings(fencing.delay, fencing.base_delay, settings.demote_within)
        self.live = self.started_with
        self.notices: deque[dict[str, Any]] = deque(maxlen=1000)
        self.subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        # sd_notify; WATCHDOG=1 only while the loop runs and corosync answers (the gate)
        self.notifier = notifier or Notifier.from_env({}, os.getpid())
        self.topo = Topology(config)
        self.orders = NodeOrders(me.name)
        self.api: ClusterApi | None = None
        self.dispatcher: Dispatcher | None = None
        self.departure: Departure | None = None  # a clean stop (haos.services.leaving)
        self.proving = ProvingGates(config.boot.soak)  # the boot commit's cluster gates
        self.agents = 0  # agents following self.orders now
        self.clock = MonotonicClock()  # what the dispatcher and the intent follower wait on

    async def run(self) -> None:
        fencing = build_fencing(
            self.config, self.me, lambda: (self.live.fence_base_delay, self.live.fence_delay)
        )
        cmm_config = CmmConfig(
            nodes=self.config.nodes,
            local=self.me.node_id,
            demote_within=self.s.demote_within,
            self_fence_after=fencing.self_fence_after,
            fence_action=fencing.action,
            source=f"{self.config.source} [fencing]",
        )
        self.s.state_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(self.s.state_dir / "ccr.sqlite")
        async with (
            CpgTransport.open("haos-cmm") as cmm_group,
            CpgTransport.open("haos-ccr") as ccr_group,
            CpgTransport.open("haos-crc") as crc_group,
            CpgTransport.open("haos-rpc") as rpc_group,
            CpgTransport.open("haos-ces") as ces_group,
            CpgTransport.open("haos-cns") as cns_group,
            VoteQuorum.open() as votes,
            CcrQuorum.open() as ccr_quorum,
        ):
            self.cmm = CmmService(
                cmm_config,
                cmm_group,
                CmmQuorum(votes),
                fencing.fencer,
                self_fencer=fencing.self_fencer,
            )
            ccr_config = CcrConfig(nodes=len(self.config.nodes))
            async with CcrService.open(ccr_group, store, ccr_quorum, ccr_config) as ccr:
                self.ccr = ccr
                self.departure = Departure(
                    self.me.name,
                    self.orders,
                    lambda within: submit_intent(ccr, LEAVE, self.me.name, self.me.name, within),
                    lambda: self.agents,
                    time.monotonic,
                )
                self.crc = CheckpointService(crc_group, durable=RepositoryCheckpoints(ccr))
                self.oplocks = OpLocks(ccr, self.me.name, clock=self.clock)
                rpc = RpcService(rpc_group)
                self.news = ClusterNews(ces_group, rpc, lambda: self.availability, wall_now)
                cns = NamingService(cns_group)
                node_names = {n.node_id: n.name for n in self.config.nodes}
                self.names = NameDirectory(cns, self.me.node_id, node_names)
                ids = {n.name: n.node_id for n in self.config.nodes}
                self.dispatcher = Dispatcher(
                    self.topo, RpcChannel(rpc, ids, local=(self.me.name, self.orders)), self.clock
                )
                self.api = ClusterApi(
                    self.me,
                    self.topo,
                    rpc,
                    self._master,
                    self.orders,
                    lambda: self.availability,
                    self.dispatcher.applied,
                    node_ids=ids,
                    desired=self.dispatcher.desired,
                    on_stopped=self.names.drop,  # a stopped component's names go
                )
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self.crc.run())
                    tasks.create_task(rpc.run())
                    tasks.create_task(self.news.run())
                    tasks.create_task(cns.run())
                    tasks.create_task(self.dispatcher.run())
                    tasks.create_task(self.api.pull_desired())
                    # before the CMM runs: its listen() queue must see the first notices
                    tasks.create_task(self._availability(self.crc))
                    tasks.create_task(self.cmm.run())
                    tasks.create_task(self._record_notices())
                    tasks.create_task(self._follow_settings(ccr))
                    tasks.create_task(self.oplocks.tend(self.left))
                    server = await ControlServer(self).serve(str(self.s.control))
                    tasks.create_task(self._ready(ccr))
                    tasks.create_task(self.notifier.run())
                    tasks.create_task(self.notifier.beat())
                    tasks.create_task(self.notifier.probe("corosync", votes.info))
                    async with server:
                        await self._until_stopped()

    async def _until_stopped(self) -> None:
        """Serve until SIGTERM; then announce a clean leave if this node may, and end
        (:class:`Stopped`). See :mod:`haos.services.leaving`."""
        stop = asyncio.Event()
        with contextlib.suppress(RuntimeError, ValueError):  # only the main thread can
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        assert self.cmm is not None and self.departure is not None
        self.notifier.status("stopping")
        done = await stop_cleanly(self.departure, self.cmm.leave, LEAVE_WITHIN)
        log.info("%s", done)
        raise Stopped(done)

    def boot_gates(self) -> dict[str, Any]:
        """The boot commit's cluster gates for this node (haos.services.bootgates)."""
        ccr, cmm = self.ccr, self.cmm
        view = NodeView(
            ready=ccr is not None and ccr.status().synced,
            quorate=cmm is not None and cmm.state.quorate and not self.demoted,
            member=cmm is not None and self.me.node_id in cmm.state.members,
            orders_synced=self.orders.synced,
            agent=self.agents > 0,
            # what this node's agent runs (not the node or the hardware it sits in)
            roles={c: r for c, r in self.orders.roles.items() if self.config.manager(c)},
            running={c: r.state for c, r in self.orders.running.items()},
        )
        return self.proving.observe(view, mono_now()).to_json()

    def _master(self) -> int | None:
        return None if self.cmm is None else self.cmm.master

    async def _availability(self, crc: CheckpointService) -> None:
        """The CRIM and CEC: active on the master, hot standby on the vice-master."""
        assert self.cmm is not None and self.dispatcher is not None and self.api is not None
        async with self.cmm.listen() as notices:
            settings = AvailabilitySettings(
                self.me.node_id, self.topo, self.config.correlation, persistent=True
            )
            cmm, me = self.cmm, self.me.node_id
            assert self.ccr is not None
            self.availability = AvailabilityService(
                settings,
                crc,
                notices,
                self.dispatcher,
                wall_now,
                view=lambda: cmm.view,
                epochs=RepositoryEpochs(self.ccr),
                still_master=lambda: cmm.state.quorate and cmm.master == me,
                news=self.news,
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.availability.run())
                follower = IntentFollower(self.ccr, self.availability, self.clock, self.oplocks)
                tasks.create_task(follower.run())  # the operator's intents, while active

    async def _follow_settings(self, ccr: CcrService) -> None:
        """Reconfigure from the CCR's /haos/settings while running (no restart needed)."""
        await ccr.wait_ready(timeout=3600.0)
        async for tree in follow(ccr, SUBTREE):
            try:
                new = parse_settings(tree, self.started_with)
            except ConfigError as e:
                log.error("settings change refused, keeping %s:\n%s", self.live, e)
                continue
            if new != self.live:
                log.info("settings changed: %s", new)
                self.live = new

    async def _ready(self, ccr: CcrService) -> None:
        self.notifier.status("joining the cluster, waiting for the repository's state")
        await ccr.wait_ready(timeout=3600.0)
        self.notifier.ready("joined, repository in sync")
        log.info("node %s ready", self.me.name)
        settle_heap()

    async def _record_notices(self) -> None:
        assert self.cmm is not None
        async with self.cmm.listen() as queue:
            while True:
                notice: Notice = await queue.get()
                if isinstance(notice, Demote) or (
                    isinstance(notice, Publish) and isinstance(notice.event, QuorumLost)
                ):
                    self.demoted = True
                    # No quorum: this node's components stop acting as primaries.
                    self.orders.step_down()
                elif isinstance(notice, Publish) and isinstance(notice.event, QuorumRegained):
                    self.demoted = False  # the agent gets the desired state again (pull_desired)
                elif isinstance(notice, Publish) and isinstance(notice.event, NodeLeft):
                    await self._peer_fenced(notice.event.node)
                    self.left.put_nowait(notice.event.node)  # its operation locks are released
                m, v = self.cmm.master, self.cmm.vice_master
                self.notifier.status(f"master {m}, vice-master {v}; last: {in_words(notice)}")
                item = notice_record(notice, wall_now(), mono_now())
                self.notices.append(item)
                for sub in self.subscribers:
                    sub.put_nowait(item)

    async def _peer_fenced(self, name: str) -> None:
        """NodeLeft comes only after a successful fencing: in a two-node cluster, the CCR
        may then write alone (its two-node rule) until the peer is back."""
        peer = next((n for n in self.config.nodes if n.name == name), None)
        if len(self.config.nodes) != 2 or peer is None or self.ccr is None:
            return
        try:
            await self.ccr.peer_fenced(peer.node_id)
        except HaosError as e:
            log.warning("ccr not told that %s was fenced: %s", name, e)
        else:
            log.info("%s fenced: the repository may be written on this node alone", name)


def parse(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        prog="haos-clusterd", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--node", required=True, help="this node's name in the configuration")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--control", type=Path, required=True, help="control socket path")
    p.add_argument("--demote-within", type=float, default=1.0)
    a = p.parse_args(argv)
    return Settings(a.config, a.node, a.state_dir, a.control, a.demote_within)


def main(argv: Sequence[str] | None = None) -> int:
    # corosync calls and store writes run on worker threads: hand the GIL over in 0.5 ms
    # rather than the default 5 ms, or every thread hop can cost that much under load.
    sys.setswitchinterval(0.0005)
    settings = parse(argv)

    async def start() -> None:
        config, me = load_node(settings.config, settings.node)
        with contextlib.suppress(FileNotFoundError):
            settings.control.unlink()
        notifier = Notifier.from_env(os.environ, os.getpid())
        try:
            await NodeDaemon(settings, config, me, notifier).run()
        except* Stopped:
            pass  # a stop: a clean end (exit status 0)

    return run_daemon("haos-clusterd", start)


if __name__ == "__main__":
    raise SystemExit(main())
