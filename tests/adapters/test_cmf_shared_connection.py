"""Several watchers on one D-Bus connection to a real systemd (a container under systemd-nspawn,
booted with the CMF adapter tests' ``booted`` helper).

systemd tracks its subscribers per bus connection: a second ``Subscribe`` from a connection
that already subscribed is answered ``org.freedesktop.systemd1.AlreadySubscribed``. A node
agent watches every component's unit on its one connection, and each of them must be
followed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from test_cmf_systemd import Container, _build_rootfs, _skip_unless_possible, booted

from haos.errors import UnavailableError
from haos.services.agent.tracking import UnitTracker
from haos.services.agent.units import SystemdServiceUnits
from haos.services.cmf.systemd import SystemdUnits
from haos.services.cmf.types import UnitChanged, UnitError

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

DEADLINE = 10.0


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    _skip_unless_possible()
    with booted(_build_rootfs(), tmp_path_factory.mktemp("shared")) as c:
        yield c


@contextlib.asynccontextmanager
async def connected(container: Container) -> AsyncIterator[SystemdServiceUnits]:
    units = await SystemdServiceUnits.connect(container.bus_address)
    try:
        yield units
    finally:
        units.systemd.bus.disconnect()


def test_subscribing_twice_on_one_connection_is_not_an_error(container: Container) -> None:
    async def go() -> None:
        units = await SystemdUnits.connect(container.bus_address)
        try:
            await units.systemd.subscribe()
            await units.systemd.subscribe()  # systemd answers AlreadySubscribed: that is fine
        finally:
            units.systemd.bus.disconnect()

    asyncio.run(go())


def test_two_trackers_started_together_on_one_connection_both_follow_their_units(
    container: Container,
) -> None:
    names = [f"cmf-shared-{k}.service" for k in range(3)]

    async def go() -> None:
        seen: dict[str, list[str]] = {n: [] for n in names}

        def on_change(old: str, change: UnitChanged) -> None:
            seen[change.name].append(change.active_state)

        async with connected(container) as units, asyncio.TaskGroup() as tg:
            # a refused watch would be tried again only after a minute: they must all go live
            trackers = [UnitTracker(units, n, on_change, retry=60.0) for n in names]
            # started in one go, as the agent starts its drivers: the watches subscribe at once
            tasks = [tg.create_task(t.run()) for t in trackers]
            try:
                for tracker in trackers:
                    await tracker.wait_live(DEADLINE)
                for name in names:
                    await units.start_transient(name, ["/bin/sleep", "1000"])
                for tracker in trackers:
                    assert await tracker.wait(frozenset({"active"}), DEADLINE) == "active"
                for name in names:
                    await units.stop(name)
                for tracker in trackers:
                    assert await tracker.wait(frozenset({"inactive"}), DEADLINE) == "inactive"
            finally:
                for task in tasks:
                    task.cancel()
        for name in names:
            assert seen[name][0] in ("activating", "active"), seen
            assert "active" in seen[name] and seen[name][-1] == "inactive", seen

    asyncio.run(go())


def test_a_watch_opened_later_on_a_subscribed_connection_gets_changes(
    container: Container,
) -> None:
    async def go() -> None:
        async with connected(container) as units:
            async with units.watch(["cmf-first.service"]):
                pass  # this connection is subscribed now
            async with units.watch(["cmf-second.service"]) as changes:
                await units.start_transient("cmf-second.service", ["/bin/sleep", "1000"])
                async with asyncio.timeout(DEADLINE):
                    states = []
                    async for change in changes:
                        states.append(change.active_state)
                        if change.active_state == "active":
                            break
                await units.stop("cmf-second.service")
            assert states[-1] == "active", states

    asyncio.run(go())


def test_an_error_leaves_a_watch_as_itself_not_as_a_group(container: Container) -> None:
    """A watch's caller (the unit tracker) tells a refusal from a lost connection by type."""

    async def go() -> None:
        async with connected(container) as units:
            with pytest.raises(UnitError, match="refused by the caller"):
                async with units.watch(["cmf-plain.service"]):
                    raise UnitError("refused by the caller")
            with pytest.raises(UnavailableError, match="connection to systemd lost"):
                async with units.watch(["cmf-plain.service"]) as changes:
                    units.systemd.bus.disconnect()
                    async with asyncio.timeout(DEADLINE):
                        await anext(changes)

    asyncio.run(go())


def test_a_watch_closed_earlier_does_not_hide_a_lost_connection_from_the_others(
    container: Container,
) -> None:
    async def go() -> None:
        async with (
            connected(container) as units,
            units.watch(["cmf-open.service"]) as still_open,
        ):
            async with units.watch(["cmf-closed.service"]):
                pass
            async with units.watch(["cmf-later.service"]) as later:
                units.systemd.bus.disconnect()
                for changes in (still_open, later):
                    with pytest.raises(UnavailableError, match="connection to systemd lost"):
                        async with asyncio.timeout(DEADLINE):
                            await anext(changes)

    asyncio.run(go())
