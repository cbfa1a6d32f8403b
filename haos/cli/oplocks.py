"""``haosctl lock-ops list | take | release | break``: the cluster's operation locks (COpCo).

An operation that changes a sub-tree of the containment tree (an operator command, an upgrade
campaign, a hot-swap extraction) holds a lock on it, a lease in the repository; a command
that needs a sub-tree another operation holds fails with the error ``locked`` naming the
holder and its reason, and changes nothing (:mod:`haos.services.oplocks`).

* ``list [--json]``: the locks held: sub-tree, holder (node and operation), kind, reason,
  when each expires;
* ``take SUBTREE --reason TEXT [--for DURATION]``: an operator's maintenance lock (default one
  hour), held until ``release``, until it expires, or until this node leaves the cluster;
* ``release SUBTREE``: end a maintenance lock;
* ``break SUBTREE``: delete whatever lock is on exactly that sub-tree, by force (logged).

Exit status: 0 done, 2 bad usage, no such lock, a conflicting lock (``locked``), or the
cluster could not be reached.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from haos import fields
from haos.cli import args as argtypes
from haos.cli.ops import checked, daemon_options
from haos.fields import Op
from haos.services.control import BadAnswer, ControlClient

MAX_FOR = 366 * 86400.0  # s: a maintenance lock lasts at most a year
LEASE = Op(
    "lock",
    (
        fields.text("subtree"),
        fields.text("node"),
        fields.text("operation"),
        fields.text("kind"),
        fields.text("reason", empty=True),
        fields.number("expires"),
    ),
    extra=True,
)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("lock-ops", help="operation locks on sub-trees (list, take, release, break)")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=type(p))
    q = verbs.add_parser("list", help="the locks held")
    daemon_options(q)
    q.add_argument("--json", action="store_true", help="print the locks as JSON")
    q.set_defaults(run=_list)
    q = verbs.add_parser("take", help="an operator's maintenance lock on a sub-tree")
    _subtree(q)
    q.add_argument("--reason", required=True, help="why: shown to whoever it holds off")
    q.add_argument(
        "--for",
        dest="duration",
        type=argtypes.duration("--for", MAX_FOR, minimum=1.0),
        default=3600.0,
        help="how long it lasts unless released (seconds, or 30m, 8h; default 1h)",
    )
    q.set_defaults(run=_take)
    q = verbs.add_parser("release", help="end a maintenance lock")
    _subtree(q)
    q.set_defaults(run=_release)
    q = verbs.add_parser("break", help="delete the lock on a sub-tree by force, whoever holds it")
    _subtree(q)
    q.set_defaults(run=_break)


def _subtree(p: argparse.ArgumentParser) -> None:
    daemon_options(p)
    p.add_argument("subtree", help="a component name prefix, such as shelf1/slot2")
    p.add_argument("--json", action="store_true", help="print the lock as JSON")


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(args.control, timeout=args.timeout)


def _list(args: argparse.Namespace) -> int:
    answer = _client(args).request("locks")
    found = answer.get("locks")
    if not isinstance(found, list):
        raise BadAnswer("the node daemon's locks answer has no list of locks")
    locks = [checked(LEASE, lock) for lock in found]
    if args.json:
        print(json.dumps(locks, indent=2))
    elif not locks:
        print("no operation locks are held")
    else:
        print(f"{'sub-tree':<24} {'holder':<28} {'kind':<12} {'expires':<19} reason")
        for lock in locks:
            holder = f"{lock['operation']} on {lock['node']}"
            print(
                f"{lock['subtree']:<24} {holder:<28} {lock['kind']:<12} "
                f"{_when(lock['expires']):<19} {lock['reason']}"
            )
    return 0


def _take(args: argparse.Namespace) -> int:
    answer = _client(args).request(
        "lock_take", subtree=args.subtree, reason=args.reason, duration=args.duration
    )
    return _show(args, "locked", answer)


def _release(args: argparse.Namespace) -> int:
    return _show(args, "released", _client(args).request("lock_release", subtree=args.subtree))


def _break(args: argparse.Namespace) -> int:
    return _show(args, "broken", _client(args).request("lock_break", subtree=args.subtree))


def _show(args: argparse.Namespace, done: str, answer: dict[str, Any]) -> int:
    lock = checked(LEASE, answer.get("lock"))
    if args.json:
        print(json.dumps(lock, indent=2))
    else:
        print(
            f"{done} {lock['subtree']}: {lock['kind']} {lock['operation']} on {lock['node']}"
            f" ({lock['reason']}), until {_when(lock['expires'])}"
        )
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
