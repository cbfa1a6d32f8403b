"""CRC messages larger than one CPG message, carried as FRAGMENTs.

A CPG message is bounded (about 1 MiB, by corosync's IPC), but a checkpoint section may hold
:data:`~haos.limits.MAX_CHECKPOINT_SECTION` (16 MiB) and a state transfer carries every
section. So a CRC message whose body is over :data:`FRAGMENT_BYTES` travels as FRAGMENT
messages (see ``checkpoint.wire``), each carrying at most that many bytes of it, sent back to
back. A sender's messages keep their order, so a receiver sees one sender's fragments in a
row, interleaved only with other senders' messages.

A receiver (:class:`Assembler`) collects them per sender and hands on the whole message where
its *last* fragment sits in the agreed order, as if it had been sent there as one message. So
a chunked write becomes visible at one point of the order on every replica, all or nothing: a
sender that leaves before its last fragment was ordered leaves nothing behind, as virtual
synchrony delivers that fragment to every member or to none. Synchronous writes, DROPs and
the drop bound count from that point, as for a write of one message.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from haos.cluster.dss.checkpoint.wire import FragmentMsg, Kind, fragment_head
from haos.cluster.dss.wire import WireError
from haos.limits import MiB

# Bytes of a message's body per fragment: a quarter of the CPG bound, as the repository's
# transfer chunks, so no CPG message comes near the bound.
FRAGMENT_BYTES = 256 * 1024
# The largest piece a receiver takes (a sender may be configured with larger fragments), and
# the largest message it reassembles: a state transfer of a checkpoint of many sections. A
# sender that goes past either is refused (WireError) and what it sent so far forgotten.
MAX_PIECE = 1 * MiB
MAX_MESSAGE = 1024 * MiB


def size(parts: Sequence[bytes]) -> int:
    return sum(len(p) for p in parts)


def split(
    msg_id: int, kind: Kind, parts: Sequence[bytes], limit: int = FRAGMENT_BYTES
) -> Iterator[bytes]:
    """The FRAGMENT bodies that carry the body ``b"".join(parts)`` of a ``kind`` message,
    made one at a time (each copies at most ``limit`` bytes of ``parts``)."""
    count = max(1, -(-size(parts) // limit))
    for index, piece in enumerate(_pieces(parts, limit) if count > 1 else [b"".join(parts)]):
        yield fragment_head(msg_id, index, count, kind, len(piece)) + piece


def _pieces(parts: Sequence[bytes], limit: int) -> Iterator[bytes]:
    buffer: list[memoryview] = []
    held = 0
    for part in parts:
        view = memoryview(part)
        while view:
            take = view[: limit - held]
            buffer.append(take)
            held += len(take)
            view = view[len(take) :]
            if held == limit:
                yield b"".join(buffer)
                buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


@dataclass
class _Partial:
    msg_id: int
    count: int
    kind: int
    pieces: list[bytes] = field(default_factory=list)
    held: int = 0


class Assembler:
    """Reassembles each sender's fragmented messages (see the module docstring)."""

    def __init__(self, *, max_piece: int = MAX_PIECE, max_message: int = MAX_MESSAGE) -> None:
        self._max_piece = max_piece
        self._max_message = max_message
        self._partial: dict[int, _Partial] = {}

    @property
    def held(self) -> int:
        """Bytes of unfinished messages held."""
        return sum(p.held for p in self._partial.values())

    def add(self, sender: int, frag: FragmentMsg) -> tuple[int, bytes] | None:
        """Take one fragment; the whole message ``(kind, body)`` once its last arrived.
        WireError (and the sender's unfinished message forgotten) if it does not continue
        what that sender sent."""
        partial = self._partial.get(sender)
        try:
            self._check(frag, partial)
        except WireError:
            self._partial.pop(sender, None)
            raise
        if frag.index == 0:
            partial = self._partial[sender] = _Partial(frag.msg_id, frag.count, frag.kind)
        assert partial is not None
        partial.pieces.append(frag.piece)
        partial.held += len(frag.piece)
        if len(partial.pieces) < partial.count:
            return None
        del self._partial[sender]
        return partial.kind, b"".join(partial.pieces)

    def interrupted(self, sender: int) -> bool:
        """A message (not a fragment) from ``sender``: True if it cut off an unfinished one,
        which is forgotten (a sender sends its fragments back to back)."""
        return self._partial.pop(sender, None) is not None

    def forget(self, nodes: Iterable[int]) -> None:
        """``nodes`` left the group: their unfinished messages will never complete."""
        for node in nodes:
            self._partial.pop(node, None)

    def _check(self, frag: FragmentMsg, partial: _Partial | None) -> None:
        where = f"fragment {frag.index} of {frag.count} of message {frag.msg_id}"
        if frag.kind == Kind.FRAGMENT or frag.kind not in Kind.__members__.values():
            raise WireError(f"CRC {where}: kind {frag.kind} cannot be fragmented")
        if not 0 <= frag.index < frag.count:
            raise WireError(f"CRC {where}: index out of range")
        if len(frag.piece) > self._max_piece:
            raise WireError(f"CRC {where}: piece of {len(frag.piece)} bytes over {self._max_piece}")
        if frag.index == 0:
            if partial is not None:
                raise WireError(f"CRC {where}: message {partial.msg_id} was cut off")
            return
        if partial is None or (partial.msg_id, partial.count, partial.kind) != (
            frag.msg_id,
            frag.count,
            frag.kind,
        ):
            raise WireError(f"CRC {where}: its first fragment did not come")
        if frag.index != len(partial.pieces):
            raise WireError(f"CRC {where}: expected fragment {len(partial.pieces)}")
        if partial.held + len(frag.piece) > self._max_message:  # the first piece is bounded
            raise WireError(f"CRC {where}: a message over {self._max_message} bytes")
