"""The agent's checkpoint writes to the node daemon: a section the checkpoint service would
refuse is refused here first, with the limit named, and nothing is sent; the largest that fits
is sent whole."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace
from typing import Any

import pytest

from haos.errors import UsageError
from haos.limits import MAX_CHECKPOINT_SECTION
from haos.services.agent.cluster_backend import MAX_SECTION_DATA, ClusterBackend


class Daemon:
    """The node daemon's control socket, as far as the backend uses it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.requests.append((op, fields))
        return {"ok": True}


def backend() -> tuple[ClusterBackend, Daemon]:
    daemon = Daemon()
    topo = SimpleNamespace(group_of={}, groups={})
    return ClusterBackend(daemon, topo), daemon  # type: ignore[arg-type]


def test_a_section_over_the_limit_is_refused_before_anything_is_sent() -> None:
    agent, daemon = backend()
    with pytest.raises(UsageError, match=f"over the limit of {MAX_SECTION_DATA} bytes"):
        asyncio.run(agent.checkpoint_write("app", "state", bytes(MAX_SECTION_DATA + 1), True))
    assert daemon.requests == []


def test_the_largest_section_that_fits_is_sent_and_stored_within_the_services_limit() -> None:
    agent, daemon = backend()
    data = bytes(MAX_SECTION_DATA)
    asyncio.run(agent.checkpoint_write("app", "state", data, True))
    (op, fields) = daemon.requests[-1]
    assert op == "ckpt_write" and base64.b64decode(fields["data"]) == data
    assert len(fields["data"]) == MAX_CHECKPOINT_SECTION
