"""``haosctl lab down``: remove a lab cluster, also what a SIGKILLed ``up`` left running.

What the lab created is found from its state file (:mod:`haoslab.labstate`). If its ``up``
still runs it is asked to stop (SIGTERM: it tears its cluster down itself) and given
``grace`` seconds, then SIGKILLed. Then whatever is left goes, in an order that never
deletes through a mount:

* nspawn nodes, per harness cluster: every process in the containers' cgroups
  (``haos/haos-<id>-nK``: systemd-nspawn and everything it started, corosync and the haos
  daemons among them) and every process whose command line names the cluster's directory is
  SIGKILLed; the overlays below the directory are unmounted, the cgroups removed; then
  :func:`haoslab.harness.cleanup.remove_cluster` kills what still runs in the namespaces and
  deletes them (their veths with them) and the directory.
* QEMU guests: QEMU (the recorded pids, if they still are QEMU of this lab) and every
  process whose command line names the guests' directory (the QMP forwarders) are SIGKILLed,
  then the directory is removed. The hubs were threads of ``up``.

Idempotent: with no state file there is nothing to do (:func:`down` returns None).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from haoslab.harness import _proc, owner
from haoslab.harness.cleanup import remove_cluster
from haoslab.harness.errors import HarnessError
from haoslab.harness.nspawn import CGROUP_HIERARCHIES, mounts_under
from haoslab.labstate import LabState, forget, load, running

log = logging.getLogger(__name__)

GRACE = 120.0  # seconds a running ``up`` has to tear its cluster down after SIGTERM
KILL_TIMEOUT = 15.0
_POLL = 0.05


@dataclass
class DownReport:
    """What :func:`down` found and did."""

    kind: str
    stopped_up: str = ""  # "": up had ended; "SIGTERM" or "SIGKILL": how it was stopped
    killed: list[int] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)


def down(workdir: Path, grace: float = GRACE) -> DownReport | None:
    """Remove the lab recorded in ``workdir`` (see the module docstring); None if none is."""
    state = load(workdir)
    if state is None:
        forget(workdir)  # a work directory left empty
        return None
    report = DownReport(state.kind)
    if state.up_alive():
        report.stopped_up = _stop_up(state, grace)
    sweep(state, report)
    forget(workdir)
    return report


def sweep(state: LabState, report: DownReport | None = None) -> DownReport:
    """Remove whatever of the lab ``state`` records is left, without asking its ``up`` to
    stop (``up`` calls this itself once its cluster closed: the guests' disks stay
    otherwise)."""
    report = report or DownReport(state.kind)
    if state.kind == "nspawn":
        for cluster in _clusters(state):
            _remove_nspawn_cluster(cluster, report)
    else:
        _remove_guests(state, report)
    return report


def _stop_up(state: LabState, grace: float) -> str:
    os.kill(state.pid, signal.SIGTERM)
    if _ended(state, grace):
        return "SIGTERM"
    log.warning("lab up (pid %d) still runs %.0f s after SIGTERM: SIGKILL", state.pid, grace)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGKILL)
    if not _ended(state, KILL_TIMEOUT):
        raise HarnessError(f"lab up (pid {state.pid}) survived SIGKILL")
    return "SIGKILL"


def _ended(state: LabState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while state.up_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _clusters(state: LabState) -> list[Path]:
    """The recorded clusters and any other the ``up`` process claimed (killed while booting)."""
    found = {Path(c) for c in state.clusters}
    base = owner.DEFAULT_BASE
    if base.is_dir():
        found |= {d for d in base.iterdir() if owner.owned_by(d, state.pid, state.started)}
    return sorted(d for d in found if d.exists() or _cgroups(d.name))


def _cgroups(cluster_id: str) -> list[Path]:
    prefix = f"haos-{cluster_id}-"
    found = []
    for hierarchy in CGROUP_HIERARCHIES:
        parent = hierarchy / "haos"
        if parent.is_dir():
            found += [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return found


def _remove_nspawn_cluster(workdir: Path, report: DownReport) -> None:
    cgroups = _cgroups(workdir.name)
    report.killed += kill(lambda: _cgroup_pids(cgroups) | referring_to(workdir))
    for mount in sorted(mounts_under(workdir), key=len, reverse=True):  # inner ones first
        _proc.run(["umount", mount])
        report.unmounted.append(mount)
    if mounts_under(workdir):
        raise HarnessError(f"mounts below {workdir} remain: not removing it")
    for cgroup in cgroups:
        _remove_cgroup(cgroup)
        report.cgroups.append(str(cgroup))
    for hierarchy in CGROUP_HIERARCHIES:
        with contextlib.suppress(OSError):  # the shared "haos" level, once unused
            (hierarchy / "haos").rmdir()
    if workdir.exists():
        namespaces, killed = remove_cluster(workdir)
        report.namespaces += namespaces
        report.killed += killed
        report.directories.append(str(workdir))
    with contextlib.suppress(OSError):  # the shared base, once no cluster uses it
        owner.DEFAULT_BASE.rmdir()


def _remove_guests(state: LabState, report: DownReport) -> None:
    if not state.guests:
        return
    guests = Path(state.guests)
    qemu = {p for p in state.qemu if str(guests) in _cmdline(p)}  # not a recycled pid
    report.killed += kill(lambda: qemu | referring_to(guests))
    if guests.exists():
        shutil.rmtree(guests)
        report.directories.append(str(guests))


def _cgroup_pids(cgroups: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        with contextlib.suppress(OSError):  # a cgroup may go while it is walked
            for procs in [cgroup / "cgroup.procs", *cgroup.rglob("*/cgroup.procs")]:
                with contextlib.suppress(OSError):
                    pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def referring_to(directory: Path) -> set[int]:
    """Processes whose command line names ``directory`` or a path below it."""
    text = str(directory)
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            line = _cmdline(int(entry.name))
            if any(word == text or word.startswith(text + "/") for word in _paths(line, text)):
                found.add(int(entry.name))
    return found


def _paths(line: str, text: str) -> list[str]:
    """The words of ``line`` that contain ``text``, cut to where it starts (``-D=/x/y``,
    ``file=/x/y,...`` name /x/y too)."""
    out = []
    for word in line.split():
        at = word.find(text)
        if at >= 0:
            out.append(word[at:].split(",")[0])
    return out


def kill(pids: Callable[[], set[int]]) -> list[int]:
    """SIGKILL the processes ``pids()`` names until it names none; the pids killed."""
    deadline = time.monotonic() + KILL_TIMEOUT
    killed: list[int] = []
    while found := sorted(p for p in pids() - {os.getpid()} if running(p)):
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
        if time.monotonic() > deadline:
            raise HarnessError(f"processes {found} survived SIGKILL for {KILL_TIMEOUT:g} s")
        time.sleep(_POLL)
    return killed


def _remove_cgroup(cgroup: Path) -> None:
    # A killed process leaves its cgroup a moment after it is reaped: retry to a deadline.
    deadline = time.monotonic() + KILL_TIMEOUT
    while cgroup.exists():
        with contextlib.suppress(OSError):
            inner = sorted(
                (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            )
            for d in [*inner, cgroup]:
                d.rmdir()
        if cgroup.exists():
            if time.monotonic() > deadline:
                raise HarnessError(f"cannot remove cgroup {cgroup}")
            time.sleep(_POLL)
