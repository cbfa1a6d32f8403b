"""Remove what crashed harness runs left behind.

A run that ended normally leaves nothing (see :mod:`.cluster`). A run whose process was
SIGKILLed (or lost power in the middle of its cleanup) can leave namespaces named
``haos-<id>-…``, processes in them (corosync itself dies by its parent-death signal, but not
a command that was running on a node), libqb files in ``/dev/shm`` and its work directory
``<base>/<id>``. :func:`cleanup` removes all of it for every cluster whose owning process is
gone; with ``force`` also for live ones (their tests will then fail).

A cluster claims its work directory (recording its owner) before it creates a namespace and
removes it only after deleting them all, so namespaces without a work directory under
``base`` belong to a cluster started with another base: they are kept unless ``force``.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from haoslab.harness import netns, owner
from haoslab.harness.netns import NAME_RE
from haoslab.harness.node import remove_shm_leftovers


@dataclass
class CleanupReport:
    """What :func:`cleanup` found and did."""

    removed: list[str] = field(default_factory=list)  # cluster ids cleaned up
    skipped: list[str] = field(default_factory=list)  # cluster ids whose owner still runs
    unowned: list[str] = field(default_factory=list)  # namespaces but no work directory here
    namespaces: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)


def leftover_ids(base: Path = owner.DEFAULT_BASE) -> list[str]:
    """Ids of every cluster with a namespace or a work directory on this machine."""
    ids = {m["id"] for name in netns.present() if (m := NAME_RE.fullmatch(name))}
    if base.is_dir():
        ids |= {d.name for d in base.iterdir() if d.is_dir() and len(d.name) == 6}
    return sorted(ids)


def cleanup(
    base: Path = owner.DEFAULT_BASE, *, force: bool = False, dry_run: bool = False
) -> CleanupReport:
    """Remove the leftovers of every cluster whose owner is gone (all of them if ``force``)."""
    report = CleanupReport()
    for cluster_id in leftover_ids(base):
        workdir = base / cluster_id
        if not force and not workdir.is_dir():
            report.unowned.append(cluster_id)
            continue
        if not force and owner.alive(workdir):
            report.skipped.append(cluster_id)
            continue
        report.removed.append(cluster_id)
        if dry_run:
            report.namespaces += _namespaces(cluster_id)
            continue
        namespaces, killed = remove_cluster(workdir)
        report.namespaces += namespaces
        report.killed += killed
    for staging in base.glob(f"{owner.CLAIMING}*") if base.is_dir() else []:
        if not owner.alive(staging) and not dry_run:
            shutil.rmtree(staging, ignore_errors=True)
    if not dry_run:
        with contextlib.suppress(OSError):  # the shared base, if no cluster uses it any more
            base.rmdir()
    return report


def remove_cluster(workdir: Path) -> tuple[list[str], list[int]]:
    """Kill every process in the namespaces of the cluster of ``workdir`` (``<base>/<id>``),
    delete them and the directory: (the namespaces deleted, the pids killed)."""
    names = _namespaces(workdir.name)
    killed = netns.kill_processes([netns.ident(n) for n in names])
    remove_shm_leftovers(_recorded_pids(workdir))
    for name in sorted(names, key=lambda n: n.endswith("-sw")):  # nodes, then the switch
        netns.delete_netns(name)
    shutil.rmtree(workdir, ignore_errors=True)
    return names, killed


def _namespaces(cluster_id: str) -> list[str]:
    return [n for n in netns.present() if n.startswith(f"haos-{cluster_id}-")]


def _recorded_pids(workdir: Path) -> list[int]:
    pids = []
    for path in workdir.glob("n*/pids"):
        pids += [int(line) for line in path.read_text().split() if line.isdigit()]
    return pids
