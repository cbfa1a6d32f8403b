"""The wire form of a state-transfer :class:`~haos.cluster.dss.messaging.statesync.Offer`
(a prefix of each service's SYNC body):

    targets: count u32, then (node u32, marks u32) each | synced: count u32, then node u32 each
"""

from __future__ import annotations

from typing import Any

from construct import Int32ub, PrefixedArray, Struct

from haos.cluster.dss.messaging.codec import NodeList
from haos.cluster.dss.messaging.statesync import Offer
from haos.cluster.dss.wire import WireError

OfferStruct = Struct(
    "targets" / PrefixedArray(Int32ub, Struct("node" / Int32ub, "marks" / Int32ub)),
    "synced" / NodeList,
)


def offer_value(offer: Offer) -> dict[str, Any]:
    return {
        "targets": [{"node": n, "marks": m} for n, m in offer.targets],
        "synced": list(offer.synced),
    }


def offer_from(raw: Any) -> Offer:
    targets = tuple((int(t.node), int(t.marks)) for t in raw.targets)
    if len({n for n, _ in targets}) != len(targets):
        raise WireError("an offer names a member twice")
    return Offer(targets, tuple(int(n) for n in raw.synced))
