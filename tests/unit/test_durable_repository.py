"""Persistent checkpoints' durable copies in the repository: one key per checkpoint, every
section in one write (or, when larger than a value, in parts behind a manifest), damaged or
oversized copies named."""

from __future__ import annotations

import pytest

from haos.cluster.dss.ccr import CcrService, Put
from haos.errors import UnavailableError, UsageError
from haos.limits import MAX_CHECKPOINT_SECTION
from haos.services.durable import MAX_COPY, RepositoryCheckpoints, key_of
from haoslab.testing.ccr import with_ccr


def test_sections_survive_as_one_value_and_are_replaced_whole() -> None:
    async def body(ccr: CcrService) -> None:
        store = RepositoryCheckpoints(ccr)
        assert await store.load("group:counter") is None
        await store.save("group:counter", {"state": b"41", "blob": bytes(range(256))})
        assert await store.load("group:counter") == {"state": b"41", "blob": bytes(range(256))}
        await store.save("group:counter", {"state": b"42"})
        assert await store.load("group:counter") == {"state": b"42"}
        await store.delete("group:counter")
        assert await store.load("group:counter") is None

    with_ccr(body)


def test_every_name_has_its_own_valid_key() -> None:
    names = ["crim", "group:counter", "component:shelf1/slot1/node/app", "x-41", "é"]
    keys = {key_of(n) for n in names}
    assert len(keys) == len(names)
    assert key_of("crim") == "/haos/checkpoints/crim"


def test_a_damaged_or_oversized_copy_is_named_and_nothing_is_half_saved() -> None:
    async def body(ccr: CcrService) -> None:
        store = RepositoryCheckpoints(ccr)
        await ccr.txn((), (Put(key_of("crim"), b'{"format": 1, "sections": {"s": "!!"}}'),))
        with pytest.raises(UnavailableError, match="durable copy of checkpoint 'crim'"):
            await store.load("crim")
        await store.save("big", {"s": b"ok"})
        section = bytes(MAX_CHECKPOINT_SECTION)
        over = {**{f"s{i}": section for i in range(MAX_COPY // len(section))}, "t": b"x"}
        with pytest.raises(UsageError, match=rf"'big'.*more than the {MAX_COPY} bytes"):
            await store.save("big", over)
        assert await store.load("big") == {"s": b"ok"}

    with_ccr(body)
