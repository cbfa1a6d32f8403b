"""The names applications bind, on CNS (haos.services.names): a take-over wins, a dead node's
names go everywhere, a stopped component's names go unless a successor took them."""

from __future__ import annotations

import asyncio

import pytest

from haos.cluster.dss.naming import NamingService
from haos.errors import UsageError
from haos.services.names import NameDirectory
from haoslab.fakes.localnet import LocalNet

pytestmark = pytest.mark.timeout(60)
NAMES = {1: "n1", 2: "n2", 3: "n3"}


def test_a_successor_takes_a_name_over_and_a_dead_nodes_names_go() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b, c = await net.start_all(1, 2, 3)
            d1, d2, d3 = (NameDirectory(s, n, NAMES) for n, s in ((1, a), (2, b), (3, c)))
            await d1.bind("demo/app1", "demo/counter", "10.0.0.1:7070")
            await net.wait_for(lambda: d3.lookup("demo/counter")["handle"] is not None)
            assert d3.lookup("demo/counter") == {"handle": "10.0.0.1:7070", "node": "n1"}
            # the standby on n2 became primary: it binds the name and wins
            await d2.bind("demo/app2", "demo/counter", "10.0.0.2:7070")
            await net.wait_for(lambda: d3.lookup("demo/counter")["node"] == "n2")
            # the old primary's late drop does not remove its successor's binding
            assert await d1.drop("demo/app1") == {"dropped": []}
            await d2.bind("demo/app2", "demo/other", "x")
            net.crash(2)  # n2 dies: everything it owned goes, on every node
            await net.wait_for(lambda: d3.lookup("demo/counter")["handle"] is None)
            assert d1.lookup("demo/other") == {"handle": None, "node": None}

    asyncio.run(go())


def test_a_stopped_component_drops_its_names() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            a, b = await net.start_all(1, 2)
            d1, d2 = NameDirectory(a, 1, NAMES), NameDirectory(b, 2, NAMES)
            await d1.bind("web", "www", "a")
            await d1.bind("web", "www/admin", "b")
            await net.wait_for(lambda: d2.lookup("www/admin")["handle"] == "b")
            assert sorted((await d1.drop("web"))["dropped"]) == ["www", "www/admin"]
            await net.wait_for(lambda: d2.lookup("www")["handle"] is None)
            assert await d1.drop("web") == {"dropped": []}

    asyncio.run(go())


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b"])
def test_a_bad_name_is_refused(name: str) -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            (a,) = await net.start_all(1)
            with pytest.raises(UsageError, match="bad name"):
                await NameDirectory(a, 1, NAMES).bind("c", name, "h")

    asyncio.run(go())


def test_a_handle_over_the_limit_is_refused() -> None:
    async def go() -> None:
        async with LocalNet(NamingService) as net:
            (a,) = await net.start_all(1)
            with pytest.raises(UsageError, match="at most 4096"):
                await NameDirectory(a, 1, NAMES).bind("c", "n", "h" * 4097)

    asyncio.run(go())
