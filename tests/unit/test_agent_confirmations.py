"""A graceful role change's confirmation, from the agent's link to the master's dispatcher:
it carries the order itself, and the master takes nothing else as one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest

from haos.cluster.crim.topology import Topology
from haos.cluster.dss.messaging.rrpc import Call, RpcService
from haos.config.loader import load_config
from haos.errors import UsageError
from haos.model.states import AvailabilityState
from haos.services.agent.link import ControlLink
from haos.services.clusterapi import ClusterApi
from haos.services.control import AsyncControlClient
from haos.services.crimd import AvailabilityService, ServiceRole
from haos.services.orderbook import NodeOrders
from haos.services.orders import RoleOrder

EXAMPLES = Path(__import__("haos.examples", fromlist=["x"]).__path__[0])
CONFIG = load_config(EXAMPLES / "small-2n.toml")
TOPO = Topology(CONFIG)
ORDER = RoleOrder("shelf1/slot1/node/demo", AvailabilityState.SPARE, True, 41)


class Rpc:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def register(self, method: str, handler: Any) -> None:
        self.handlers[method] = handler


class Active:
    role = ServiceRole.ACTIVE
    brain = object()


class Control:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.sent.append({"op": op, **fields})
        return {}


def master() -> tuple[Rpc, list[tuple[RoleOrder, int | None]]]:
    rpc, got = Rpc(), []
    ClusterApi(
        CONFIG.nodes[0],
        TOPO,
        cast(RpcService, rpc),
        lambda: 1,
        NodeOrders("n1"),
        lambda: cast(AvailabilityService, Active()),
        lambda order, epoch: got.append((order, epoch)),
    )
    return rpc, got


def call(rpc: Rpc, request: object) -> bytes:
    payload = json.dumps(request).encode()
    result: bytes = asyncio.run(rpc.handlers["applied"](Call(2, "applied", payload)))
    return result


def test_the_link_sends_the_order_and_the_master_hands_exactly_it_to_the_dispatcher() -> None:
    control = Control()
    asyncio.run(ControlLink(cast(AsyncControlClient, control)).applied(ORDER, 5))
    asyncio.run(ControlLink(cast(AsyncControlClient, control)).applied(ORDER, None))
    rpc, got = master()
    for request in control.sent:
        call(rpc, request)  # the node's clusterd forwards the control request as it is
    assert got == [(ORDER, 5), (ORDER, None)]


@pytest.mark.parametrize(
    "request_",
    [
        {"component": ORDER.component, "state": "spare"},  # names no order: which switchover?
        {"order": {"kind": "role", "component": ORDER.component, "state": "spare"}},  # no seq
        {"order": {"kind": "recover", "component": ORDER.component, "level": "restart", "seq": 4}},
        {"order": {"kind": "role", "component": "c", "state": "spare", "seq": 4}, "epoch": "2"},
        ["applied"],
    ],
)
def test_a_confirmation_that_names_no_role_order_is_refused(request_: object) -> None:
    rpc, got = master()
    with pytest.raises(UsageError, match="applied"):
        call(rpc, request_)
    assert got == []
