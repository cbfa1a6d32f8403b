"""Operation locks in the repository (on the in-memory CCR): races, renewal, release, the
leases of a node that left, and operator commands held off by a lock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources

import pytest

from haos.cluster.copco.leases import MAINTENANCE, LockedError, LockLostError
from haos.cluster.crim import events as ev
from haos.cluster.crim.actions import Decision
from haos.cluster.crim.topology import Topology
from haos.cluster.dss.ccr import CcrService, Compare, Item
from haos.cluster.dss.ccr.model import Op
from haos.config.loader import load_config
from haos.errors import UsageError
from haos.services.crimd import ServiceRole
from haos.services.intents import IntentFollower, submit_intent
from haos.services.oplocks import LEASES, OpLocks
from haoslab.testing.ccr import with_ccr
from haoslab.testing.clock import FakeClock, until

pytestmark = pytest.mark.timeout(60)


class Wall:
    """The wall clock leases are dated by, moved by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def locks_on(ccr: CcrService, node: str, wall: Wall, clock: FakeClock | None = None) -> OpLocks:
    return OpLocks(ccr, node, clock=clock, wall=wall, ttl=30.0)  # type: ignore[arg-type]


def test_a_lock_is_listed_and_holds_off_an_overlapping_one_naming_holder_and_reason() -> None:
    async def body(ccr: CcrService) -> None:
        wall = Wall()
        n1, n2 = locks_on(ccr, "n1", wall), locks_on(ccr, "n2", wall)
        (taken,) = await n1.acquire(["shelf1/slot1"], MAINTENANCE, "fan swap", ttl=600.0)
        assert await n2.leases() == (taken,)
        _, before = await ccr.range("/haos/oplocks")
        with pytest.raises(LockedError, match=r"locked by n1 .*fan swap") as refused:
            await n2.acquire(["shelf1/slot2", "shelf1/slot1/node"], "switchover", "planned")
        assert refused.value.code == "locked"
        assert (await ccr.range("/haos/oplocks"))[1] == before  # nothing was written
        assert len(await n2.acquire(["shelf1/slot2"], "switchover", "planned")) == 1

    with_ccr(body)


class Racing:
    """The repository, with every transaction held until ``count`` of them have been asked
    for: the racers all read the same state before any of them writes."""

    def __init__(self, ccr: CcrService, count: int) -> None:
        self.ccr = ccr
        self.waiting = 0
        self.count = count
        self.go = asyncio.Event()
        self.lost = 0

    async def range(self, prefix: str = "/") -> tuple[int, tuple[Item, ...]]:
        return await self.ccr.range(prefix)

    async def txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], *, timeout: float | None = None
    ) -> int:
        self.waiting += 1
        if self.waiting >= self.count:
            self.go.set()
        await self.go.wait()
        try:
            return await self.ccr.txn(compares, ops, timeout=timeout)
        except Exception:
            self.lost += 1
            raise


@pytest.mark.parametrize(("first", "second"), [("shelf1", "shelf1/slot1"), ("s/a", "s/a")])
def test_two_nodes_racing_for_overlapping_subtrees_cannot_both_win(first: str, second: str) -> None:
    async def body(ccr: CcrService) -> None:
        wall, racing = Wall(), Racing(ccr, 2)
        n1 = OpLocks(racing, "n1", wall=wall)
        n2 = OpLocks(racing, "n2", wall=wall)
        results = await asyncio.gather(
            n1.acquire([first], "upgrade", "campaign"),
            n2.acquire([second], "extraction", "hot swap"),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, tuple)]
        refused = [r for r in results if isinstance(r, LockedError)]
        assert len(won) == 1 and len(refused) == 1, results
        assert racing.lost == 1  # the loser's compare failed; it read again and was refused
        assert won[0][0].owner.node in str(refused[0])
        assert [lease.owner for lease in await n1.leases()] == [won[0][0].owner]

    with_ccr(body)


def test_a_held_lock_is_renewed_while_its_operation_runs_and_released_after() -> None:
    async def body(ccr: CcrService) -> None:
        wall, clock = Wall(), FakeClock()
        n1, n2 = locks_on(ccr, "n1", wall, clock), locks_on(ccr, "n2", wall)
        async with n1.hold("shelf1/slot2", "extraction", "replace the line card") as held:
            assert held[0].expires == 1030.0
            for _ in range(6):  # a minute of operation, twice the lease's time
                await until(lambda: clock.waiting_until == clock.t + 10.0)
                wall.t += 10.0
                clock.advance(10.0)
                await until(lambda: clock.waiting_until == clock.t + 10.0)  # renewed
                (stored,) = await n2.leases()
                assert stored.expires == wall.t + 30.0
            with pytest.raises(LockedError, match="replace the line card"):
                await n2.acquire(["shelf1"], "upgrade", "campaign")
        assert await n2.leases() == ()

    with_ccr(body)


def test_an_error_inside_a_hold_passes_through_and_the_lock_is_released() -> None:
    async def body(ccr: CcrService) -> None:
        wall = Wall()
        n1 = locks_on(ccr, "n1", wall)
        inner = locks_on(ccr, "n2", wall).hold("shelf1/slot1", "extraction", "x")
        with pytest.raises(LockedError, match="locked by n1"):
            async with n1.hold("shelf1", "upgrade", "campaign"), inner:
                pass
        assert await n1.leases() == ()

    with_ccr(body)


def test_an_expired_lease_is_ignored_taken_over_and_never_renewed_back() -> None:
    async def body(ccr: CcrService) -> None:
        wall = Wall()
        n1, n2 = locks_on(ccr, "n1", wall), locks_on(ccr, "n2", wall)
        (old,) = await n1.acquire(["shelf1/slot1"], "upgrade", "campaign")
        wall.t += 30.0
        assert await n2.leases() == ()
        (new,) = await n2.acquire(["shelf1"], "upgrade", "another campaign")
        assert [i.key for i in (await ccr.range(LEASES))[1]] == [f"{LEASES}/shelf1"]
        with pytest.raises(LockLostError, match="no longer held"):
            await n1.renew(old)
        assert not await n1.release(old)
        assert await n2.leases() == (new,)

    with_ccr(body)


def test_maintenance_locks_are_released_by_subtree_and_any_lock_can_be_broken() -> None:
    async def body(ccr: CcrService) -> None:
        wall = Wall()
        n1, n2 = locks_on(ccr, "n1", wall), locks_on(ccr, "n2", wall)
        await n1.acquire(["shelf1/slot1"], MAINTENANCE, "fans", ttl=3600.0)
        await n1.acquire(["shelf1/slot2"], "switchover", "planned")
        assert (await n2.release_maintenance("shelf1/slot1")).reason == "fans"
        with pytest.raises(UsageError, match="not a maintenance lock"):
            await n2.release_maintenance("shelf1/slot2")
        assert (await n2.break_lock("shelf1/slot2", "an operator on n2")).owner.node == "n1"
        with pytest.raises(UsageError, match="no lock is held on shelf1/slot2"):
            await n2.break_lock("shelf1/slot2", "an operator on n2")
        assert await n1.leases() == ()

    with_ccr(body)


def test_the_locks_of_a_node_that_left_are_dropped_and_expired_ones_cleaned() -> None:
    async def body(ccr: CcrService) -> None:
        wall, clock = Wall(), FakeClock()
        n1, n2 = locks_on(ccr, "n1", wall), locks_on(ccr, "n2", wall, clock)
        await n1.acquire(["shelf1/slot1"], MAINTENANCE, "fans", ttl=3600.0)
        (short,) = await n2.acquire(["shelf1/slot3"], "upgrade", "campaign", ttl=5.0)
        (kept,) = await n2.acquire(["shelf1/slot2"], "upgrade", "campaign")
        left: asyncio.Queue[str] = asyncio.Queue()
        tender = asyncio.ensure_future(n2.tend(left))
        try:
            left.put_nowait("n1")
            await until(lambda: clock.waiting_until == clock.t + 30.0)
            async with asyncio.timeout(5.0):
                while len(await n2.leases()) != 2:
                    await asyncio.sleep(0.01)
            assert {lease.subtree for lease in await n2.leases()} == {
                "shelf1/slot2",
                "shelf1/slot3",
            }
            wall.t += 10.0  # the short one expires; the sweep a ttl later deletes it
            clock.advance(30.0)
            async with asyncio.timeout(5.0):
                while len((await ccr.range(LEASES))[1]) != 1:
                    await asyncio.sleep(0.01)
            assert await n2.leases() == (kept,) and short.subtree != kept.subtree
        finally:
            tender.cancel()

    with_ccr(body)


# --- operator commands (haos.services.intents) ----------------------------------------------


class Availability:
    """An active availability service over the small-2n layout; records what it is asked."""

    role = ServiceRole.ACTIVE
    brain = None

    def __init__(self) -> None:
        path = resources.files("haos") / "examples" / "small-2n.toml"
        with resources.as_file(path) as p:
            self.topology = Topology(load_config(p))
        self.submitted: list[ev.Event] = []

    async def wait_role(self, role: ServiceRole, *, left: bool = False) -> None:
        if (self.role is role) is left:
            await asyncio.Event().wait()

    async def submit(self, event: ev.Event) -> Decision:
        self.submitted.append(event)
        return Decision(None, (), f"did {event}")  # type: ignore[arg-type]


def test_an_operator_command_on_a_locked_subtree_fails_naming_the_lock_and_applies_nothing() -> (
    None
):
    async def body(ccr: CcrService) -> None:
        wall = Wall()
        availability = Availability()
        master = locks_on(ccr, "n3", wall)
        follower = IntentFollower(ccr, availability, locks=master)
        task = asyncio.ensure_future(follower.run())
        try:
            operator = locks_on(ccr, "n1", wall)
            await operator.acquire(["shelf1/slot1"], MAINTENANCE, "maintenance", ttl=600.0)
            for action, target in [
                ("switchover", "demo-si"),
                ("lock", "n1"),
                ("offline", "shelf1/slot1/node/demo"),
            ]:
                with pytest.raises(LockedError, match=r"locked by n1 .*maintenance") as e:
                    await submit_intent(ccr, action, target, "n2", timeout=5.0)
                assert e.value.code == "locked"
            assert availability.submitted == []  # nothing was applied
            done = await submit_intent(ccr, "lock", "n2", "n2", timeout=5.0)
            assert not done["refused"] and availability.submitted == [ev.OperatorLock("n2")]
            await operator.release_maintenance("shelf1/slot1")
            done = await submit_intent(ccr, "switchover", "demo-si", "n2", timeout=5.0)
            assert not done["refused"]
            assert availability.submitted[-1] == ev.OperatorSwitchover("demo-si")
            assert await master.leases() == ()  # the command's own locks ended with it
        finally:
            task.cancel()

    with_ccr(body)
