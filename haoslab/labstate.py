"""The state file of a lab cluster: what ``haosctl lab up`` created, so ``down`` finds it.

``<workdir>/lab.json`` (JSON) is written before anything is created and rewritten as the
cluster comes up; ``down`` reads it, also after ``up`` was SIGKILLed. It records the ``up``
process (pid and start time, so a recycled pid does not pass for it), the kind of nodes,
and what exists by then:

* ``nspawn``: the harness work directories (``/tmp/haos-harness/<id>``) of its clusters.
  A cluster's id, namespaces (``haos-<id>-…``), containers and cgroups (``haos/haos-<id>-nK``)
  and overlay mounts (below the work directory) all follow from that directory; one claimed
  but not yet recorded (``up`` killed while booting) is found by its owner file, which names
  the ``up`` process (:mod:`haoslab.harness.owner`).
* ``vm``: the guests' directory (``<workdir>/vm``) and QEMU's pids; every process whose
  command line names that directory (QEMU, the QMP forwarders) belongs to the lab.

Written atomically (a rename), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from haos.errors import UsageError
from haoslab.harness import owner

DEFAULT_WORKDIR = Path("/run/haos-lab")
STATE = "lab.json"
KINDS = ("nspawn", "vm")


@dataclass(frozen=True)
class LabState:
    kind: str
    pid: int
    started: int  # the pid's start time (owner.start_time)
    config: str
    clusters: tuple[str, ...] = ()  # nspawn: harness work directories
    guests: str = ""  # vm: the guests' directory
    qemu: tuple[int, ...] = ()  # vm: QEMU's pids
    nodes: tuple[str, ...] = ()  # how to reach each node, one line each

    def up_alive(self) -> bool:
        """Whether the ``up`` process that wrote this still runs (an ended one that its
        parent has not reaped yet, a zombie, does not)."""
        return owner.start_time(self.pid) == self.started and running(self.pid)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return stat.rpartition(")")[2].split()[0] != "Z"


def for_this_process(kind: str, config: str) -> LabState:
    pid = os.getpid()
    started = owner.start_time(pid)
    assert started is not None  # this process runs
    return LabState(kind, pid, started, config)


def path(workdir: Path) -> Path:
    return workdir / STATE


def save(workdir: Path, state: LabState) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = workdir / f".{STATE}.{os.getpid()}"
    temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
    temporary.rename(path(workdir))


def load(workdir: Path) -> LabState | None:
    """The recorded state; None if there is none. UsageError if the file is not one."""
    try:
        raw = json.loads(path(workdir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path(workdir)} is no lab state file: {e}") from e
    try:
        state = LabState(
            kind=str(raw["kind"]),
            pid=int(raw["pid"]),
            started=int(raw["started"]),
            config=str(raw["config"]),
            clusters=tuple(str(c) for c in raw.get("clusters", ())),
            guests=str(raw.get("guests", "")),
            qemu=tuple(int(p) for p in raw.get("qemu", ())),
            nodes=tuple(str(n) for n in raw.get("nodes", ())),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path(workdir)} is no lab state file: bad field {e}") from e
    if state.kind not in KINDS:
        raise UsageError(f"{path(workdir)}: unknown kind {state.kind!r}")
    return state


def forget(workdir: Path) -> None:
    """Remove the state file, and the work directory if nothing else is left in it."""
    path(workdir).unlink(missing_ok=True)
    for leftover in workdir.glob(f".{STATE}.*"):
        leftover.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (a file of the user's?) or already gone
        workdir.rmdir()
