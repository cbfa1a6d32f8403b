"""The ``[[audits]]`` of a configuration: each must be one its node agent can run.

The timing rules are :func:`audit_timing`, shared with the application
socket. The ``target`` is read the way its kind's probe (:mod:`haos.services.hm.probes`) reads
it when the audit runs, so a target the agent could never run is refused with the rest of the
file instead of failing every period on the node:

* ``command``: split by :func:`shlex.split` (shell quoting, no shell) into the argv that is
  executed; exec refuses an argument holding NUL.
* ``http``: :func:`urllib.parse.urlsplit`; the probe speaks plain HTTP to this node only (an
  audit checks a component of the node that runs it, and its verdict must not depend on the
  network), writes the request line in Latin-1 and puts the URL's path and host into it as
  they are: so ``http`` on a loopback address or ``localhost``, a port in 1..65535, no
  credentials, and only printable ASCII (spaces, controls and other characters
  percent-encoded), which also keeps a line break from being read into the request.
* ``callback``: the name of an audit the component's application registers at run time
  (``register_audit``), so a name as an audit's own.

Every kind: at most :data:`MAX_TARGET` characters (PATH_MAX); the probe parses the target again
on every run.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Mapping
from urllib.parse import SplitResult, urlsplit

from haos.config.declared import Declared
from haos.config.model import AuditSpec
from haos.config.schema import (
    AUDIT,
    Entry,
    Invalid,
    Problems,
    check_duration,
    read_array,
    read_table,
    short_repr,
    simple_name,
)
from haos.config.schema import join as _key
from haos.model.tree import Component

MAX_TARGET = 4096

# The shortest audit period: an audit round is a process spawn or a socket round trip.
MIN_AUDIT_PERIOD = 0.05


def audit_timing(period: object, timeout: object) -> tuple[float, float]:
    """An audit's period and timeout: the period at least :data:`MIN_AUDIT_PERIOD`, the timeout
    a duration shorter than the period. The config loader and the application socket both
    check audits with this; ``Invalid.at`` names the key at fault (``.period``, ``.timeout``).
    """
    try:
        p = check_duration(period, minimum=MIN_AUDIT_PERIOD)
    except Invalid as e:
        raise Invalid(f"period {e}", ".period") from None
    try:
        t = check_duration(timeout)
    except Invalid as e:
        raise Invalid(f"timeout {e}", ".timeout") from None
    if t >= p:
        raise Invalid(f"timeout must be shorter than the period ({p:g}s), not {t:g}s", ".timeout")
    return p, t


def command_argv(target: str) -> list[str]:
    """The argv a ``command`` audit executes."""
    if "\0" in target:
        raise Invalid("a command line must not contain NUL")
    try:
        argv = shlex.split(target)
    except ValueError as e:  # "No closing quotation", "No escaped character"
        raise Invalid(f"bad command line {short_repr(target)}: {e}") from None
    if not argv:
        raise Invalid("empty command line")
    return argv


def local_http_url(target: str) -> SplitResult:
    """The URL an ``http`` audit fetches: plain HTTP to this node."""
    odd = next((c for c in target if not "!" <= c <= "~"), None)
    if odd is not None:
        raise Invalid(
            f"URL {short_repr(target)} contains {odd!r}: write spaces, control and non-ASCII "
            "characters percent-encoded"
        )
    try:
        url = urlsplit(target)
        port = url.port
    except ValueError as e:
        raise Invalid(f"bad URL {short_repr(target)}: {e}") from None
    if url.scheme != "http":
        scheme = f"{url.scheme}://" if url.scheme else "no scheme"
        raise Invalid(f"HTTP audits take http:// URLs only, not {short_repr(scheme)}")
    host = url.hostname or ""
    if not _is_loopback(host):
        raise Invalid(
            f"HTTP audits must target this node (127.0.0.1, ::1 or localhost), "
            f"not {short_repr(host)}"
        )
    if port == 0:
        raise Invalid("port 0 cannot be connected to")
    if url.username is not None or url.password is not None:
        raise Invalid("HTTP audits send no credentials: remove the user from the URL")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def callback_name(target: str) -> str:
    """The name of an audit the application registers (``register_audit``), which the
    application socket holds to the rules of an audit name."""
    if not target:
        raise Invalid("no callback name")
    return simple_name(target)


_BY_KIND: Mapping[str, Callable[[str], object]] = {
    "command": command_argv,
    "http": local_http_url,
    "callback": callback_name,
}


def check_target(kind: str, target: str) -> None:
    """Raise :class:`Invalid` unless an audit of ``kind`` can run ``target``."""
    if len(target) > MAX_TARGET:
        raise Invalid(f"too long: {len(target)} characters, at most {MAX_TARGET}")
    _BY_KIND[kind](target)


def read_audits(
    raw: object, tree: Declared[Component], problems: Problems
) -> tuple[AuditSpec, ...]:
    """The valid audits of the ``audits`` array; problems with the others go to ``problems``."""
    seen: dict[object, str] = {}
    out: list[AuditSpec] = []
    for path, item in read_array(raw, "audits", problems):
        entry = read_table(item, path, AUDIT, problems)
        values = entry.values
        ok = "component" in values and tree.check_ref(
            values["component"], _key(path, "component"), problems
        )
        timing = _timing(entry, problems)
        ok = _target_runnable(entry, item, problems) and timing is not None and ok
        if "component" in values and "name" in values:
            pair = (values["component"], values["name"])
            if pair in seen:
                problems.add(
                    _key(path, "name"),
                    f"duplicate audit {pair[1]!r} of component {short_repr(pair[0])} "
                    f"(first at {seen[pair]})",
                )
                ok = False
            seen.setdefault(pair, path)
        if ok and entry.complete and timing is not None:
            period, timeout = timing
            out.append(AuditSpec(**{**values, "period": period, "timeout": timeout}))
    return tuple(out)


def _timing(entry: Entry, problems: Problems) -> tuple[float, float] | None:
    """The audit's (period, timeout) in seconds, or None after reporting why not."""
    values = entry.values
    if "period" not in values or "timeout" not in values:
        return None  # reported as missing
    try:
        return audit_timing(values["period"], values["timeout"])
    except Invalid as e:
        problems.add(entry.path + e.at, e.reason)
        return None


def _target_runnable(entry: Entry, raw: object, problems: Problems) -> bool:
    """Whether the probe of the audit's kind can run its target; report why not."""
    values, ok = entry.values, True
    kind = values.get("kind", "command")
    kind_ok = "kind" in values or (isinstance(raw, dict) and "kind" not in raw)
    if "target" in values and kind_ok:  # a bad kind is reported; its target means nothing yet
        try:
            check_target(kind, values["target"])
        except Invalid as e:
            problems.add(_key(entry.path, "target"), e.reason)
            ok = False
    return ok
