"""Mastership epochs: claimed in the repository, unique and increasing; a node's order book
refuses orders of a superseded master and lets a newer master's numbering supersede."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from haos.cluster.dss.ccr import CcrService, Put
from haos.errors import ConflictError, UnavailableError, UsageError
from haos.model.states import AvailabilityState
from haos.services.epochs import KEY, RepositoryEpochs
from haos.services.orderbook import Batch, NodeOrders, batch_from_json
from haos.services.orders import RoleOrder
from haoslab.testing.ccr import with_ccr

P, S, SP = AvailabilityState.PRIMARY, AvailabilityState.SECONDARY, AvailabilityState.SPARE


def test_orders_of_a_superseded_master_are_refused_and_change_nothing() -> None:
    book = NodeOrders("n1")
    seen: list[dict[str, Any]] = []
    book.subscribe(seen.append)
    book.receive(Batch(5, (), {"x": S}, epoch=7))
    book.receive(Batch(6, (RoleOrder("x", P, False, 6),), epoch=7))
    before = list(seen)
    # A master of epoch 6 that has not noticed it was superseded: newer numbers, older epoch.
    with pytest.raises(ConflictError, match="epoch 6 refused on n1: it follows epoch 7"):
        book.receive(Batch(26, (RoleOrder("x", SP, False, 26),), None, ({"seq": 26},), epoch=6))
    with pytest.raises(ConflictError):
        book.receive(Batch(27, (), {"x": SP}, epoch=6))
    assert book.roles == {"x": P} and seen == before and book.refused == 2
    assert not any(n.get("seq") == 26 for n in book.history)


def test_a_newer_master_supersedes_whatever_its_numbering() -> None:
    book = NodeOrders("n1")
    book.receive(Batch(40, (), {"x": P}, epoch=3))
    book.receive(Batch(41, (RoleOrder("x", P, False, 41),), None, ({"seq": 41, "reason": "a"},), 3))
    # Restored after a whole-cluster restart from an older stored state: lower numbers.
    book.receive(Batch(12, (), {"x": S}, ({"seq": 12, "reason": "b"},), epoch=4))
    assert book.roles == {"x": S} and book.epoch == 4 and book.seq == 12
    book.receive(Batch(13, (RoleOrder("x", P, False, 13),), None, ({"seq": 13, "reason": "c"},), 4))
    assert book.roles == {"x": P}
    assert [n["reason"] for n in book.history] == ["a", "b", "c"]


def test_the_epoch_travels_in_the_wire_form_and_bad_ones_are_named() -> None:
    batch = Batch(3, (RoleOrder("x", P, True, 3),), {"x": P}, ({"seq": 3},), epoch=9)
    assert batch_from_json(json.loads(json.dumps(batch.to_json()))) == batch
    assert batch_from_json({"seq": 1}).epoch == 0  # before epochs: the oldest
    for bad in (-1, "2", True, 1.5):
        with pytest.raises(UsageError, match="bad epoch"):
            batch_from_json({"seq": 1, "epoch": bad})


def test_repository_epochs_are_unique_and_increasing_even_when_claimed_at_once() -> None:
    async def body(ccr: CcrService) -> None:
        epochs = RepositoryEpochs(ccr)
        assert await epochs.claim(1, 0) == 1
        assert await epochs.claim(2, 0) == 2
        assert await epochs.claim(2, 10) == 11  # above a checkpointed epoch too
        claimed = await asyncio.gather(*(RepositoryEpochs(ccr).claim(n, 0) for n in (1, 2, 3)))
        assert sorted(claimed) == [12, 13, 14]
        item = await ccr.get(KEY)
        assert item is not None and json.loads(item.value)["epoch"] == 14

    with_ccr(body)


def test_a_damaged_epoch_key_is_named_and_nothing_is_claimed() -> None:
    async def body(ccr: CcrService) -> None:
        await ccr.txn((), (Put(KEY, b"not json"),))
        with pytest.raises(UnavailableError, match="holds no epoch"):
            await RepositoryEpochs(ccr).claim(1, 0)
        await ccr.txn((), (Put(KEY, b'{"epoch": -3}'),))
        with pytest.raises(UnavailableError, match="bad epoch"):
            await RepositoryEpochs(ccr).claim(1, 0)

    with_ccr(body)


def test_a_graceful_order_that_came_before_the_agent_is_handed_to_it_after_the_full_state() -> None:
    """The master holds a promotion until this order is confirmed: an agent that subscribes
    only later (its node was booting) must still get the order itself, not only the roles."""
    book = NodeOrders("n1")
    book.receive(Batch(3, (), {"x": P}, epoch=2))
    gone = RoleOrder("x", SP, True, 4)
    book.receive(Batch(4, (gone,), epoch=2))
    seen: list[dict[str, Any]] = []
    book.subscribe(seen.append)
    assert seen == [
        {"roles": {"x": "spare"}},
        {
            "order": {
                "kind": "role",
                "component": "x",
                "state": "spare",
                "graceful": True,
                "seq": 4,
            },
            "epoch": 2,
        },
    ]
    later: list[dict[str, Any]] = []
    book.subscribe(later.append)  # handed over once
    assert later == [{"roles": {"x": "spare"}}]
