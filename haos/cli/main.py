"""``haosctl``: the console tool.

Entry point only: it parses arguments, calls library code, prints, and picks the exit
status (0 fine, 1 the command ran and found a problem, 2 bad usage or configuration, 141 the
reader of its output went away, as for a process killed by SIGPIPE). With ``--json`` every
error is one JSON object on stdout: ``{"error": <stable code>, "message": <text>}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from haos.cli import boot, events, oplocks, ops, provision, simulate
from haos.errors import HaosError, UsageError
from haos.services.control import ControlError

# Commands that installed packages add to haosctl: each entry point is a function that
# takes the subparsers and adds its own (the development package adds demo, harness, lab).
COMMANDS = "haos.commands"

# What a shell reports for a process that SIGPIPE ended (``haosctl ... | head -1``).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class ArgumentError(UsageError):
    """The command line is wrong; ``usage`` is the usage text of the (sub)command."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(message, self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="haosctl", description="Operate and exercise a haos cluster.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    simulate.add_parser(sub)
    boot.add_parser(sub)
    provision.add_parser(sub)
    ops.add_parsers(sub)
    events.add_parsers(sub)
    oplocks.add_parsers(sub)
    for command in entry_points(group=COMMANDS):
        try:
            add = command.load()
        except (ImportError, AttributeError) as e:  # a broken package costs its commands only
            print(f"haosctl: command {command.name} not available: {e}", file=sys.stderr)
            continue
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args, as_json="--json" in args)
    except BrokenPipeError:
        # The reader is gone: say nothing more, and keep Python from complaining when it
        # flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(argv: list[str], as_json: bool) -> int:
    try:
        args = build_parser().parse_args(argv)
        status: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except ArgumentError as e:
        if not as_json:
            sys.stderr.write(e.usage)
        return _error(e, as_json, f"haosctl: error: {e}")
    except HaosError as e:
        return _error(e, as_json, f"haosctl: {error_code(e)} error: {e}")
    return status


def error_code(e: HaosError) -> str:
    """The stable code of ``e``; for an error the daemon answered, the daemon's code."""
    return e.error if isinstance(e, ControlError) else e.code


def _error(e: HaosError, as_json: bool, text: str) -> int:
    if as_json:
        print(json.dumps({"error": error_code(e), "message": str(e)}, indent=2))
        sys.stdout.flush()
    else:
        print(text, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
