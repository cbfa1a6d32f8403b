"""``haosctl``: the console tool.

Entry point only: it parses arguments, calls library code, prints, and picks the exit
status (0 fine, 1 the command ran and found a problem, 2 bad usage or configuration).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from haos.cli import boot, demo, harness, ops, simulate
from haos.errors import HaosError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"haosctl: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="haosctl", description="Operate and exercise a haos cluster.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    simulate.add_parser(sub)
    harness.add_parser(sub)
    boot.add_parser(sub)
    ops.add_parsers(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except HaosError as e:
        print(f"haosctl: {e.code} error: {e}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
