"""The availability service's event records: wire form, each node's ring, and duplicates."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haos.cluster.dss.events.record import (
    EventRing,
    Record,
    decode,
    encode,
    is_news,
    record_from_json,
)
from haos.errors import UsageError


def rec(epoch: int, seq: int, index: int = 0, at: float = 100.0, kind: str = "role") -> Record:
    return Record(epoch, seq, index, at, kind, "n1/app", f"#{seq}.{index}", {"new": "primary"})


def test_a_record_survives_its_wire_form() -> None:
    r = Record(
        3,
        41,
        2,
        1765110000.125,
        "role",
        "n1/app",
        "n1/app now primary",
        {
            "old": "secondary",
            "new": "primary",
            "instances": ["app-si"],
            "graceful": True,
        },
    )
    assert decode(encode(r)) == r
    assert r.event_type == "crim/role"
    assert r.key == (3, 41, 2)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"epoch": -1}, "epoch must be a whole number"),
        ({"seq": True}, "seq must be a whole number"),
        ({"index": 1.5}, "index must be a whole number"),
        ({"at": "noon"}, "at must be a finite number"),
        ({"kind": "gossip"}, "kind must be one of"),
        ({"subject": 7}, "subject must be text"),
        ({"text": "x" * 5000}, "text must be text of <= 4096"),
        ({"details": ["a"]}, "details must be an object"),
    ],
)
def test_a_record_with_a_bad_field_is_refused_naming_it(
    change: dict[str, object], says: str
) -> None:
    obj = {**rec(1, 1).to_json(), **change}
    with pytest.raises(UsageError, match=says):
        record_from_json(obj)


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"not json", b"[1, 2]", json.dumps({}).encode()])
def test_a_payload_that_is_not_a_record_is_refused(payload: bytes) -> None:
    with pytest.raises(UsageError):
        decode(payload)


def test_the_ring_keeps_the_last_records_oldest_first() -> None:
    ring = EventRing(size=3)
    for seq in range(1, 6):
        assert ring.add(rec(1, seq, at=float(seq)))
    assert [r.seq for r in ring.since()] == [3, 4, 5]
    assert [r.seq for r in ring.since(4.0)] == [4, 5]
    assert ring.last == (1, 5, 0)


def test_a_record_received_twice_is_kept_once() -> None:
    ring = EventRing()
    assert ring.add(rec(1, 7, 0)) and ring.add(rec(1, 7, 1))
    assert not ring.add(rec(1, 7, 0))
    assert not ring.add(rec(1, 7, 1))
    assert ring.dropped == 2 and len(ring) == 2


def test_a_new_masters_republication_is_dropped_where_it_arrived_and_kept_where_it_did_not() -> (
    None
):
    """The old master (epoch 1) posted decision 8 and died; the new one (epoch 2) posts
    decision 8 again, then its own 9: every node ends with each record once, in order."""
    old = [rec(1, 7), rec(1, 8, 0), rec(1, 8, 1)]
    new = [rec(1, 8, 0), rec(1, 8, 1), rec(2, 9, 0)]
    got_all, missed_last = EventRing(), EventRing()
    for r in old + new:
        got_all.add(r)
    for r in old[:1] + new:  # decision 8 never reached this node from the old master
        missed_last.add(r)
    keys = [(1, 7, 0), (1, 8, 0), (1, 8, 1), (2, 9, 0)]
    assert [r.key for r in got_all.since()] == keys
    assert [r.key for r in missed_last.since()] == keys
    assert got_all.dropped == 2 and missed_last.dropped == 0


def test_a_superseded_master_is_not_heard_once_a_newer_one_spoke() -> None:
    ring = EventRing()
    assert ring.add(rec(2, 9))
    assert not ring.add(rec(1, 10))  # the old master, cut off, still deciding
    assert [r.key for r in ring.since()] == [(2, 9, 0)]


def test_a_newer_mastership_is_news_even_when_it_numbers_lower() -> None:
    """After a whole-cluster restart the state may come back from an older stored decision."""
    ring = EventRing()
    assert ring.add(rec(4, 120))
    assert ring.add(rec(5, 90))
    assert [r.seq for r in ring.since()] == [120, 90]


KEYS = st.tuples(st.integers(0, 3), st.integers(0, 20), st.integers(0, 3))


@given(st.lists(KEYS, max_size=40))
def test_the_ring_never_holds_a_key_twice_and_holds_them_in_increasing_order(
    keys: list[tuple[int, int, int]],
) -> None:
    ring = EventRing(size=100)
    for key in keys:
        ring.add(rec(*key))
    kept = [r.key for r in ring.since()]
    assert len(kept) == len(set(kept))
    assert all(is_news(b, a) for a, b in itertools.pairwise(kept))
    assert len(kept) + ring.dropped == len(keys)
