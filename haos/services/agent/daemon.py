"""haos-agentd, the node agent: CMF, HM and the component drivers of one node.

    python3 -m haos.services.agent.daemon --config /etc/haos/cluster.toml --node n1 \\
        [--control /run/haos/control.sock] [--components /run/haos/components.sock]

It manages the components hosted on its node that have a ``manager`` in the configuration,
follows the orders of its node's cluster daemon (see ``docs/node-agent.md``), runs the HM's
audits (configured ones and those applications register through ``haos.client``) and reports
errors to the CRIM. Under systemd (``Type=notify``): READY=1 once it has the node's desired
state and has queued it on the drivers, STATUS= its last action in words, WATCHDOG=1 only
when, since the last one, its loop ran and the HM (on a thread of its own) completed a round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from haos import trace
from haos.cluster.crim.topology import Topology
from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec, ClusterConfig, ManagerSpec, NodeSpec
from haos.errors import HaosError
from haos.model.reports import ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.agent import NodeAgent
from haos.services.agent.backend import AuditCallback
from haos.services.agent.base import Driver
from haos.services.agent.cluster_backend import ClusterBackend
from haos.services.agent.drivers import DriverDeps, make_driver
from haos.services.agent.endpoint import Endpoint
from haos.services.agent.link import ControlLink
from haos.services.control import AsyncControlClient
from haos.services.entry import load_node, run_daemon, settle_heap
from haos.services.hm import (
    CallbackProbe,
    CommandProbe,
    HmThread,
    HttpProbe,
    MonotonicClock,
    Probe,
)
from haos.services.leaving import LEAVE, Stopped
from haos.services.notify import Notifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    config: Path
    node: str
    control: Path
    components: Path
    # where the installed units of systemd components get their shutdown order (drop-ins)
    unit_dropins: Path = Path("/run/systemd/system")


class Audits(Protocol):
    """Where audits are registered: an :class:`AuditRunner`, or the :class:`HmThread`
    that runs one."""

    def register(self, spec: AuditSpec) -> None: ...

    def unregister(self, component: str, name: str | None = None) -> None: ...


class Callbacks(Protocol):
    """Where callback audits find their callbacks: a :class:`CallbackProbe`, or its
    :meth:`HmThread.callbacks` view."""

    def add(self, component: str, name: str, callback: AuditCallback) -> None: ...

    def remove(self, component: str, name: str) -> None: ...


class HmRegistry:
    """The endpoint's :class:`~.backend.AuditRegistry` on the node's HM."""

    def __init__(self, runner: Audits, callbacks: Callbacks) -> None:
        self._runner = runner
        self._callbacks = callbacks

    def add(self, spec: AuditSpec, callback: AuditCallback) -> None:
        self._callbacks.add(spec.component, spec.target, callback)
        self._runner.register(spec)

    def remove(self, component: str, name: str) -> None:
        self._runner.unregister(component, name)
        self._callbacks.remove(component, name)


class CheckpointRole:
    """A driver whose component's checkpoint follows its role on this node: opened active
    by the primary's first write, back to standby once the component is no longer primary,
    so there is one writer."""

    def __init__(self, driver: Driver, backend: ClusterBackend, component: str) -> None:
        self._driver = driver
        self._backend = backend
        self._component = component
        self.name = driver.name

    async def apply(self, state: AvailabilityState, graceful: bool) -> None:
        await self._driver.apply(state, graceful)
        if state is not AvailabilityState.PRIMARY:
            await self._backend.open(self._component, "standby")

    async def recover(self, level: RecoveryLevel) -> None:
        await self._driver.recover(level)

    async def current(self) -> AvailabilityState | None:
        return await self._driver.current()

    async def close(self) -> None:
        await self._driver.close()


class SystemctlRebooter:
    async def reboot(self, reason: str) -> None:
        log.critical("rebooting this node: %s", reason)
        proc = await asyncio.create_subprocess_exec(
            "systemctl", "reboot", stdin=asyncio.subprocess.DEVNULL
        )
        await proc.wait()


def managed(config: ClusterConfig, me: NodeSpec) -> list[str]:
    """This node's components that the agent runs (those with a ``manager``)."""
    topo = Topology(config)
    return [c for c in topo.hosted[me.name] if c in config.managers]


async def run(settings: Settings, config: ClusterConfig, me: NodeSpec) -> None:
    from haos.services.agent.leave import (  # imports dbus-fast
        ShutdownOrderedUnits,
        order_installed_units,
        stop_on_sigterm,
    )

    topo = Topology(config)
    comps = managed(config, me)
    client = AsyncControlClient(settings.control)
    backend = ClusterBackend(client, topo)
    notifier = Notifier.from_env(os.environ, os.getpid())
    holder: list[NodeAgent] = []
    early: list[ErrorReport] = []

    def report(r: ErrorReport) -> None:
        if holder:
            holder[0].report(r)
        else:
            early.append(r)

    clock = MonotonicClock()
    callbacks = CallbackProbe()
    probes: dict[str, Probe] = {
        "command": CommandProbe(),
        "http": HttpProbe(),
        "callback": callbacks,
    }

    def hm_report(r: ErrorReport) -> None:
        # The HM schedules on the monotonic clock; the CRIM judges staleness and outages on
        # the wall clock the nodes share.
        report(dataclasses.replace(r, observed_at=r.observed_at + time.time() - time.monotonic()))

    # The HM runs on a thread of its own; its rounds are a liveness check of the watchdog
    # gate (see haos.services.hm.thread): a hung HM stops the pets, failed audits do not.
    hm = HmThread(
        AuditMonitor(),
        probes,
        clock,
        hm_report,
        notifier.check("hm").progress,
        beat=None if notifier.interval is None else notifier.interval / 4,
    )
    for spec in config.audits:
        if spec.component in comps:
            hm.register(spec)
    clients = [c for c in comps if config.managers[c].kind == "client"]
    endpoint = Endpoint(
        settings.components,
        backend,
        report,
        audits=HmRegistry(hm, hm.callbacks(callbacks)),
        components=clients,
    )
    units = await ShutdownOrderedUnits.connect()  # components stop after the agent
    installed = [m.unit for c in comps if (m := config.managers[c]).kind == "systemd"]
    try:
        if order_installed_units(installed, settings.unit_dropins):
            await units.reload()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(endpoint.run())
            deps = DriverDeps(units, report, tasks, endpoint, str(settings.components))
            drivers: dict[str, Driver] = {}
            for c in comps:
                driver = await make_driver(c, _inherit(config.managers[c]), deps)
                drivers[c] = CheckpointRole(driver, backend, c)
            agent = NodeAgent(drivers, ControlLink(client), SystemctlRebooter())
            holder.append(agent)
            for r in early:
                agent.report(r)
            for c in comps:  # every group member's node holds a replica of its checkpoint
                with contextlib.suppress(HaosError):
                    await backend.open(c, "standby")
            tasks.create_task(agent.run())
            tasks.create_task(hm.run())
            tasks.create_task(notifier.run())
            tasks.create_task(notifier.beat())
            tasks.create_task(_announce(agent, notifier, me))
            # Ends the agent; at shutdown first has this node's primaries switched over.
            tasks.create_task(
                stop_on_sigterm(
                    units.systemd.system_state,
                    lambda within: client.request(
                        "operator", action=LEAVE, target=me.name, timeout=within
                    ),
                )
            )
    finally:
        units.systemd.bus.disconnect()


def _inherit(spec: ManagerSpec) -> ManagerSpec:
    """An application linked with haos.client finds haos where the agent found it (and
    traces where the agent traces)."""
    if spec.kind != "client":
        return spec
    inherited = {
        key: value
        for key in ("PYTHONPATH", trace.ENV)
        if (value := os.environ.get(key)) and key not in spec.environment
    }
    if not inherited:
        return spec
    return dataclasses.replace(spec, environment={**spec.environment, **inherited})


async def _announce(agent: NodeAgent, notifier: Notifier, me: NodeSpec) -> None:
    await agent.synced.wait()
    notifier.ready(f"node {me.name}: following the cluster's orders")
    log.info("agent of %s ready", me.name)
    settle_heap()
    while True:  # STATUS= follows the last thing done
        await agent.done.wait()
        agent.done.clear()
        notifier.status(agent.stats.last)


def parse(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        prog="haos-agentd", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--node", required=True, help="this node's name in the configuration")
    p.add_argument("--control", type=Path, default=Path("/run/haos/control.sock"))
    p.add_argument("--components", type=Path, default=Path("/run/haos/components.sock"))
    a = p.parse_args(argv)
    return Settings(a.config, a.node, a.control, a.components)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)

    async def start() -> None:
        config, me = load_node(settings.config, settings.node)
        try:
            await run(settings, config, me)
        except* Stopped:
            pass  # SIGTERM: a clean end (exit status 0)

    return run_daemon("haos-agentd", start)


if __name__ == "__main__":
    raise SystemExit(main())
