"""The node agent's core: carries out its node's orders on the components' drivers.

It follows the node's cluster daemon (:class:`ClusterLink`): first the full desired state of
this node's components, then each order. Per component, work runs strictly in order on one
worker task, so a slow stop of one component never delays the promotion of another.

* role order → ``driver.apply(state, graceful)``; a graceful one (a planned switchover) is
  confirmed to the master once carried out, with the order itself (``link.applied``);
* recover order → ``driver.recover(level)``, then the component is reported *available* (the
  CRIM then re-asserts its role);
* stop order (the CRIM took it off-line) → ``apply(OFFLINE)``;
* start order (the CRIM's repair) → ``apply(SPARE)`` (which starts a process that must run),
  then *available*;
* reboot order → the node's :class:`Rebooter`.

On start, and whenever the link is re-established with a full desired state, every managed
component is brought to its desired role (a component the CRIM has not placed yet is made
ready as a spare) and reported available — a no-op for the CRIM when it already knows it.

Error reports from drivers and audits are queued and delivered in order; a report that
cannot be delivered (no active master for a moment) is retried until ``report_within``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from haos import trace
from haos.errors import HaosError
from haos.model.reports import ErrorKind, ErrorReport, RecoveryLevel
from haos.model.states import AvailabilityState
from haos.services.agent.base import Driver
from haos.services.orders import (
    Order,
    RebootOrder,
    RecoverOrder,
    RoleOrder,
    StartOrder,
    StopOrder,
    order_from_json,
    report_to_json,
    roles_from_json,
)

log = logging.getLogger(__name__)
_SPARE, _OFF = AvailabilityState.SPARE, AvailabilityState.OFFLINE
FAILED = "failed"  # what a component runs as when it could not reach its state, or broke


class ClusterLink(Protocol):
    """The node's cluster daemon, as the agent needs it."""

    def orders(self) -> AsyncIterator[dict[str, Any]]:
        """The feed: ``{"roles": {...}}`` (full desired state) or ``{"order": {...}}``."""
        ...

    async def report(self, report: dict[str, Any]) -> None: ...

    async def event(self, kind: str, component: str) -> None: ...

    async def applied(self, order: RoleOrder, epoch: int | None) -> None:
        """Tell the master that ``order`` (a graceful role change) was carried out: the
        order itself, so the master releases what waits for this very order and nothing
        else. ``epoch``: the mastership the order came from, when the feed said."""
        ...

    async def running(self, component: str, state: str, at: float, detail: str) -> None:
        """Tell the node's cluster daemon what ``component`` runs as now: the state it
        reached, or ``failed`` (for status: "served" means the primary runs as primary)."""
        ...


class Rebooter(Protocol):
    async def reboot(self, reason: str) -> None: ...


@dataclass
class AgentStats:
    applied: int = 0
    failed: int = 0
    reports: int = 0
    reports_lost: int = 0
    links: int = 0  # times the feed was (re)opened
    last: str = ""  # the last thing done, in words (for STATUS=)
    states: dict[str, str] = field(default_factory=dict)  # component -> state reached


Work = Callable[[], Any]


class NodeAgent:
    def __init__(
        self,
        drivers: Mapping[str, Driver],
        link: ClusterLink,
        rebooter: Rebooter,
        *,
        report_within: float = 30.0,
        retry: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._drivers = dict(drivers)
        self._link = link
        self._rebooter = rebooter
        self._report_within = report_within
        self._retry = retry
        self._clock = clock
        self._work: dict[str, asyncio.Queue[tuple[str, Work]]] = {
            c: asyncio.Queue() for c in self._drivers
        }
        self._reports: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        # What each component runs as, not yet told to the cluster daemon (latest wins).
        self._untold: dict[str, tuple[str, float, str]] = {}
        self._tell = asyncio.Event()
        self.stats = AgentStats()
        self.synced = asyncio.Event()  # had a full desired state at least once
        self.done = asyncio.Event()  # set whenever stats.last changes (cleared by who waits)

    # -- inputs ---------------------------------------------------------------------------

    def report(self, report: ErrorReport) -> None:
        """The drivers' and audits' callback: queue ``report`` for the master."""
        if report.component not in self._drivers:
            log.warning("report about unmanaged component %s dropped", report.component)
            return
        self._runs(report.component, FAILED, f"{report.kind}: {report.detail}")
        self._reports.put_nowait(("report", report_to_json(report)))

    def _runs(self, comp: str, state: str, detail: str = "") -> None:
        self._untold[comp] = (state, self._clock(), detail)
        self._tell.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for comp in self._drivers:
                tasks.create_task(self._worker(comp))
            tasks.create_task(self._sender())
            tasks.create_task(self._teller())
            tasks.create_task(self._follow())

    async def close(self) -> None:
        for driver in self._drivers.values():
            try:
                await driver.close()
            except HaosError as e:
                log.warning("closing a driver: %s", e)

    # -- the feed -------------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                self.stats.links += 1
                async for item in self._link.orders():
                    self._take(item)
            except HaosError as e:
                log.warning("order feed lost: %s; reconnecting", e)
            await asyncio.sleep(self._retry)

    def _take(self, item: dict[str, Any]) -> None:
        try:
            if "roles" in item:
                self._full(roles_from_json(item["roles"]))
            elif "order" in item:
                epoch = item.get("epoch")
                self._order(order_from_json(item["order"]), epoch if _is_int(epoch) else None)
            else:
                log.warning("unknown item in the order feed: %r", item)
        except HaosError as e:
            log.error("bad item in the order feed, ignored: %s", e)

    def _full(self, roles: Mapping[str, AvailabilityState]) -> None:
        for comp in self._drivers:
            state = roles.get(comp, _OFF)
            if state in (AvailabilityState.PRIMARY, AvailabilityState.SECONDARY):
                self._queue(comp, f"assume {state}", self._apply(comp, state, False))
            else:
                self._queue(comp, "make ready", self._apply(comp, _SPARE, False, announce=True))
        self.synced.set()

    def _order(self, order: Order, epoch: int | None = None) -> None:
        if isinstance(order, RebootOrder):
            asyncio.get_running_loop().create_task(self._rebooter.reboot(order.reason))
            return
        comp = order.component
        if comp not in self._drivers:
            log.info("order for %s, which this node does not manage: %s", comp, order)
            return
        if isinstance(order, RoleOrder):
            what = f"{order.state}{' (graceful)' if order.graceful else ''}"
            # a graceful change is confirmed, naming the order: the master holds the other
            # side of a planned switchover back until this component has quiesced and left
            # its role for this very order (not for an earlier one of the same component)
            confirm = (order, epoch) if order.graceful else None
            work = self._apply(comp, order.state, order.graceful, confirm=confirm)
            self._queue(comp, what, work)
        elif isinstance(order, RecoverOrder):
            self._queue(comp, str(order.level), self._recover(comp, order.level))
        elif isinstance(order, StopOrder):
            self._queue(comp, "stop", self._apply(comp, _OFF, False))
        elif isinstance(order, StartOrder):
            self._queue(comp, "start", self._apply(comp, _SPARE, False, announce=True))

    def _queue(self, comp: str, what: str, work: Work) -> None:
        self._work[comp].put_nowait((what, work))

    # -- doing ----------------------------------------------------------------------------

    def _apply(
        self,
        comp: str,
        state: AvailabilityState,
        graceful: bool,
        announce: bool = False,
        confirm: tuple[RoleOrder, int | None] | None = None,
    ) -> Work:
        async def work() -> None:
            trace.point("agent.apply", f"{comp} {state.value}")
            await self._drivers[comp].apply(state, graceful)
            trace.point("agent.applied", f"{comp} {state.value}")
            self.stats.states[comp] = state.value
            self._runs(comp, state.value)
            if announce:
                self._reports.put_nowait(("available", {"component": comp}))
            if confirm is not None:
                order, epoch = confirm
                self._reports.put_nowait(("applied", {"order": order, "epoch": epoch}))

        return work

    def _recover(self, comp: str, level: RecoveryLevel) -> Work:
        async def work() -> None:
            await self._drivers[comp].recover(level)
            self._runs(comp, self.stats.states.get(comp, _SPARE.value), f"after {level}")
            self._reports.put_nowait(("available", {"component": comp}))

        return work

    async def _worker(self, comp: str) -> None:
        queue = self._work[comp]
        while True:
            what, work = await queue.get()
            started = time.perf_counter()
            try:
                await work()
            except HaosError as e:
                self.stats.failed += 1
                self._did(f"{comp}: {what} failed: {e}")
                log.error("%s", self.stats.last)
                self._runs(comp, FAILED, f"{what}: {e}")
                if not getattr(e, "reported", False):  # the driver told the master itself
                    # The driver could not reach the state: that is the component's error.
                    self.report(
                        ErrorReport(comp, ErrorKind.ERROR, self._clock(), "agent", f"{what}: {e}")
                    )
            else:
                self.stats.applied += 1
                ms = (time.perf_counter() - started) * 1000.0
                self._did(f"{comp}: {what} in {ms:.1f} ms")
                log.info("%s", self.stats.last)

    def _did(self, what: str) -> None:
        self.stats.last = what
        self.done.set()

    async def _sender(self) -> None:
        while True:
            kind, body = await self._reports.get()
            deadline = self._clock() + self._report_within
            while True:
                try:
                    if kind == "report":
                        trace.point("agent.report", body.get("component"))
                        await self._link.report(body)
                        self.stats.reports += 1
                    elif kind == "applied":
                        await self._link.applied(body["order"], body["epoch"])
                    else:
                        await self._link.event(kind, body["component"])
                    break
                except HaosError as e:
                    if self._clock() >= deadline:
                        self.stats.reports_lost += 1
                        log.error("%s about %s not delivered: %s", kind, body, e)
                        break
                    await asyncio.sleep(self._retry)

    async def _teller(self) -> None:
        """Tell the cluster daemon what the components run as (the latest word of each)."""
        while True:
            await self._tell.wait()
            self._tell.clear()
            while self._untold:
                comp = next(iter(self._untold))
                state, at, detail = self._untold.pop(comp)
                try:
                    await self._link.running(comp, state, at, detail)
                except HaosError as e:
                    if comp not in self._untold:  # nothing newer meanwhile: say it again
                        self._untold[comp] = (state, at, detail)
                    log.debug("what %s runs as not told yet: %s", comp, e)
                    await asyncio.sleep(self._retry)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
