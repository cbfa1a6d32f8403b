"""``haosctl boot``: the node's A/B boot slots on the console.

* ``status``: the slots, their releases and boot-counting state, what boots next. Exit 1 if
  something needs the operator (no committed release, nothing bootable, a stray default).
* ``mark-good``: commit the running release now, overriding the commit gates.
* ``mark-bad``: reject the running release and fall back to the committed one in the other slot.
* ``switch [A|B]``: boot the other (or the named) slot once, on the next boot only.

The changing commands go through the boot policy; a refused request exits 1 with the policy's
reason. They never reboot unless ``--reboot`` is given (they say when a reboot is needed).
``--esp DIR`` and ``--efivars DIR`` point them at any directory, so they work on a copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from haos.bootctl.efivars import EFIVARFS, EfivarfsVars, EfiVars, NoEfiVars
from haos.bootctl.model import BootSnapshot, Slot, SlotInfo, SlotState
from haos.bootctl.policy import (
    Action,
    BootPolicy,
    BootProgress,
    Decision,
    Event,
    OperatorMarkBad,
    OperatorMarkGood,
    OperatorSwitch,
    Reboot,
    decide,
)
from haos.bootctl.systemd_boot import SystemdBoot, find_esp
from haos.errors import HaosError
from haos.proc import run

_REBOOT = ("systemctl", "reboot")


def add_parser(sub: Any) -> None:
    """Register ``boot`` with its subcommands on haosctl's subparsers."""
    p = sub.add_parser(
        "boot",
        help="A/B boot slots: status, mark-good, mark-bad, switch",
        description="Show and steer the node's A/B boot slots (systemd-boot boot counting).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--esp", type=Path, help="the ESP (default: /efi, /boot or /boot/efi with loader/entries)"
    )
    common.add_argument(
        "--efivars", type=Path, help=f"EFI variables directory (default {EFIVARFS} if present)"
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    acting = argparse.ArgumentParser(add_help=False, parents=[common])
    acting.add_argument("--reboot", action="store_true", help="reboot now if the change needs it")
    bsub = p.add_subparsers(dest="boot_command", required=True, parser_class=type(p))
    s = bsub.add_parser("status", parents=[common], help="show the slots and what boots next")
    s.set_defaults(run=_status)
    s = bsub.add_parser("mark-good", parents=[acting], help="commit the running release now")
    s.set_defaults(run=_run_event, event=lambda a: OperatorMarkGood())
    s = bsub.add_parser("mark-bad", parents=[acting], help="reject the running release")
    s.set_defaults(run=_run_event, event=lambda a: OperatorMarkBad())
    s = bsub.add_parser("switch", parents=[acting], help="boot the other slot once")
    s.add_argument("slot", nargs="?", type=_slot, help="A or B (default: the one not running)")
    s.set_defaults(run=_run_event, event=lambda a: OperatorSwitch(a.slot))


def _slot(text: str) -> Slot:
    try:
        return Slot(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a slot is A or B, not {text!r}") from None


def _loader(args: argparse.Namespace) -> SystemdBoot:
    esp = args.esp if args.esp is not None else find_esp()
    efivars: EfiVars
    if args.efivars is not None:
        efivars = EfivarfsVars(args.efivars)
    elif EFIVARFS.is_dir():
        efivars = EfivarfsVars()
    else:
        efivars = NoEfiVars()
    return SystemdBoot(esp, efivars)


def _guarded(args: argparse.Namespace, body: Any) -> int:
    """Run ``body``; with --json a HaosError becomes a JSON error document (exit 2)."""
    try:
        status: int = body()
    except HaosError as e:
        if not args.json:
            raise
        print(json.dumps({"error": e.code, "message": str(e)}, indent=2))
        return 2
    return status


# --- status ------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    return _guarded(args, lambda: _show(args, _loader(args)))


def _show(args: argparse.Namespace, loader: SystemdBoot) -> int:
    snap = loader.read()
    if args.json:
        print(json.dumps({"esp": str(loader.esp), **snapshot_json(snap)}, indent=2))
    else:
        print(f"ESP {loader.esp}")
        print(render_status(snap))
    return 1 if snap.problems else 0


def snapshot_json(snap: BootSnapshot) -> dict[str, Any]:
    return {
        "booted": snap.booted,
        "committed": snap.committed,
        "default": snap.default,
        "fallback": snap.fallback,
        "trial": snap.trial,
        "oneshot": snap.oneshot,
        "slots": [_slot_json(i) for i in snap.slots],
        "problems": list(snap.problems),
    }


def _slot_json(info: SlotInfo) -> dict[str, Any]:
    return {
        "slot": info.slot,
        "state": info.state,
        "release": info.release,
        "entry": info.entry,
        "tries_left": info.tries_left,
        "tries_done": info.tries_done,
    }


def render_status(snap: BootSnapshot) -> str:
    def name(slot: Slot | None) -> str:
        return "-" if slot is None else f"{slot} ({snap.slot(slot).release or 'empty'})"

    lines = [
        f"booted:    {name(snap.booted)}",
        f"committed: {name(snap.committed)}",
        f"next boot: {name(snap.oneshot or snap.default)}"
        + (" (one-shot)" if snap.oneshot else " (trial)" if snap.trial is snap.default else ""),
    ]
    for info in snap.slots:
        counted = ""
        if info.state in (SlotState.TRYING, SlotState.BAD):
            counted = f"  {info.tries_left} tries left, {info.tries_done} done"
        mark = "*" if info.slot is snap.booted else " "
        lines.append(
            f"{mark} slot {info.slot}: {info.state:<9} {info.release or '-':<16} "
            f"{info.entry or '-'}{counted}"
        )
    lines.extend(f"problem: {p}" for p in snap.problems)
    return "\n".join(lines)


# --- mark-good, mark-bad, switch ---------------------------------------------------------


def _run_event(args: argparse.Namespace) -> int:
    return _guarded(args, lambda: _act(args, _loader(args), args.event(args)))


def _act(args: argparse.Namespace, loader: SystemdBoot, event: Event) -> int:
    snap = loader.read()
    # The console sees no gate reports: mark-good names every configured gate as overridden.
    progress = BootProgress(booted=snap.booted)
    decision = decide(BootPolicy(), snap, progress, event, time.time())
    reboots = [a for a in decision.actions if isinstance(a, Reboot)]
    if not decision.refused:
        for action in decision.actions:
            if not isinstance(action, Reboot):
                loader.apply(action)
    _print_decision(args, decision, bool(reboots))
    if decision.refused:
        return 1
    if reboots and args.reboot:
        reboot()
    return 0


def _print_decision(args: argparse.Namespace, d: Decision, reboot_needed: bool) -> None:
    if args.json:
        doc = {
            "refused": d.refused,
            "reason": d.reason,
            "actions": [action_json(a) for a in d.actions],
            "reboot_needed": reboot_needed,
            "rebooting": reboot_needed and args.reboot and not d.refused,
        }
        print(json.dumps(doc, indent=2))
        return
    print(d.reason)
    for a in d.actions:
        if not isinstance(a, Reboot):
            print(f"  done: {action_text(a)}")
    if reboot_needed and not d.refused:
        print("rebooting" if args.reboot else "reboot to take effect (or pass --reboot)")


def action_json(action: Action) -> dict[str, Any]:
    return {"action": type(action).__name__, **dataclasses.asdict(action)}


def action_text(action: Action) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(action).items())
    return f"{type(action).__name__}({fields})"


def reboot() -> None:
    """Ask systemd to reboot (through the one runner: argv only, stdin closed, clean
    environment, a deadline)."""
    run(list(_REBOOT), timeout=30)


def main(argv: list[str] | None = None) -> int:
    """``python -m haos.cli.boot ARGS`` = ``haosctl boot ARGS`` (until main.py registers it)."""
    parser = argparse.ArgumentParser(prog="haosctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["boot", *(sys.argv[1:] if argv is None else argv)])
    try:
        status: int = args.run(args)
    except HaosError as e:
        print(f"haosctl: {e.code} error: {e}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
