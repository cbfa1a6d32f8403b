"""The cluster's events from publication to a program on another node: three nodes' news
services on the in-memory bus, the control socket of one node (the daemon's own server), and
:func:`haos.client.cluster_events` reading it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from haos.client import ClusterEvent, cluster_events
from haos.client.events import DaemonError
from haos.cluster.dss.events.record import Record
from haos.errors import UnavailableError, UsageError
from haos.services.clusterctl import ControlServer
from haos.services.newsroom import ClusterNews
from haoslab.fakes.localnet import LocalNet

pytestmark = pytest.mark.timeout(60)
T0 = 1_765_000_000.0


class NoRpc:
    """The news service registers its RRPC method; nothing calls it here."""

    def register(self, method: str, handler: Any) -> None:
        del method, handler


def news_service(transport: Any) -> ClusterNews:
    return ClusterNews(transport, NoRpc(), lambda: None, lambda: T0)  # type: ignore[arg-type]


def role(epoch: int, seq: int, at: float, new: str = "primary") -> Record:
    text = f"n1/app now {new} for app-si (was secondary) on n1"
    return Record(epoch, seq, 0, at, "role", "n1/app", text, {"new": new, "node": "n1"})


@contextlib.asynccontextmanager
async def control_socket(tmp_path: Path, news: ClusterNews | None) -> AsyncIterator[str]:
    path = str(tmp_path / "control.sock")
    server = await ControlServer(SimpleNamespace(news=news)).serve(path)  # type: ignore[arg-type]
    async with server:
        yield path


async def until(predicate: Callable[[], bool]) -> None:
    """Poll: the records reach the rings in the news services' own tasks."""
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


async def take(events: AsyncIterator[ClusterEvent], n: int) -> list[ClusterEvent]:
    async with asyncio.timeout(5):
        return [await anext(events) for _ in range(n)]


def test_a_program_on_another_node_follows_what_the_master_posts(tmp_path: Path) -> None:
    async def go() -> None:
        async with LocalNet(news_service) as net:
            master, other, _ = await net.start_all(1, 2, 3)
            master.post([role(1, 1, T0)])
            await until(lambda: all(len(net[n].ring) == 1 for n in (1, 2, 3)))
            async with control_socket(tmp_path, other) as path:
                backlog = [e async for e in cluster_events(control=path, follow=False)]
                assert [e.key for e in backlog] == [(1, 1, 0)]
                assert backlog[0].text.startswith("n1/app now primary")
                assert backlog[0].details == {"new": "primary", "node": "n1"}
                # From T0 + 1 on: what is kept then, and each new one as it comes -- whether
                # the posts below reach the node before or after the follower subscribed.
                follower = cluster_events(control=path, since=T0 + 1)
                first = asyncio.ensure_future(anext(follower))
                master.post([role(1, 2, T0 + 5, "secondary"), role(1, 2, T0 + 5)])  # dup
                master.post([role(2, 3, T0 + 9)])
                got = [await asyncio.wait_for(first, 5), *await take(follower, 1)]
                assert [e.key for e in got] == [(1, 2, 0), (2, 3, 0)]
                assert got[0].details["new"] == "secondary"
                await follower.aclose()
                late = [e async for e in cluster_events(control=path, since=T0 + 5, follow=False)]
                assert [e.key for e in late] == [(1, 2, 0), (2, 3, 0)]
                assert other.ring.dropped == 1

    asyncio.run(go())


def test_a_follower_is_told_when_the_daemon_cannot_serve_events(tmp_path: Path) -> None:
    async def go() -> None:
        async with control_socket(tmp_path, None) as path:
            with pytest.raises(UnavailableError, match="not running yet"):
                await anext(cluster_events(control=path))

    asyncio.run(go())


def test_a_bad_request_is_refused_with_the_daemons_code(tmp_path: Path) -> None:
    async def go() -> None:
        async with control_socket(tmp_path, None) as path:
            with pytest.raises(DaemonError, match="usage: events: since must be a finite"):
                await anext(cluster_events(control=path, since="noon"))  # type: ignore[arg-type]
            with pytest.raises(UsageError, match="not finite"):  # refused before it is sent
                await anext(cluster_events(control=path, since=float("inf")))

    asyncio.run(go())


def test_an_absent_daemon_is_unavailable(tmp_path: Path) -> None:
    async def go() -> None:
        with pytest.raises(UnavailableError, match="unreachable"):
            await anext(cluster_events(control=str(tmp_path / "none.sock")))

    asyncio.run(go())
