"""A node's power is cut: the outage it causes is dated in wall-clock time, with its real length.

The membership service notices the loss on its node's monotonic clock (seconds since boot);
the history that ``haosctl history`` shows, and the record of the membership notices, must
carry wall-clock times: within seconds of the cut, and an outage as long as the fail-over took.
Boots :class:`haoslab.demo.run.DemoCluster` (three systemd-nspawn nodes, the 2N demo counter).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from haos.cli.ops import outage_lengths
from haos.errors import HaosError
from haoslab.demo.run import DemoCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SETTLE = 60.0  # seconds for the cluster to place the counter, or to place it again


def _placed(demo: DemoCluster) -> bool:
    return sorted(demo.roles().values()) == ["primary", "secondary", "spare"]


def _ask(demo: DemoCluster, node: str, op: str, **fields: Any) -> list[dict[str, Any]] | None:
    """The list an ``op`` answer holds under the name ``op``; None while the node cannot say."""
    try:
        answer = demo.cluster.control(node).request(op, **fields)
    except HaosError:
        return None  # e.g. its daemon is busy taking over: ask again
    entries = answer.get(op)
    return entries if isinstance(entries, list) else None


def test_power_cut_outage_is_dated_in_wall_clock_time_with_its_real_length(cache: Path) -> None:
    with DemoCluster(3, cache=cache) as demo:
        demo.cluster.wait_for(lambda: _placed(demo), SETTLE, "the counter placed")
        primary = demo.holder("primary")
        assert primary is not None
        witness = next(n for n in demo.names if n != primary)
        before = _ask(demo, witness, "history", limit=500) or []
        last_seq = max((e["seq"] for e in before), default=-1)
        cut = time.time()
        demo.power_cut(primary)

        history: list[dict[str, Any]] = []

        def restored() -> bool:
            history[:] = _ask(demo, witness, "history", limit=500) or []
            return any(e.get("note") == "ServiceRestored" and e["seq"] > last_seq for e in history)

        demo.cluster.wait_for(restored, SETTLE, f"the counter served again after {primary}'s cut")
        now = time.time()
        new = [e for e in history if e["seq"] > last_seq]
        outage = next(e for e in new if e.get("note") == "ServiceOutage")
        back = next(e for e in new if e.get("note") == "ServiceRestored")
        # Last seen alive between the cut and the moment the membership service missed it.
        assert cut - 1.0 <= outage["at"] <= now, (cut, outage, now)
        assert outage["at"] - cut < 5.0, outage
        assert cut <= back["at"] <= now, (cut, back, now)
        lasted = outage_lengths(history)[history.index(back)]
        assert lasted == pytest.approx(back["at"] - outage["at"])
        assert 0.0 <= lasted < 5.0, f"outage of {lasted:.3f} s"
        print(f"outage: {outage['at'] - cut:.3f} s after the cut, lasted {lasted:.3f} s")

        notices = _ask(demo, witness, "notices") or []
        left = [
            n
            for n in notices
            if (n["notice"].get("event") or {}).get("type") == "NodeLeft"
            and n["notice"]["event"]["node"] == primary
        ]
        assert left, notices
        assert cut - 1.0 <= left[-1]["notice"]["event"]["at"] <= left[-1]["at"] <= now, left[-1]
