"""Operator intents: ``haosctl lock|unlock|offline|online|switchover`` through the CCR.

``leave <node>`` is written by a node's own cluster daemon when the node stops cleanly: the
active service switches each of the node's primaries over (:mod:`haos.services.leaving`).

An operator command is written as an *intent* under ``/haos/intents/<id>`` (ids sort by
time), durably on a majority like every CCR write; the active availability service carries
intents out in order and records each outcome under ``/haos/intents-done/<id>``, deleting the
intent in the same transaction. The writer waits for the outcome with a watch.

At most once, also across a take-over: before submitting an intent the active service
*claims* it by creating its outcome key (``{"state": "taking"}``) only if that key does not
exist yet. A new master that finds an intent already claimed does not carry it out again
(the old master may or may not have done so before it died); it records the outcome as
``unknown`` so the operator can look at ``haosctl status`` and decide.

:class:`IntentFollower` (on every node; acts only while its availability service is active)
and :func:`submit_intent` (the writer's side) are the adapters; the repository is a small
protocol so they are tested on the in-memory CCR as well as on real corosync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from haos.clock import Clock, MonotonicClock, within
from haos.cluster.copco.leases import LockedError
from haos.cluster.copco.scope import changed_by
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.ccr.model import Compare, Delete, Item, Op, Put
from haos.cluster.dss.ccr.watch import Watch
from haos.errors import ConflictError, HaosError, UnavailableError, UsageError
from haos.services.crimbrain import Brain
from haos.services.crimd import ServiceRole
from haos.services.leaving import LEAVE, NodeLeaving, carry_out_leave
from haos.services.oplocks import OpLocks

log = logging.getLogger(__name__)
Result = TypeVar("Result")

INTENTS = "/haos/intents"  # a prefix; an intent is INTENTS/<id>
OUTCOMES = "/haos/intents-done"
RETRY_AFTER = 0.2  # s after a failure before the follower starts over
ACTIONS: dict[str, Callable[[str], ev.Event]] = {
    "lock": ev.OperatorLock,
    "unlock": ev.OperatorUnlock,
    "offline": ev.OperatorOffline,
    "online": ev.OperatorOnline,
    "switchover": ev.OperatorSwitchover,
}


class Repository(Protocol):
    async def get(self, key: str) -> Item | None: ...

    async def range(self, prefix: str = "/") -> tuple[int, tuple[Item, ...]]: ...

    def watch(self, prefix: str = "/", after: int | None = None) -> Watch: ...

    async def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], *, timeout: float | None = None
    ) -> int: ...


def parse_intent(raw: bytes | str) -> ev.Event | NodeLeaving:
    """The CRIM event an intent asks for (or a node's leave); UsageError naming what is
    wrong."""
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise UsageError(f"intent is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise UsageError("intent is not a JSON object")
    action, target = obj.get("action"), obj.get("target")
    make = ACTIONS.get(action) if isinstance(action, str) else None
    if make is None and action != LEAVE:
        known = ", ".join([*ACTIONS, LEAVE])
        raise UsageError(f"intent: unknown action {action!r} (known: {known})")
    if not isinstance(target, str) or not target:
        raise UsageError(f"intent: target must be a non-empty name, got {target!r}")
    return NodeLeaving(target) if make is None else make(target)


async def submit_intent(
    ccr: Repository,
    action: str,
    target: str,
    by: str,
    timeout: float = 10.0,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Write the intent, wait for its outcome: ``{"state", "reason", "refused"}``.

    UsageError for a bad action or target (nothing is written); UnavailableError when the
    repository cannot take the write or no outcome arrived within ``timeout`` on ``clock``
    (this node's monotonic clock by default); the intent stays and is carried out when a
    master can. LockedError when an operation lock (:mod:`haos.services.oplocks`) covers
    what the command changes: nothing was applied, the message names the lock's holder.
    """
    clock = clock or MonotonicClock()
    body = json.dumps({"action": action, "target": target, "by": by, "at": time.time()})
    parse_intent(body)
    ident = f"{int(time.time() * 1e6):017d}-{secrets.token_hex(4)}"
    watch = ccr.watch(f"{OUTCOMES}/{ident}")
    try:
        await ccr.txn((), (Put(f"{INTENTS}/{ident}", body.encode()),))
        deadline = clock.now() + timeout
        while True:
            for event in await within(clock, deadline, watch.next_batch()):
                if event.value is None:
                    continue
                outcome: dict[str, Any] = json.loads(event.value)
                if outcome.get("error") == LockedError.code:  # nothing was applied
                    raise LockedError(str(outcome.get("reason")))
                if outcome.get("state") != "taking":
                    return outcome
    except TimeoutError:
        raise UnavailableError(
            f"intent {ident} ({action} {target}) written, but not carried out within "
            f"{timeout:g} s; it will be when an availability service is active"
        ) from None
    finally:
        watch.close()


class Availability(Protocol):
    """What the follower needs of the availability service
    (:class:`~haos.services.crimd.AvailabilityService`)."""

    @property
    def role(self) -> ServiceRole: ...

    @property
    def topology(self) -> Topology: ...

    @property
    def brain(self) -> Brain | None: ...

    async def submit(self, event: ev.Event) -> Decision: ...

    async def wait_role(self, role: ServiceRole, *, left: bool = False) -> None:
        """Return once the service is in ``role`` (``left``: in any other)."""
        ...


class IntentFollower:
    """Carries out intents while ``availability`` is active (see the module docstring).

    It waits on conditions, never polls: for the service to become active, then for the
    next intent or for the service to stop being active, whichever comes first. After a
    failure (the repository unavailable, say) it starts over ``RETRY_AFTER`` s later on
    ``clock``."""

    def __init__(
        self,
        ccr: Repository,
        availability: Availability,
        clock: Clock | None = None,
        locks: OpLocks | None = None,
    ) -> None:
        self._ccr = ccr
        self._locks = locks  # each command holds the locks of what it changes (COpCo)
        self._service = availability
        self._clock = clock or MonotonicClock()
        self._never = asyncio.Event()  # nothing cuts the wait before a retry short
        self.done = 0
        self.retries = 0

    async def run(self) -> None:
        while True:
            await self._service.wait_role(ServiceRole.ACTIVE)
            try:
                await self._serve()
            except HaosError as e:
                self.retries += 1
                log.warning("operator intents: %s; starting over in %g s", e, RETRY_AFTER)
                await self._clock.wait(self._never, self._clock.now() + RETRY_AFTER)

    async def _serve(self) -> None:
        """Carry out the intents there are, then each one written, until not active."""
        service = self._service
        rev, items = await self._ccr.range(INTENTS)
        with self._ccr.watch(INTENTS, after=rev) as watch:
            for item in items:
                if service.role is ServiceRole.ACTIVE:
                    await self._carry_out(item.key, item.value)
            left = asyncio.ensure_future(service.wait_role(ServiceRole.ACTIVE, left=True))
            try:
                while (batch := await _unless(left, watch.next_batch())) is not None:
                    for event in batch:
                        if event.value is not None and service.role is ServiceRole.ACTIVE:
                            await self._carry_out(event.key, event.value)
            finally:
                left.cancel()

    async def _carry_out(self, key: str, value: bytes) -> None:
        service = self._service
        outcome_key = f"{OUTCOMES}/{key.rsplit('/', 1)[1]}"
        taking = json.dumps({"state": "taking"}).encode()
        try:
            await self._ccr.txn((Compare(outcome_key, 0),), (Put(outcome_key, taking),))
        except ConflictError:
            # claimed by an earlier master that died: it may have carried it out
            outcome = {
                "state": "unknown",
                "refused": False,
                "reason": "the master changed while carrying it out; check haosctl status",
            }
            await self._finish(key, outcome_key, outcome)
            return
        try:
            intent = parse_intent(value)
            if isinstance(intent, NodeLeaving):
                outcome = await carry_out_leave(
                    service.topology,
                    lambda: None if service.brain is None else service.brain.crim,
                    service.submit,
                    intent,
                )
            else:
                outcome = await self._operate(outcome_key.rsplit("/", 1)[1], intent, value)
        except UsageError as e:
            outcome = {"state": "done", "refused": True, "reason": str(e)}
        await self._finish(key, outcome_key, outcome)
        self.done += 1

    async def _operate(self, ident: str, intent: ev.Event, value: bytes) -> dict[str, Any]:
        """Carry an operator command out holding the locks of the sub-trees it changes; if
        another operation holds one, nothing is applied and the outcome says who holds it."""
        service = self._service
        if self._locks is None:
            decision = await service.submit(intent)
        else:
            body = json.loads(value)
            action, target = str(body["action"]), str(body["target"])
            crim = None if service.brain is None else service.brain.crim
            subtrees = changed_by(service.topology, crim, action, target)
            reason = f"{action} {target} asked on {body.get('by', '?')}"
            try:
                async with self._locks.hold(subtrees, action, reason, operation=f"intent-{ident}"):
                    decision = await service.submit(intent)
            except LockedError as e:
                return {"state": "done", "refused": True, "error": e.code, "reason": str(e)}
        return {"state": "done", "refused": decision.refused, "reason": decision.reason}

    async def _finish(self, key: str, outcome_key: str, outcome: dict[str, Any]) -> None:
        await self._ccr.txn((), (Put(outcome_key, json.dumps(outcome).encode()), Delete(key)))


async def _unless(stop: asyncio.Future[None], work: Coroutine[Any, Any, Result]) -> Result | None:
    """What ``work`` returns; None (``work`` cancelled) if ``stop`` is done first."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
    return None if task.cancelled() or not task.done() else task.result()
