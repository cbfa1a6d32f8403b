"""The machinery under the configuration loader: setting tables, value converters, problems.

A :class:`Setting` declares one key of one TOML table: its name, the converter that checks
and converts its value, whether it is required and which dataclass field it fills. The tables
at the end of this module declare one tuple of settings per TOML table, and
:func:`read_table` drives checking from it, so every key is declared exactly once; the
loader adds the rules that span entries (references, uniqueness, redundancy shapes).

Converters take a raw TOML value and return the converted value or raise :class:`Invalid`.
They never raise anything else, whatever the value: every problem ends up as a
:class:`~haos.errors.ConfigProblem` collected in :class:`Problems`.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import math
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from haos.config.model import MANAGER_KINDS, ManagerSpec
from haos.errors import ConfigError, ConfigProblem, ModelError
from haos.model.classes import Method
from haos.model.names import SEPARATOR, check_name
from haos.model.redundancy import RedundancyModel


class Invalid(Exception):
    """A value failed its converter; ``at`` extends the key path (e.g. ``[1]``)."""

    def __init__(self, reason: str, at: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.at = at


Converter = Callable[[object], Any]


@dataclass(frozen=True)
class Setting:
    """One key of a TOML table; ``attr`` is the dataclass field it fills (default: ``key``)."""

    key: str
    convert: Converter
    required: bool = False
    attr: str = ""

    @property
    def field(self) -> str:
        return self.attr or self.key


class Problems:
    """Collects every problem of one file; :meth:`raise_if_any` raises them as one error."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._items: list[ConfigProblem] = []

    def add(self, key: str, reason: str) -> None:
        self._items.append(ConfigProblem(self.file, key, reason))

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise ConfigError(self._items)


@dataclass(frozen=True)
class Entry:
    """The checked values of one table; ``complete`` when every key was present and valid."""

    path: str
    values: Mapping[str, Any]
    complete: bool


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def join(path: str, key: str) -> str:
    """The key path of ``key`` inside the table at ``path`` (odd keys are quoted as in TOML,
    long ones shortened: the path is for reading, not for looking the key up)."""
    if len(key) > _LONG_KEY:
        shown = json.dumps(key[:_LONG_KEY])[:-1] + '..."'
    else:
        shown = key if _BARE_KEY.match(key) else json.dumps(key)
    return f"{path}.{shown}" if path else shown


_LONG_KEY = 40
# No name or key haos knows is longer; comparing a longer word with each option costs time
# and memory in proportion to its length, for no useful suggestion.
_LONGEST_SUGGESTED = 256


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when one option is close to ``word``, else ``""``."""
    if len(word) > _LONGEST_SUGGESTED:
        return ""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(
    raw: Mapping[str, object], path: str, allowed: Sequence[str], problems: Problems
) -> None:
    """Report every key of ``raw`` that is not in ``allowed`` (typos get a suggestion)."""
    for key in raw:
        if key not in allowed:
            reason = f"unknown key{suggest(key, allowed)}; expected one of: {', '.join(allowed)}"
            if path and key in SECTIONS:
                reason += (
                    f"; a key written after a [table] header belongs to that table: "
                    f"write [{key}] or [[{key}]] tables instead"
                )
            problems.add(join(path, key), reason)


def read_table(raw: object, path: str, settings: Sequence[Setting], problems: Problems) -> Entry:
    """Check the table ``raw`` against ``settings``; report problems, return the good values."""
    if not isinstance(raw, dict):
        problems.add(path, f"must be a table, not {type_name(raw)}")
        return Entry(path, {}, False)
    check_keys(raw, path, [s.key for s in settings], problems)
    values: dict[str, Any] = {}
    complete = True
    for setting in settings:
        if setting.key not in raw:
            if setting.required:
                problems.add(join(path, setting.key), "missing required key")
                complete = False
            continue
        try:
            values[setting.field] = setting.convert(raw[setting.key])
        except Invalid as e:
            problems.add(join(path, setting.key) + e.at, e.reason)
            complete = False
    return Entry(path, values, complete)


def read_array(raw: object, path: str, problems: Problems) -> list[tuple[str, object]]:
    """The entries of an array of tables with their key paths; absent (None) is empty."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.add(path, f"must be an array of tables ([[{path}]]), not {type_name(raw)}")
        return []
    return [(f"{path}[{i}]", item) for i, item in enumerate(raw)]


# --- converters ---------------------------------------------------------------------------

_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is a subclass of int
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime.datetime, "a date-time"),
    (datetime.date, "a date"),
    (datetime.time, "a time"),
)


def type_name(value: object) -> str:
    for cls, name in _TYPE_NAMES:
        if isinstance(value, cls):
            return name
    return type(value).__name__


def _expect(value: object, cls: type, what: str) -> None:
    # bool is an int to Python but never to a configuration file.
    if not isinstance(value, cls) or (cls is not bool and isinstance(value, bool)):
        raise Invalid(f"must be {what}, not {type_name(value)}")


def boolean(value: object) -> bool:
    _expect(value, bool, "a boolean (true or false)")
    assert isinstance(value, bool)
    return value


def text(value: object) -> str:
    _expect(value, str, "a string")
    assert isinstance(value, str)
    return value


def nonempty_text(value: object) -> str:
    out = text(value)
    if not out:
        raise Invalid("must not be empty")
    return out


def integer(minimum: int | None = None, maximum: int | None = None) -> Converter:
    """An integer (never a boolean) within ``[minimum, maximum]``."""

    def convert(value: object) -> int:
        _expect(value, int, "an integer")
        assert isinstance(value, int)
        if minimum is not None and value < minimum:
            raise Invalid(f"must be at least {minimum}, not {short_repr(value)}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum}, not {short_repr(value)}")
        return value

    return convert


def component_name(value: object) -> str:
    """A component path name (``shelf1/slot1/node``)."""
    name = text(value)
    try:
        return check_name(name)
    except ModelError:
        pass
    if not name:
        raise Invalid("must not be empty")
    bad = next((s for s in name.split(SEPARATOR) if not _is_segment(s)), name)
    raise Invalid(
        f"bad component name {short_repr(name)}: segment {short_repr(bad)} must match "
        "[a-z0-9][a-z0-9_.-]* (at most 63 characters)"
    )


def _is_segment(segment: str) -> bool:
    try:
        check_name(segment)
    except ModelError:
        return False
    return True


def simple_name(value: object) -> str:
    """A one-segment name (node, group, class, ...): the rules of a component name segment."""
    name = text(value)
    try:
        check_name(name)
    except ModelError:
        pass
    else:
        if SEPARATOR not in name:
            return name
    raise Invalid(
        f"bad name {short_repr(name)}: must match [a-z0-9][a-z0-9_.-]* (at most 63 characters)"
    )


def choice(options: Sequence[str]) -> Converter:
    """One string of ``options`` (the reason lists them all)."""

    def convert(value: object) -> str:
        out = text(value)
        if out not in options:
            raise Invalid(
                f"{short_repr(out)} is not one of: {', '.join(options)}{suggest(out, options)}"
            )
        return out

    return convert


_DURATION = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string ``<number>ms|s|m|h`` (``"500ms"``)."""
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise Invalid(
                f"bad duration {short_repr(value)}: use seconds as a number, or a string like "
                '"500ms", "60s", "5m", "1h"'
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond the range of a float
            raise Invalid(f"must be at most 1.8e308 seconds, not {short_repr(value)}") from None
    else:
        raise Invalid(
            f'must be a duration (seconds, or a string like "60s"), not {type_name(value)}'
        )
    if not math.isfinite(seconds):
        raise Invalid(f"duration {short_repr(value)} is not finite")
    return seconds


# The shortest duration any setting accepts: anything shorter is a typo (1e-7 for 1e7?) that
# would turn a timer loop into a spin.
MIN_DURATION = 0.001


def check_duration(value: object, allow_zero: bool = False, minimum: float = MIN_DURATION) -> float:
    """Seconds from ``value``, refused unless finite and at least ``minimum`` (or zero, with
    ``allow_zero``). Every duration haos reads (config, sockets, CLI) goes through this."""
    seconds = parse_duration(value)
    if seconds == 0 and allow_zero:
        return seconds
    if seconds < 0:
        raise Invalid(f"must not be negative, not {short_repr(value)}")
    if seconds == 0:
        raise Invalid(f"must be longer than zero, not {short_repr(value)}")
    if seconds < minimum:
        raise Invalid(f"must be at least {minimum:g}s, not {short_repr(value)}")
    return seconds


def duration(allow_zero: bool = False, minimum: float = MIN_DURATION) -> Converter:
    """A duration in seconds (see :func:`check_duration`)."""

    def convert(value: object) -> float:
        return check_duration(value, allow_zero, minimum)

    return convert


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting a value in an error: the
    value may be a 50 MB string or a deeply nested array. Never raises."""
    shortener = reprlib.Repr()
    shortener.maxlevel = 3
    shortener.maxstring = shortener.maxother = limit
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        sign = "a negative" if value < 0 else "an"
        try:
            return f"{sign} integer of {len(str(abs(value)))} digits"
        except ValueError:  # Python refuses to print integers of more than 4300 digits
            return f"{sign} integer of about {math.floor(math.log10(abs(value))) + 1} digits"
    try:
        text = shortener.repr(value)
    except (ValueError, RecursionError):
        return type_name(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_short = short_repr  # the earlier, private name


def array(item: Converter, nonempty: bool = False) -> Converter:
    """An array whose items each pass ``item``; problems name the index (``[1]``)."""

    def convert(value: object) -> tuple[Any, ...]:
        _expect(value, list, "an array")
        assert isinstance(value, list)
        if nonempty and not value:
            raise Invalid("must not be empty")
        out = []
        for i, raw in enumerate(value):
            try:
                out.append(item(raw))
            except Invalid as e:
                raise Invalid(e.reason, f"[{i}]{e.at}") from None
        return tuple(out)

    return convert


def string_table(value: object) -> dict[str, str]:
    """A table of string values (component attributes)."""
    _expect(value, dict, "a table of strings")
    assert isinstance(value, dict)
    out: dict[str, str] = {}
    for key, raw in value.items():
        try:
            out[key] = text(raw)
        except Invalid as e:
            raise Invalid(e.reason, "." + join("", key)) from None
    return out


_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.service$")
_OCF_AGENT = re.compile(r"^ocf:[A-Za-z0-9][A-Za-z0-9_.+-]*:[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def service_unit(value: object) -> str:
    """A systemd service unit name (``nginx.service``, ``getty@tty1.service``)."""
    name = nonempty_text(value)
    if not name.endswith(".service"):
        raise Invalid(f"{short_repr(name)} is not a service unit: the name must end in .service")
    if not _UNIT_NAME.match(name) or len(name) > 255:
        raise Invalid(f"bad unit name {short_repr(name)}: use letters, digits and :_.\\@-")
    return name


def ocf_agent(value: object) -> str:
    """An OCF resource agent as Pacemaker names it: ``ocf:<provider>:<type>``."""
    name = nonempty_text(value)
    if not _OCF_AGENT.match(name):
        raise Invalid(
            f"bad OCF agent {short_repr(name)}: write ocf:<provider>:<type>, "
            "e.g. ocf:heartbeat:IPaddr2"
        )
    return name


def argv(value: object) -> tuple[str, ...]:
    """A command as an argv array: at least the program, every item a string without NUL."""
    out: tuple[str, ...] = array(nonempty_text, nonempty=True)(value)
    for i, arg in enumerate(out):
        if "\0" in arg:
            raise Invalid("must not contain NUL", f"[{i}]")
    return out


def identifier_table(value: object) -> dict[str, str]:
    """A table of strings whose keys are identifiers (environment variables, OCF parameters)."""
    out = string_table(value)
    for key, item in out.items():
        if not _IDENTIFIER.match(key):
            raise Invalid("not a valid name: use letters, digits and _", "." + join("", key))
        if "\0" in item:
            raise Invalid("must not contain NUL", "." + join("", key))
    return out


def ip_address(value: object) -> str:
    address = text(value)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise Invalid(f"{short_repr(address)} is not an IPv4 or IPv6 address") from None


def raw_value(value: object) -> object:
    """Any value, checked later by the caller (nested tables with their own settings)."""
    return value


# --- the settings: one tuple per TOML table (the loader's docstring shows the format) --------

SECTIONS = (
    "cluster",
    "recovery",
    "correlation",
    "classes",
    "components",
    "nodes",
    "service_groups",
    "service_instances",
    "audits",
    "fencing",  # haos.config.fencing
    "boot",  # haos.config.boot
    "management",  # haos.config.management
)
_MODELS = tuple(m.value for m in RedundancyModel)
_AUDIT_KINDS = ("command", "http", "callback")

CLUSTER = (Setting("name", simple_name, required=True),)
RECOVERY = (
    Setting("soft_reset_max", integer(0)),
    Setting("restart_max", integer(0)),
    Setting("component_probation", duration()),
    Setting("failover_max", integer(0)),
    Setting("group_probation", duration()),
    Setting("recovery_timeout", duration()),
    Setting("auto_repair", boolean),
    Setting("reboot_node", boolean),
)
CORRELATION = (
    Setting("duplicate_window", duration()),
    Setting("container_window", duration()),
    Setting("container_threshold", integer(2)),
    Setting("hold_time", duration(allow_zero=True)),
    Setting("escalate_count", integer(1)),
    Setting("escalate_window", duration()),
)
CLASS = (
    Setting("name", simple_name, required=True),
    Setting("base", simple_name, required=True),
    Setting("methods", array(choice(tuple(m.value for m in Method)))),
)
COMPONENT = (
    Setting("name", component_name, required=True),
    Setting("class", simple_name, required=True, attr="cls"),
    Setting("attributes", string_table),
)
# Keys of a [[components]] entry that are not fields of Component: the manager is kept in
# ClusterConfig.managers, checked by read_manager.
COMPONENT_EXTRA = (Setting("manager", raw_value),)
NODE = (
    Setting("name", simple_name, required=True),
    Setting("node_id", integer(1, 2**32 - 1), required=True),
    Setting("component", component_name, required=True),
    Setting("priority", integer()),
    Setting("addresses", array(ip_address)),
)
GROUP = (
    Setting("name", simple_name, required=True),
    Setting("redundancy", choice(_MODELS), required=True, attr="model"),
    Setting("members", array(component_name, nonempty=True), required=True),
    Setting("active", integer(0)),
    Setting("standby", integer(0)),
    Setting("failback", boolean),
    Setting("persistent_checkpoint", boolean),
    Setting("recovery", raw_value),  # checked against RECOVERY, merged over [recovery]
)
INSTANCE = (
    Setting("name", simple_name, required=True),
    Setting("group", simple_name, required=True),
    Setting("rank", integer(0)),
    Setting("actives", integer(1)),
)
AUDIT = (
    Setting("component", component_name, required=True),
    Setting("name", simple_name, required=True),
    # Both checked together by audit_timing, the rule the application socket applies too.
    Setting("period", raw_value, required=True),
    Setting("timeout", raw_value, required=True),
    Setting("kind", choice(_AUDIT_KINDS)),
    Setting("target", nonempty_text, required=True),
)

# The manager table of a component: common keys, then the keys of each kind.
MANAGER = (
    Setting("kind", choice(MANAGER_KINDS), required=True),
    Setting("stop_timeout", duration()),
)
MANAGER_BY_KIND: Mapping[str, tuple[Setting, ...]] = {
    "systemd": (Setting("unit", service_unit, required=True),),
    "ocf": (
        Setting("agent", ocf_agent, required=True),
        Setting("params", identifier_table),
        Setting("promotable", boolean),
    ),
    "client": (
        Setting("command", argv, required=True),
        Setting("environment", identifier_table),
        Setting("quiesce_timeout", duration()),
    ),
}


def read_manager(raw: object, path: str, problems: Problems) -> ManagerSpec | None:
    """The :class:`ManagerSpec` of a component's ``manager`` table, or None after reporting.

    The kind decides which keys are allowed: a key of another kind is reported as such
    (``unit`` in a client manager), not merely as unknown.
    """
    if not isinstance(raw, dict):
        problems.add(
            path,
            f'must be a table like {{ kind = "systemd", unit = "x.service" }}, '
            f"not {type_name(raw)}",
        )
        return None
    if "kind" not in raw:
        problems.add(
            join(path, "kind"), f"missing required key; one of: {', '.join(MANAGER_KINDS)}"
        )
        return None
    try:
        kind = MANAGER[0].convert(raw["kind"])
    except Invalid as e:
        problems.add(join(path, "kind"), e.reason)
        return None
    own = (*MANAGER, *MANAGER_BY_KIND[kind])
    mine = {s.key for s in own}
    table = dict(raw)
    for other, settings in MANAGER_BY_KIND.items():
        for setting in settings:
            if setting.key in table and setting.key not in mine:
                problems.add(
                    join(path, setting.key), f"is a key of {other} managers, not of {kind}"
                )
                del table[setting.key]
    entry = read_table(table, path, own, problems)
    if not entry.complete or len(table) != len(raw):
        return None
    return ManagerSpec(**entry.values)
