"""Durable copies larger than one repository value: kept in parts behind a manifest, read back
whole, replaced all at once (a save cut off midway, or beaten by another save, leaves the copy
before it readable), their parts deleted with them, damage named."""

from __future__ import annotations

import os

import pytest

from haos.cluster.dss.ccr import CcrService, Put
from haos.errors import ConflictError, UnavailableError
from haos.limits import MAX_CHECKPOINT_SECTION, MiB
from haos.services.durable import PART_BYTES, RepositoryCheckpoints, key_of, slot_prefix
from haoslab.testing.ccr import with_ccr


async def parts(ccr: CcrService, name: str) -> list[str]:
    _, items = await ccr.range(f"{key_of(name)}/parts")
    return [i.key for i in items]


def test_a_copy_of_megabytes_is_kept_in_parts_and_read_back_whole() -> None:
    async def body(ccr: CcrService) -> None:
        store = RepositoryCheckpoints(ccr)
        sections = {"a": os.urandom(MiB), "b": b"", "c": os.urandom(3 * PART_BYTES + 1)}
        await store.save("group:big", sections)
        assert await store.load("group:big") == sections
        assert len(await parts(ccr, "group:big")) == -(-(MiB + 3 * PART_BYTES + 1) // PART_BYTES)
        largest = {"s": os.urandom(MAX_CHECKPOINT_SECTION)}
        await store.save("group:big", largest)
        assert await store.load("group:big") == largest
        # Replaced by a small copy: one value again, and no part is left behind.
        await store.save("group:big", {"s": b"small"})
        assert await store.load("group:big") == {"s": b"small"}
        assert await parts(ccr, "group:big") == []

    with_ccr(body)


def test_a_save_cut_off_midway_leaves_the_copy_before_and_the_next_save_cleans_up() -> None:
    async def body(ccr: CcrService) -> None:
        store = RepositoryCheckpoints(ccr)
        before = {"s": os.urandom(2 * MiB)}
        await store.save("crim", before)
        current = await ccr.get(key_of("crim"))
        assert current is not None
        slot = "b" if b'"slot": "a"' in current.value else "a"
        await ccr.txn((), (Put(f"{slot_prefix('crim', slot)}/0", b"half a save"),))
        assert await store.load("crim") == before
        after = {"s": os.urandom(MiB)}
        await store.save("crim", after)
        assert await store.load("crim") == after
        assert all(k.startswith(slot_prefix("crim", slot)) for k in await parts(ccr, "crim"))
        await store.delete("crim")
        assert await store.load("crim") is None and await parts(ccr, "crim") == []

    with_ccr(body)


def test_a_save_beaten_by_another_fails_and_leaves_the_winners_copy() -> None:
    async def body(ccr: CcrService) -> None:
        store = RepositoryCheckpoints(ccr)
        await store.save("crim", {"s": b"first"})
        winner = {"s": os.urandom(MiB)}

        class Racing:
            """The repository, with another member's save landing just before this one's
            manifest is written."""

            get = ccr.get
            raced = False

            async def txn(self, compares, ops, *, timeout=None):  # type: ignore[no-untyped-def]
                if compares and not Racing.raced:
                    Racing.raced = True
                    await store.save("crim", winner)
                return await ccr.txn(compares, ops, timeout=timeout)

        with pytest.raises(ConflictError):
            await RepositoryCheckpoints(Racing()).save("crim", {"s": os.urandom(MiB)})
        assert await store.load("crim") == winner

    with_ccr(body)


def test_a_damaged_or_missing_part_is_named() -> None:
    async def body(ccr: CcrService) -> None:
        store = RepositoryCheckpoints(ccr)
        await store.save("crim", {"s": os.urandom(MiB)})
        _, items = await ccr.range(f"{key_of('crim')}/parts")
        await ccr.txn((), (Put(items[1].key, b"garbage"),))
        with pytest.raises(UnavailableError, match="do not match the manifest"):
            await store.load("crim")
        await ccr.delete(items[2].key)
        with pytest.raises(UnavailableError, match="part 2 of 6 is missing"):
            await store.load("crim")

    with_ccr(body)
