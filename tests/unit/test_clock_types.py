"""mypy --strict keeps the monotonic and the wall clock apart: a NodeLeft dated by the CMM on
its node's monotonic clock cannot reach the CRIM unconverted, and neither clock's time can be
stored as the other's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(280)

ROOT = Path(__file__).resolve().parents[2]

# Each line marked "# mixes" must be an error; the rest must type-check.
PROGRAM = """\
from haos.clock import MonoTime, WallTime, mono_now, wall_now
from haos.cluster.cmm.model import Publish
from haos.cluster.crim import events as ev
from haos.services.crimbrain import Brain


def crim_gets(brain: Brain, notice: Publish, wall: WallTime, mono: MonoTime) -> None:
    event = notice.event
    if isinstance(event, ev.NodeLeft):
        brain.decide(event, wall)  # mixes
        brain.decide(event.on_wall_clock(wall, mono), wall)
        brain.decide(event.on_wall_clock(wall, mono), mono)  # mixes


def dated(mono: MonoTime, wall: WallTime) -> None:
    for_crim: ev.NodeLeft = ev.NodeLeft("n1", mono_now())  # mixes
    for_crim = ev.NodeLeft("n1", wall_now())
    ev.NodeLeft("n1", 6474.0)  # mixes: a time must say its clock
    started: WallTime = min(mono, wall)  # mixes
    Publish(ev.NodeJoined("n1"), wall)  # mixes
    Publish(ev.NodeLeft("n1", mono), mono)
"""


def test_mypy_rejects_each_place_where_the_clocks_mix(tmp_path: Path) -> None:
    program = tmp_path / "mixing.py"
    program.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    env["MYPYPATH"] = str(ROOT)
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mypy"),
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            "--config-file=",
            str(program),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=260,
    )
    flagged = sorted(
        int(line.split(":")[1]) for line in proc.stdout.splitlines() if ": error:" in line
    )
    expected = [i for i, line in enumerate(PROGRAM.splitlines(), 1) if "# mixes" in line]
    assert flagged == expected, proc.stdout + proc.stderr
