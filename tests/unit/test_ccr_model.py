"""CCR keys, transaction evaluation and the wire bodies."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haos.cluster.dss.ccr.model import (
    EMPTY,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Change,
    Compare,
    Delete,
    DeletePrefix,
    Entry,
    Image,
    Item,
    Put,
    RequestId,
    Version,
    as_value,
    check_txn,
    in_prefix,
    validate_key,
    validate_prefix,
)
from haos.cluster.dss.ccr.state import KvState
from haos.cluster.dss.ccr.wire import (
    Applied,
    Data,
    Kind,
    Message,
    Nonce,
    Ready,
    Start,
    Sync,
    Transfer,
    Txn,
    decode_message,
    decode_transfer,
    encode_message,
    encode_transfer,
)
from haos.cluster.dss.wire import Envelope, Service, WireError, encode
from haos.errors import UsageError

# -- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["/a", "/a/b/c", "/services/web-1/port", "/ü/日本", "/a.b/_c"])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "must start with '/'"),
        ("a/b", "must start with '/'"),
        ("/", "at least one segment"),
        ("/a//b", "empty segment"),
        ("/a/", "empty segment"),
        ("/a b", "blank or unprintable"),
        ("/a\tb", "blank or unprintable"),
        ("/a\x00", "blank or unprintable"),
        ("/" + "x" * MAX_KEY_BYTES, "exceeds"),
        ("/\ud800", "unprintable"),  # a lone surrogate cannot be UTF-8
    ],
)
def test_invalid_keys_are_refused_with_the_reason(key: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        validate_key(key)


def test_a_prefix_selects_the_key_and_its_subtree_only() -> None:
    assert validate_prefix("/") == "/"
    assert in_prefix("/", "/anything")
    assert in_prefix("/a/b", "/a/b") and in_prefix("/a/b", "/a/b/c/d")
    assert not in_prefix("/a/b", "/a/bc") and not in_prefix("/a/b", "/a")


def test_values_are_bytes_or_utf8_text_of_bounded_size() -> None:
    assert as_value("grüß") == "grüß".encode()
    assert as_value(b"\x00\xff") == b"\x00\xff"
    with pytest.raises(UsageError, match="exceeds"):
        as_value(b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(UsageError, match="bytes or str"):
        as_value(42)  # type: ignore[arg-type]


def test_a_malformed_transaction_is_refused_before_it_is_sent() -> None:
    with pytest.raises(UsageError, match="empty segment"):
        check_txn([Compare("/a//b", 0)], [])
    with pytest.raises(UsageError, match=">= 0"):
        check_txn([Compare("/a", -1)], [])
    with pytest.raises(UsageError, match="not a CCR operation"):
        check_txn([], ["put /a"])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="at most"):
        check_txn([], [Delete("/a")] * 2000)


# -- transaction evaluation ----------------------------------------------------------------


def loaded(*items: tuple[str, bytes, int]) -> KvState:
    state = KvState(EMPTY, 100)
    revision = max((r for _, _, r in items), default=0)
    state.install(Image(Version(1, revision), tuple(Item(*i) for i in sorted(items))))
    return state


def test_a_transaction_applies_only_if_every_compare_holds() -> None:
    state = loaded(("/a", b"1", 3), ("/b", b"2", 4))
    ops = [Put("/c", b"3")]
    assert state.evaluate([Compare("/a", 3), Compare("/x", 0)], ops) == (Change("/c", b"3"),)
    assert state.evaluate([Compare("/a", 3), Compare("/b", 3)], ops) == Compare("/b", 3)
    assert state.evaluate([Compare("/a", 0)], ops) == Compare("/a", 0)


def test_operations_of_one_transaction_apply_in_order_and_changes_are_sorted() -> None:
    state = loaded(("/app/x", b"1", 1), ("/app/y", b"2", 1), ("/other", b"3", 1))
    changes = state.evaluate(
        [], [Put("/app/z", b"new"), DeletePrefix("/app"), Put("/app/y", b"again"), Delete("/no")]
    )
    assert changes == (
        Change("/app/x", None),
        Change("/app/y", b"again"),
    )  # /app/z was created and deleted in the same transaction: no change at all
    entry = state.apply(2, 1, RequestId(1, 1, 1), changes)
    assert state.range("/") == (Item("/app/y", b"again", 2), Item("/other", b"3", 1))
    assert state.entry_at(2) == entry and state.entry_at(1) is None


def test_a_copy_knows_which_versions_lie_on_its_history() -> None:
    state = KvState(EMPTY, 2)
    for revision, epoch in [(1, 1), (2, 1), (3, 2)]:
        state.apply(revision, epoch, RequestId(1, 1, revision), ())
    assert state.base == Version(1, 1)  # the log keeps two entries
    assert state.fits(Version(1, 2)) and state.fits(Version(2, 3)) and state.fits(Version(1, 1))
    assert not state.fits(Version(2, 2))  # revision 2 was written in epoch 1 here
    assert not state.fits(Version(0, 0))  # older than the log
    assert [e.revision for e in state.entries_after(1)] == [2, 3]


@pytest.mark.parametrize(("after", "expected"), [(10, range(11, 15)), (12, [13, 14]), (14, [])])
def test_the_entries_after_a_revision_are_the_log_tail_in_order(
    after: int, expected: list[int]
) -> None:
    state = KvState(EMPTY, 4)
    for revision in range(1, 15):
        state.apply(revision, 1, RequestId(1, 1, revision), ())
    assert state.base.revision == 10  # the log keeps 11..14
    assert [e.revision for e in state.entries_after(after)] == list(expected)


# -- wire ----------------------------------------------------------------------------------

REQ = RequestId(3, 2**64 - 1, 7)
NONCE = Nonce(2**63, 4)
MESSAGES: list[Message] = [
    Txn(REQ, (Compare("/a", 0),), (Put("/a", b"\x00v"), Delete("/b"), DeletePrefix("/"))),
    Start(NONCE, (1, 2, 3)),
    Sync(NONCE, 9, Version(4, 100), bytes(range(32)), True),
    Data(NONCE, 1, 3, b"chunk"),
    Ready(NONCE, False),
    Applied(5, 2**40),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


def test_a_transfer_round_trips() -> None:
    entries = (Entry(5, 2, REQ, (Change("/a", b"x"), Change("/b", None))),)
    image = Image(Version(2, 5), (Item("/a", b"x", 5),))
    for transfer in (Transfer(Version(1, 4), entries, image), Transfer(Version(2, 5), (), None)):
        assert decode_transfer(encode_transfer(transfer)) == transfer


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (encode(Envelope(Service.CES, 1, b"")), "arrived on CCR"),
        (encode(Envelope(Service.CCR, 99, b"")), "unknown CCR message kind 99"),
        (encode(Envelope(Service.CCR, Kind.READY, b"\x00" * 16)), "malformed CCR READY"),
        (encode_message(Ready(NONCE, True)) + b"", None),
        (encode(Envelope(Service.CCR, Kind.TXN, bytes(20) + b"\x00\x01\x04\x02/a")), "kind 4"),
        (
            encode(Envelope(Service.CCR, Kind.TXN, bytes(20) + b"\x01\x04/a//" + bytes(9))),
            "invalid key",
        ),
        (
            encode(Envelope(Service.CCR, Kind.DATA, bytes(16) + b"\x00\x00\x00\x05" * 2 + b"\x00")),
            "chunk 5 of 5",
        ),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(data: bytes, why: str | None) -> None:
    if why is None:
        decode_message(data)
        return
    with pytest.raises(WireError, match=why):
        decode_message(data)


@given(st.binary(max_size=80), st.sampled_from(list(Kind)))
def test_random_bodies_never_raise_anything_but_wire_error(body: bytes, kind: Kind) -> None:
    with contextlib.suppress(WireError):
        decode_message(encode(Envelope(Service.CCR, kind, body)))
    with contextlib.suppress(WireError):
        decode_transfer(body)
