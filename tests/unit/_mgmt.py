"""Answers of a real 3-node lab cluster's daemon (haoslab's SystemdCluster with the demo
counter, just placed: a primary on n1, a secondary on n3, n2's member not started yet),
recorded from n1's control socket: ``status``, ``crim``, ``availability``, ``history`` and
the ``events`` kept (the stream's opening answer first). The management tests build their
snapshots from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ANSWERS = Path(__file__).with_name("_mgmt_answers.json")


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ANSWERS.read_text())
    return data
