"""The boot policy on the appliance: lay out the ESP, check and commit a boot, install a release.

``python3 -m haos.bootctl.appliance COMMAND``, run by the image build and by the image's units:

* ``esp-init --esp DIR RELEASE``: at build time, ``loader.conf`` and the committed entry of
  slot A for ``RELEASE`` (the kernels are already under ``/haos/{a,b}/``).
* ``check``: ``haos-boot-check.service``, ordered before ``boot-complete.target`` with
  ``FailureAction=reboot``. Exit 1 only while the running release is on trial and a haos unit
  is not active: the boot fails and systemd-boot counts the try. A committed release is never
  rebooted for it (that would loop); the check reports instead. On a trial it waits at most
  the proving time (cluster.toml ``[boot] proving_timeout``): a release whose cluster daemon
  never gets ready (it cannot rejoin) never reaches multi-user.target, so the commit, which
  counts the proving time, would never run.
* ``commit``: ``haos-boot-commit.service``, after ``boot-complete.target``: the policy's
  ``Booted`` and ``UnitsHealthy`` events, carried out (bless, move the default, or record the
  fallback after a failed trial).
* ``install RELEASE [--image FILE] [--overlay DIR] [--tries N] [--reboot]``: write the
  release's root file system image (or the running tree) plus ``DIR`` into the slot the
  policy allows, copy its kernel to the ESP, start its trial.

Every step prints one ``haos-report {json}`` line to the report port (``/dev/ttyS1`` in
QEMU): the host's tests read verdicts there instead of guessing from timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haos.bootctl.efivars import EFIVARFS, EfivarfsVars
from haos.bootctl.entries import Layout, SlotLayout, render_entry
from haos.bootctl.loader import execute
from haos.bootctl.model import BootSnapshot, Slot, SlotState
from haos.bootctl.names import committed_name
from haos.bootctl.policy import (
    Booted,
    BootPolicy,
    BootProgress,
    Decision,
    InstallRequested,
    UnitsHealthy,
    WriteEntry,
    decide,
)
from haos.bootctl.proving import DaemonGates, GateSource, prove
from haos.bootctl.systemd_boot import SystemdBoot, atomic_write, find_esp, set_default_line
from haos.config.loader import load_config
from haos.config.model import BootSpec
from haos.errors import HaosError, UsageError
from haos.proc import run
from haos.services.control import ControlClient

# Kernel command line of every haos entry: the serial console, no first-boot questions.
OPTIONS = "rw console=ttyS0,115200 systemd.firstboot=off panic=10"
LAYOUT = Layout(
    a=SlotLayout("haos-root-a", linux="/haos/a/vmlinuz", initrd=("/haos/a/initrd",)),
    b=SlotLayout("haos-root-b", linux="/haos/b/vmlinuz", initrd=("/haos/b/initrd",)),
    options=OPTIONS,
)
LOADER_CONF = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\n"


def esp_init(esp: Path, release: str, layout: Layout = LAYOUT) -> None:
    """Write ``loader.conf`` and slot A's committed entry for ``release`` into ``esp``."""
    entries = esp / "loader" / "entries"
    entries.mkdir(parents=True, exist_ok=True)
    name = committed_name(layout.prefix, Slot.A)
    atomic_write(entries / name, render_entry(Slot.A, release, layout).encode("utf-8"))
    atomic_write(
        esp / "loader" / "loader.conf", set_default_line(LOADER_CONF, name).encode("utf-8")
    )


# --- the outside world: commands, files, the report port ---------------------------------


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where the appliance keeps what these commands read; tests may point elsewhere."""

    esp: Path | None = None
    efivars: Path = EFIVARFS
    health_units: Path = Path("/usr/lib/haos/health-units")
    release: Path = Path("/etc/haos/release")
    report_port: Path = Path("/dev/ttyS1")
    boot_id: Path = Path("/proc/sys/kernel/random/boot_id")
    cluster_toml: Path = Path("/etc/haos/cluster.toml")
    control: Path = Path("/run/haos/control.sock")  # the cluster daemon's (boot gates)


def report(event: str, fields: dict[str, Any], port: Path) -> None:
    """One ``haos-report`` line on the report port and on stdout (the journal)."""
    line = "haos-report " + json.dumps({"event": event, "time": time.time(), **fields})
    print(line, flush=True)
    try:
        with port.open("w", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:
        print(f"report port {port} not writable: {e}", file=sys.stderr)


def _text(path: Path) -> str | None:
    try:
        return path.read_text("utf-8").strip()
    except OSError:
        return None


def unit_states(units: list[str]) -> dict[str, str]:
    """``ActiveState/SubState`` of each unit, as systemd reports them now."""
    if not units:
        return {}
    out = run(["systemctl", "show", "--property=Id,ActiveState,SubState", "--", *units])
    states: dict[str, str] = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            states[props["Id"]] = f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}"
    # systemctl show answers in the order asked; an unknown unit still gets its block.
    return {u: states.get(u, "unknown/unknown") for u in units}


def health_units(paths: Paths) -> list[str]:
    text = _text(paths.health_units) or ""
    return [line.strip() for line in text.splitlines() if line.strip()]


def snapshot_json(snap: BootSnapshot) -> dict[str, Any]:
    return {
        "booted": snap.booted,
        "committed": snap.committed,
        "default": snap.default,
        "trial": snap.trial,
        "slots": {str(i.slot): dataclasses.asdict(i) for i in snap.slots},
    }


def _loader(paths: Paths) -> SystemdBoot:
    return SystemdBoot(paths.esp or find_esp(), EfivarfsVars(paths.efivars), LAYOUT)


def _common(paths: Paths, snap: BootSnapshot) -> dict[str, Any]:
    return {
        "boot_id": _text(paths.boot_id),
        "running_release": _text(paths.release),
        "slot": snap.booted,
    }


def reboot(reason: str) -> None:
    print(f"rebooting: {reason}", flush=True)
    run(["systemctl", "reboot"], timeout=60)


# --- check, commit -----------------------------------------------------------------------


def wait_healthy(units: list[str], timeout: float) -> dict[str, str]:
    """The units' states once all are active, or as they are when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        states = unit_states(units)
        if _healthy(states) or time.monotonic() >= deadline:
            return states
        time.sleep(1.0)  # systemd's job queue has no "all of these active" wait; poll


def _healthy(states: dict[str, str]) -> bool:
    return all(s.startswith("active/") for s in states.values())


def check_timeout(policy: BootPolicy, snap: BootSnapshot, timeout: float) -> float:
    """How long the check waits for the units: ``timeout``, and on a trial at most the
    proving time (a trial is not proven later than that, whatever it waits for)."""
    trying = snap.booted is not None and snap.slot(snap.booted).state is SlotState.TRYING
    return min(timeout, policy.proving_timeout) if trying else timeout


def check(paths: Paths, timeout: float, policy: BootPolicy | None = None) -> int:
    """Exit status for haos-boot-check: 1 only for an unhealthy release on trial.

    A boot state that cannot be read is reported, not failed: failing would reboot a
    committed release too, over and over. ``policy`` bounds the wait (:func:`check_timeout`).
    """
    try:
        snap = _loader(paths).read()
    except HaosError as e:
        report("check", {"boot_id": _text(paths.boot_id), "error": str(e)}, paths.report_port)
        return 0
    waited = check_timeout(policy or BootPolicy(), snap, timeout)
    units = wait_healthy(health_units(paths), waited)
    healthy = _healthy(units)
    trying = snap.booted is not None and snap.slot(snap.booted).state is SlotState.TRYING
    verdict = "healthy" if healthy else ("fail-boot" if trying else "unhealthy-committed")
    fields = {"units": units, "verdict": verdict, "timeout": waited, "boot": snapshot_json(snap)}
    report("check", {**_common(paths, snap), **fields}, paths.report_port)
    return 0 if healthy or not trying else 1


def commit(
    paths: Paths,
    now: float,
    reboot_fn: Callable[[str], None] = reboot,
    policy: BootPolicy | None = None,
    gates: GateSource | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Tell the policy how this boot went and carry out what it decides: ``Booted``,
    ``UnitsHealthy``, then (for a release on trial whose policy names them) the cluster's
    gates from ``gates`` until the release is committed or its proving time is up
    (:mod:`haos.bootctl.proving`). ``policy`` defaults to the local gate only."""
    policy = policy or BootPolicy()
    loader = _loader(paths)
    before = loader.read()
    if before.booted is None:
        report(
            "commit", {**_common(paths, before), "error": "booted slot unknown"}, paths.report_port
        )
        return 1
    decisions: list[Decision] = []
    d = decide(policy, before, BootProgress(), Booted(before.booted), now)
    decisions.append(d)
    execute(loader, d, reboot_fn)
    units = unit_states(health_units(paths))
    if _healthy(units):
        d = decide(policy, loader.read(), d.progress, UnitsHealthy(), now)
        decisions.append(d)
        execute(loader, d, reboot_fn)
        if gates is not None and not d.refused:
            decisions += prove(loader, policy, d.progress, gates, clock, sleep, reboot_fn)
    after = loader.read()
    report(
        "commit",
        {
            **_common(paths, before),
            "units": units,
            "gates": sorted(policy.gates),
            "reasons": [x.reason for x in decisions],
            "refused": any(x.refused for x in decisions),
            "before": snapshot_json(before),
            "after": snapshot_json(after),
        },
        paths.report_port,
    )
    return 1 if any(x.refused for x in decisions) else 0


def boot_policy(paths: Paths) -> BootPolicy:
    """The ``[boot]`` policy of the node's cluster.toml: every gate unless it says otherwise.
    A configuration that cannot be read keeps the defaults (the node will not rejoin with
    it anyway, and so not commit)."""
    try:
        return load_config(paths.cluster_toml).boot.policy()
    except (HaosError, OSError) as e:
        print(f"boot policy: {paths.cluster_toml}: {e}; using the defaults", file=sys.stderr)
        return BootSpec().policy()


# --- install -----------------------------------------------------------------------------


def install(
    paths: Paths,
    release: str,
    source: Path | None,
    overlay: Path | None,
    tries: int,
    now: float,
    reboot_fn: Callable[[str], None] | None = None,
) -> int:
    """Write ``source`` or the running tree, plus ``overlay``, as ``release`` into the free
    slot; start its trial."""
    loader = _loader(paths)
    snap = loader.read()
    decision = decide(BootPolicy(tries=tries), snap, BootProgress(), InstallRequested(release), now)
    if decision.refused:
        report(
            "install",
            {**_common(paths, snap), "refused": True, "reason": decision.reason},
            paths.report_port,
        )
        return 1
    target = next(a.slot for a in decision.actions if isinstance(a, WriteEntry))
    _write_slot(loader, target, snap.booted, release, source, overlay)
    execute(loader, decision, reboot)  # InstallRequested without reboot: no Reboot action
    report(
        "install",
        {
            **_common(paths, snap),
            "refused": False,
            "reason": decision.reason,
            "target": target,
            "after": snapshot_json(loader.read()),
        },
        paths.report_port,
    )
    if reboot_fn is None:
        return 0
    reboot_fn(decision.reason)
    return 0


def _write_slot(
    loader: SystemdBoot,
    slot: Slot,
    running: Slot | None,
    release: str,
    source: Path | None,
    overlay: Path | None,
) -> None:
    """The slot's root from ``source`` (a root file system image) or the running tree, with
    ``overlay`` on top; the kernel onto the ESP.

    The release runs the running system's kernel and initrd (they live on the ESP, not in
    the root tree); a tree that brings ``boot/vmlinuz-*`` brings its own kernel.
    """
    layout = loader.layout.slot(slot)
    device = f"/dev/disk/by-partlabel/{layout.partlabel}"
    if source is not None:
        run(["dd", f"if={source}", f"of={device}", "bs=4M", "conv=fsync", "status=none"], 1800)
    with tempfile.TemporaryDirectory(prefix="haos-slot-") as mnt:
        run(["mount", device, mnt])
        try:
            if source is None:
                # -x: the root file system only (not the ESP, the data partition, /proc...).
                run(["rsync", "-aHAX", "-x", "--delete", "/", mnt + "/"], timeout=3600)
            if overlay is not None:
                run(["cp", "-a", "--", f"{overlay}/.", mnt + "/"])
            (Path(mnt) / "etc/haos").mkdir(parents=True, exist_ok=True)
            (Path(mnt) / "etc/haos/release").write_text(release + "\n", "utf-8")
            kernel, initrds = _boot_files(loader, running, Path(mnt))
            assert layout.linux is not None
            _copy_to_esp(kernel, loader.esp / layout.linux.lstrip("/"))
            for src, dest in zip(initrds, layout.initrd, strict=True):
                _copy_to_esp(src, loader.esp / dest.lstrip("/"))
        finally:
            run(["umount", mnt])


def _boot_files(loader: SystemdBoot, running: Slot | None, tree: Path) -> tuple[Path, list[Path]]:
    """The new slot's kernel and initrds: its tree's own, else the running slot's on the ESP."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if kernels:
        initrd = tree / "boot" / kernels[-1].name.replace("vmlinuz-", "initrd.img-")
        return kernels[-1], [initrd] * len(loader.layout.a.initrd)
    if running is None:
        raise UsageError("the release has no kernel and the running slot is unknown")
    current = loader.layout.slot(running)
    if current.linux is None:
        raise UsageError(f"slot {running} boots a UKI; the release must bring its own kernel")
    esp = loader.esp
    return esp / current.linux.lstrip("/"), [esp / p.lstrip("/") for p in current.initrd]


def _copy_to_esp(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(dest)


# --- command line ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m haos.bootctl.appliance")
    parser.add_argument("--esp", type=Path, help="the ESP (default: found like haosctl boot)")
    parser.add_argument("--report-port", type=Path, default=Paths.report_port)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("esp-init", help="build time: loader.conf and slot A's committed entry")
    p.add_argument("release")
    p = sub.add_parser("check", help="is this boot healthy? (exit 1 fails a trial boot)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the units")
    sub.add_parser("commit", help="report the boot to the policy and carry out its decision")
    p = sub.add_parser("install", help="install RELEASE into the free slot and start its trial")
    p.add_argument("release")
    p.add_argument(
        "--image", type=Path, help="the release's root file system image (default: copy the tree)"
    )
    p.add_argument("--overlay", type=Path, help="a directory copied over the new slot's tree")
    p.add_argument("--tries", type=_tries, default=BootPolicy().tries)
    p.add_argument("--reboot", action="store_true", help="reboot into the trial at once")
    return parser


def _tries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tries must be a number 1..9, not {text!r}") from None
    if not 1 <= value <= 9:
        raise argparse.ArgumentTypeError(f"tries must be 1..9, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = Paths(esp=args.esp, report_port=args.report_port)
    try:
        if args.command == "esp-init":
            if args.esp is None:
                raise UsageError("esp-init needs --esp DIR")
            esp_init(args.esp, args.release)
            return 0
        if args.command == "check":
            return check(paths, args.timeout, boot_policy(paths))
        if args.command == "commit":
            gates = DaemonGates(ControlClient(paths.control).request)
            return commit(paths, time.time(), policy=boot_policy(paths), gates=gates)
        if args.overlay is not None and not args.overlay.is_dir():
            raise UsageError(f"--overlay {args.overlay}: not a directory")
        if args.image is not None and not args.image.exists():
            raise UsageError(f"--image {args.image}: no such file or device")
        return install(
            paths,
            args.release,
            args.image,
            args.overlay,
            args.tries,
            time.time(),
            reboot if args.reboot else None,
        )
    except HaosError as e:
        print(f"haos.bootctl.appliance: {e.code} error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
