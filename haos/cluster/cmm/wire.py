"""The CMM's messages on its CPG group, so every member sees them in the agreed order.

Body of kind FENCE_RESULT: ``node`` (UTF-8, u8 length) | ``action`` (u8: 0 off, 1 reboot)
| ``ok`` (u8) | ``detail`` (UTF-8, u16 length, cut to 1 KiB).

Body of kind LEAVE: ``node`` (u32, the corosync node id of the node that leaves cleanly). The
receiver checks that the sender is that node (:func:`decode_message` takes the sender).
"""

from __future__ import annotations

import enum

from construct import Flag, Int8ub, Int16ub, Int32ub, PascalString, Struct

from haos.cluster.cmm.model import LeaveAnnounced
from haos.cluster.dss.messaging.codec import build, parse
from haos.cluster.dss.wire import Envelope, Service, WireError, decode, encode
from haos.cluster.fencing.types import FenceAction, FenceResult

_ACTIONS = ("off", "reboot")
_FENCE_RESULT = Struct(
    "node" / PascalString(Int8ub, "utf8"),
    "action" / Int8ub,
    "ok" / Flag,
    "detail" / PascalString(Int16ub, "utf8"),
)
_LEAVE = Struct("node" / Int32ub)


class Kind(enum.IntEnum):
    FENCE_RESULT = 1
    LEAVE = 2


def encode_fence_result(result: FenceResult) -> bytes:
    body = build(
        _FENCE_RESULT,
        {
            "node": result.node,
            "action": _ACTIONS.index(result.action),
            "ok": result.ok,
            "detail": result.detail[:1024],
        },
    )
    return encode(Envelope(Service.CMM, Kind.FENCE_RESULT, body))


def encode_leave(leave: LeaveAnnounced) -> bytes:
    return encode(Envelope(Service.CMM, Kind.LEAVE, build(_LEAVE, {"node": leave.node})))


def decode_message(data: bytes, sender: int | None = None) -> FenceResult | LeaveAnnounced:
    """The FenceResult or LeaveAnnounced in a CMM message; WireError if it is anything else,
    malformed, or (given ``sender``) a leave announced for another node than its sender."""
    env = decode(data, Service.CMM)
    if env.kind == Kind.LEAVE:
        node = int(parse(_LEAVE, env.body, "CMM leave").node)
        if sender is not None and node != sender:
            raise WireError(f"node id {sender} announced the leave of node id {node}")
        return LeaveAnnounced(node)
    if env.kind != Kind.FENCE_RESULT:
        raise WireError(f"unknown CMM message kind {env.kind}")
    raw = parse(_FENCE_RESULT, env.body, "CMM fence result")
    if raw.action >= len(_ACTIONS):
        raise WireError(f"unknown fence action {raw.action}")
    action: FenceAction = "off" if raw.action == 0 else "reboot"
    return FenceResult(str(raw.node), action, bool(raw.ok), str(raw.detail))
