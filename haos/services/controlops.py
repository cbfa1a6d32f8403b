"""The operations of the node daemon's control socket, each declared once as a typed request.

A request is a frozen dataclass registered under its op name with :func:`declare`; each of
its fields carries the check of :mod:`haos.fields` that admits a value (``arg(text)``,
``arg(integer, 0, 9, default=None)``). :func:`parse` turns a decoded request line into an
instance or raises :class:`~haos.fields.BadField` (a ``usage`` error) naming the op and the
field that is unknown, missing, of the wrong type or out of range -- before any handler runs.

The daemon's table (:data:`haos.services.clusterctl.OPERATIONS`) binds each request type to
its handler in an :class:`Answer` row (one answer) or a :class:`Stream` row (the handler
writes lines until it ends or the client hangs up); :class:`Operations` checks that every
declared request has exactly one row. :data:`FIELDS` is the same declarations as a
:class:`haos.fields.Table` (what :data:`haos.services.control.OPS` is). This module imports
only :mod:`haos.fields` and :mod:`haos.errors`: clients may import it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from haos import fields
from haos.fields import REQUIRED, BadField, Table, flag, integer, mapping, number, text

T = TypeVar("T")
C = TypeVar("C")  # what a handler is called on (the daemon's control server)
R = TypeVar("R")  # a request type

_REVISION = 2**63 - 1
_SPEC = "haos.control.field"

# op name -> its request type, and the request type -> its op (name and field checks)
_REQUESTS: dict[str, type[Any]] = {}
_OPS: dict[type[Any], fields.Op] = {}


def arg(kind: Callable[..., fields.Field], *args: Any, **kw: Any) -> Any:
    """A request field admitted by ``kind(name, *args, **kw)`` (:mod:`haos.fields`); its
    ``default`` (if given) is the dataclass field's default too."""
    default = kw.get("default", REQUIRED)
    meta = {_SPEC: lambda name: kind(name, *args, **kw)}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, dict):  # a mutable default: each request gets its own
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def declare(name: str, doc: str = "") -> Callable[[type[T]], type[T]]:
    """Registers a frozen dataclass as the request of op ``name``."""

    def register(cls: type[T]) -> type[T]:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"the request of {name} must be a frozen dataclass")
        if name in _REQUESTS:
            raise TypeError(f"op {name} is declared twice")
        checks = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            make = f.metadata.get(_SPEC)
            if make is None:
                raise TypeError(f"{name}: field {f.name} must be declared with arg()")
            checks.append(make(f.name))
        _REQUESTS[name] = cls
        _OPS[cls] = fields.Op(name, tuple(checks), doc=doc)
        return cls

    return register


def op_of(request: type[Any]) -> fields.Op:
    """The op (name, field checks, doc) ``request`` was declared as."""
    try:
        return _OPS[request]
    except KeyError:
        raise TypeError(f"{request.__name__} is not a declared control request") from None


def requests() -> Mapping[str, type[Any]]:
    """Every declared request type by op name."""
    return dict(_REQUESTS)


def parse(message: Mapping[str, Any]) -> Any:
    """The request ``message`` (a decoded line with its ``op``) is, as its typed dataclass;
    BadField naming the op, or the op and the field, if it is not one."""
    name = message.get("op")
    if not isinstance(name, str):
        raise BadField(f"op must be a string naming the operation, not {_short(name)}")
    if name not in _REQUESTS:
        raise BadField(f"unknown op {_short(name)}; one of: {', '.join(sorted(_REQUESTS))}")
    op = _OPS[_REQUESTS[name]]
    declared = {f.name for f in op.fields}
    unknown = sorted(k for k in message if k != "op" and k not in declared)
    if unknown:
        takes = ", ".join(sorted(declared)) or "no fields"
        shown = ", ".join(_short(k) for k in unknown[:5])
        raise BadField(f"{name}: unknown field {shown}; it takes {takes}")
    return _REQUESTS[name](**op.check(message))


def _short(value: object, limit: int = 40) -> str:
    if isinstance(value, dict | list):  # its repr may be megabytes long
        return f"{'an object' if isinstance(value, dict) else 'an array'} of {len(value)} items"
    out = repr(value[: limit + 1] if isinstance(value, str) else value)
    return out if len(out) <= limit else out[: limit - 3] + "..."


# --- the daemon's table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer(Generic[C, R]):
    """An op answered with one object: the handler's fields after ``ok: true``."""

    request: type[R]
    handler: Callable[[C, R], Awaitable[dict[str, Any]]]

    @property
    def name(self) -> str:
        return op_of(self.request).name


@dataclass(frozen=True)
class Stream(Generic[C, R]):
    """An op whose handler writes its own opening answer and then one object per line,
    until it ends or the client hangs up (the reader tells it so)."""

    request: type[R]
    handler: Callable[[C, R, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

    @property
    def name(self) -> str:
        return op_of(self.request).name


Row = Answer[C, Any] | Stream[C, Any]


@dataclass(frozen=True)
class Operations(Generic[C]):
    """One socket's operations: each declared request bound to its handler, once."""

    rows: Mapping[str, Row[C]]

    @classmethod
    def of(cls, rows: Iterable[Row[C]]) -> Operations[C]:
        """TypeError unless every declared request has exactly one row."""
        table: dict[str, Row[C]] = {}
        for row in rows:
            if row.name in table:
                raise TypeError(f"op {row.name} has two handlers")
            table[row.name] = row
        missing = sorted(set(_REQUESTS) - set(table))
        if missing:
            raise TypeError(f"ops without a handler: {', '.join(missing)}")
        return cls(table)

    def parse(self, message: Mapping[str, Any]) -> tuple[Row[C], Any]:
        """The row of ``message``'s op and its typed request; BadField as :func:`parse`."""
        request = parse(message)
        return self.rows[op_of(type(request)).name], request


# --- the requests -----------------------------------------------------------------------------


@declare("status", "this node's view: members, quorum, master, repository")
@dataclass(frozen=True, kw_only=True)
class Status:
    pass


@declare("crim", "the availability service's state (from the master)")
@dataclass(frozen=True, kw_only=True)
class Crim:
    pass


@declare("notices", "the membership notices seen so far")
@dataclass(frozen=True, kw_only=True)
class Notices:
    pass


@declare("desired", "the roles this node's components should have")
@dataclass(frozen=True, kw_only=True)
class Desired:
    pass


@declare("boot_gates", "has this node rejoined the cluster and proven its release")
@dataclass(frozen=True, kw_only=True)
class BootGates:
    pass


@declare("name_bind", "bind an application's name (CNS), taking it over")
@dataclass(frozen=True, kw_only=True)
class NameBind:
    component: str = arg(text)
    name: str = arg(text)
    handle: str = arg(text, empty=True)


@declare("name_lookup", "the handle and node a name is bound to")
@dataclass(frozen=True, kw_only=True)
class NameLookup:
    name: str = arg(text)


@declare(
    "events",
    "stream: membership notices as they come; with cluster, the availability service's"
    " events instead (those kept, from 'since' on, then, with follow, each as it comes)",
)
@dataclass(frozen=True, kw_only=True)
class Events:
    cluster: bool = arg(flag, default=False)
    since: float | None = arg(number, default=None)
    follow: bool = arg(flag, default=True)


@declare("availability", "the availability report per service instance (from the master)")
@dataclass(frozen=True, kw_only=True)
class Availability:
    since: float | None = arg(number, default=None)


@declare("orders", "stream: the agent's feed of role orders")
@dataclass(frozen=True, kw_only=True)
class Orders:
    pass


@declare("put", "write a repository key (expect: the revision it must still have)")
@dataclass(frozen=True, kw_only=True)
class Put:
    key: str = arg(text)
    value: str = arg(text, empty=True)
    expect: int | None = arg(integer, 0, _REVISION, default=None)


@declare("get", "a repository key's value and revision")
@dataclass(frozen=True, kw_only=True)
class Get:
    key: str = arg(text)


@declare("range", "the repository's keys and values under a prefix")
@dataclass(frozen=True, kw_only=True)
class Range:
    prefix: str = arg(text, default="/")


@declare("watch", "stream: committed repository changes under a prefix, in revision order")
@dataclass(frozen=True, kw_only=True)
class Watch:
    prefix: str = arg(text, default="/")
    after: int | None = arg(integer, 0, _REVISION, default=None)


@declare("ckpt_open", "open a checkpoint on this node, as its active writer or a standby")
@dataclass(frozen=True, kw_only=True)
class CkptOpen:
    name: str = arg(text)
    role: str = arg(text, choices=("active", "standby"), default="standby")
    persistent: bool = arg(flag, default=False)


@declare("ckpt_write", "write a section of an open checkpoint")
@dataclass(frozen=True, kw_only=True)
class CkptWrite:
    name: str = arg(text)
    section: str = arg(text)
    data: str = arg(text, empty=True)
    sync: bool = arg(flag, default=True)


@declare("ckpt_read", "read a section of an open checkpoint")
@dataclass(frozen=True, kw_only=True)
class CkptRead:
    name: str = arg(text)
    section: str = arg(text)


@declare("operator", "an operator's intent (lock, unlock, switchover, leave, ...)")
@dataclass(frozen=True, kw_only=True)
class Operator:
    action: str = arg(text)  # the intents module names the known actions
    target: str = arg(text)
    timeout: float = arg(number, 0.0, 3600.0, default=10.0)


@declare("report", "an error report of a component, to the active availability service")
@dataclass(frozen=True, kw_only=True)
class Report:
    report: Mapping[str, Any] = arg(mapping, default={})


@declare("event", "a component's event (available, offline-requested), to the master")
@dataclass(frozen=True, kw_only=True)
class Event:
    kind: str = arg(text)
    component: str = arg(text)


@declare("applied", "a node carried out a graceful role order (the order, its epoch)")
@dataclass(frozen=True, kw_only=True)
class Applied:
    order: Mapping[str, Any] = arg(mapping)
    epoch: int | None = arg(integer, 0, _REVISION, default=None)


@declare("running", "what a component of this node runs as, from its agent")
@dataclass(frozen=True, kw_only=True)
class Running:
    component: str = arg(text)
    state: str = arg(text)
    at: float = arg(number)
    detail: str = arg(text, empty=True, default="")


@declare("history", "this node's record of the availability service's decisions")
@dataclass(frozen=True, kw_only=True)
class History:
    limit: int = arg(integer, 1, 1_000_000, default=50)


@declare("locks", "the operation locks held (COpCo): sub-tree, holder, kind, reason, expiry")
@dataclass(frozen=True, kw_only=True)
class Locks:
    pass


@declare("lock_take", "an operator's maintenance lock on a sub-tree, held until released")
@dataclass(frozen=True, kw_only=True)
class LockTake:
    subtree: str = arg(text)
    reason: str = arg(text)
    duration: float = arg(number, 0.0, 366 * 86400.0, default=3600.0)


@declare("lock_release", "end an operator's maintenance lock on a sub-tree")
@dataclass(frozen=True, kw_only=True)
class LockRelease:
    subtree: str = arg(text)


@declare("lock_break", "delete the lock on a sub-tree by force, whoever holds it")
@dataclass(frozen=True, kw_only=True)
class LockBreak:
    subtree: str = arg(text)


FIELDS = Table.of(_OPS.values())
"""Every op's name and field checks, as a :class:`haos.fields.Table`."""
