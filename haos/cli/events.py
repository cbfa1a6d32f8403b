"""``haosctl events`` and ``haosctl report``: what the availability service decided, as it
happened, and what the outages added up to.

``events`` reads the node daemon's ``events`` stream (``cluster: true``): the records of
the availability service's decisions that this node received over CES (role changes,
recoveries, node events, operator commands' outcomes, outages and restorations), one line
each in words, or one JSON object per line with ``--json``. Without ``--follow`` it prints
the records the node keeps (the last 1000) and ends; with it, it goes on printing new ones
until interrupted. ``--since`` keeps only those at or after a time: a duration back from now
(``90s``, ``10m``, ``2h``) or a local date and time (``2026-12-07T14:00``).

``report`` asks the active availability service for its availability report: per service
instance the incidents, the outage time in milliseconds, the availability and its nines,
over the time the cluster has been measured (or since ``--since``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from haos import fields
from haos.cli import args as argtypes
from haos.cli.ops import checked, daemon_options, reading
from haos.cluster.asr.report import format_percent
from haos.fields import Op
from haos.services.control import BadAnswer, ControlClient, ControlError

MAX_SINCE = 100 * 365 * 86400.0  # s: a century back is far enough

RECORD = Op(
    "event record",
    (
        fields.integer("seq", 0, 2**63 - 1),
        fields.number("at"),
        fields.text("kind"),
        fields.text("subject", empty=True),
        fields.text("text", empty=True),
    ),
    extra=True,
)
REPORT = Op(
    "availability answer",
    (fields.number("start"), fields.number("now"), fields.number("overall", -1.0, 1.0)),
    extra=True,
)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "events", help="the availability service's events on this node (role changes, ...)"
    )
    _common(p)
    p.add_argument("--follow", "-f", action="store_true", help="print new events as they come")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_events)
    p = sub.add_parser("report", help="availability per service instance: outages, nines")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_report)


def _common(p: argparse.ArgumentParser) -> None:
    daemon_options(p)
    p.add_argument(
        "--since",
        type=since_time(time.time),
        default=None,
        help="only from this time on: a duration back from now (10m, 2h) or a local time"
        " (2026-12-07T14:00)",
    )


def since_time(clock: Callable[[], float]) -> Callable[[str], float]:
    """``--since``'s type: a duration back from ``clock()`` or an ISO local date and time,
    as seconds since the epoch."""
    back = argtypes.duration("--since", MAX_SINCE, minimum=0.0)

    def convert(text: str) -> float:
        try:
            return clock() - back(text)
        except argparse.ArgumentTypeError as e:
            try:
                return datetime.fromisoformat(text).timestamp()
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{e}; nor is it a date and time like 2026-12-07T14:00"
                ) from None

    return convert


def _events(args: argparse.Namespace) -> int:
    client = ControlClient(args.control, timeout=args.timeout)
    stream = client.stream("events", cluster=True, since=args.since, follow=args.follow)
    first = True
    for item in stream:
        if item.get("ok") is False or (first and item.get("ok") is not True):
            raise ControlError(str(item.get("error", "bad-answer")), str(item.get("message")))
        if first:
            first = False
            continue
        record = checked(RECORD, item)
        print(json.dumps(record, sort_keys=True) if args.json else event_line(record))
        sys.stdout.flush()  # a follower's reader sees each event as it comes
    if first:
        raise BadAnswer("the node daemon closed the events stream without an answer")
    return 0


def clock_time(at: float) -> str:
    """``at`` (seconds since the epoch) as local date and time with milliseconds."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def event_line(record: dict[str, Any]) -> str:
    """One record in words: time, kind, subject and what happened."""
    return f"{clock_time(record['at'])}  {record['kind']:<9} {record['text']}"


def _report(args: argparse.Namespace) -> int:
    client = ControlClient(args.control, timeout=args.timeout)
    answer = checked(REPORT, client.request("availability", since=args.since))
    if args.json:
        answer.pop("ok", None)
        print(json.dumps(answer, indent=2))
        return 0
    with reading("availability answer"):
        text = render_report(answer)
    print(text)
    return 0


def render_report(answer: dict[str, Any]) -> str:
    """The availability answer as a table, one row per instance, then its recent incidents."""
    rows: list[dict[str, Any]] = answer["instances"]
    width = max([len("instance"), *(len(r["instance"]) for r in rows)])
    span = max(0.0, answer["now"] - answer["start"])
    header = f"{'instance':<{width}}  {'incidents':>9}  {'outage ms':>12}  {'avail %':>9}  nines"
    lines = [
        f"Availability from {clock_time(answer['start'])} to {clock_time(answer['now'])}"
        f" ({span:.0f} s)",
        "",
        header,
        "-" * len(header),
    ]
    for r in rows:
        count = f"{r['incidents']}{'*' if r['down'] else ' '}"
        lines.append(
            f"{r['instance']:<{width}}  {count:>9}  {r['outage_ms']:>12.1f}"
            f"  {format_percent(r['availability']):>9}  {nines_text(r['nines']):>5}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"overall (mean of {len(rows)}): {format_percent(answer['overall'])} %,"
        f" {nines_text(answer.get('overall_nines'))} nines"
        + ("; * = not served now" if any(r["down"] for r in rows) else "")
    )
    for r in rows:
        for i in r.get("recent", []):
            ended = "still out" if i["ended"] is None else f"to {clock_time(i['ended'])}"
            by = ", ".join(i["restored_by"]) or "-"
            lines.append(
                f"  {r['instance']}: from {clock_time(i['started'])} {ended},"
                f" {i['outage_ms']:.1f} ms ({i['cause'] or 'no cause given'}); served again by {by}"
            )
    return "\n".join(lines)


def nines_text(n: float | None) -> str:
    return "∞" if n is None else f"{n:.2f}"
