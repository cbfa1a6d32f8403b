"""The ``[fencing]`` section of cluster.toml: how a departed node is fenced, and self-fencing.

The format (every key optional; defaults in brackets)::

    [fencing]
    agent = "fence_ipmilan"          # a fence agent (program name or absolute path), or
    # command = "fence-it {node} {action}"   # an argv template ({node} {node_id} {action}),
    #                                  a string split as a shell would, or an array
    params = { username = "admin", lanplus = true, ipport = 623 }   # the agent's parameters
    password_file = "/etc/haos/fence/bmc.pass"   # read at fence time, given on stdin only
    action = "reboot"                # reboot | off
    delay = "1s"                     # two-node priority delay [1s]
    base_delay = "0s"                # before any fencing [0s]
    timeout = "60s"                  # one attempt [60s]
    self_fence = { after = "5s", device = "/dev/watchdog-haos", timeout = "10s" }  # or false
    [fencing.nodes.n2]               # one node's own device, merged over the keys above
    params = { ip = "10.0.0.12" }    # merged key by key over [fencing]'s params
    password_file = "/etc/haos/fence/n2.pass"

A node table that names ``agent`` or ``command`` drops the other kind's keys of the default
(``command`` drops ``agent``, ``params`` and ``password_file``). Without ``agent`` and
``command`` a node has no fence device: it is never confirmed fenced, so its work is not
taken over when it departs. Without ``self_fence`` the daemon self-fences through
``/dev/watchdog-haos`` when that device exists; ``self_fence = false`` turns it off.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from collections.abc import Mapping
from typing import Any

from haos.config.model import FenceDeviceSpec, FencingSpec, NodeSpec, SelfFenceSpec
from haos.config.schema import (
    Invalid,
    Problems,
    Setting,
    argv,
    check_keys,
    choice,
    duration,
    join,
    raw_value,
    read_table,
    short_repr,
    text,
    type_name,
)

_AGENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_PARAM = re.compile(r"^[a-z][a-z0-9_-]*$")
_PLACEHOLDERS = ("node", "node_id", "action")
# Secrets do not belong in cluster.toml, which every node and every operator reads.
_SECRET_PARAMS = ("password", "passwd")

DEVICE = (
    Setting("agent", raw_value),
    Setting("command", raw_value),
    Setting("params", raw_value),
    Setting("password_file", raw_value),
)
FENCING = (
    *DEVICE,
    Setting("action", choice(("reboot", "off"))),
    Setting("delay", duration(allow_zero=True)),
    Setting("base_delay", duration(allow_zero=True)),
    Setting("timeout", duration(minimum=1.0)),
    Setting("self_fence", raw_value),
    Setting("nodes", raw_value),
)
SELF_FENCE = (
    Setting("after", duration(minimum=0.5)),
    Setting("device", raw_value),
    Setting("timeout", duration(minimum=1.0)),
)


def agent_name(value: object) -> str:
    name = text(value)
    if os.path.isabs(name) and "\0" not in name:
        return name
    if not _AGENT.match(name):
        raise Invalid(
            f"bad fence agent {short_repr(name)}: a program name such as fence_ipmilan, "
            "or an absolute path"
        )
    return name


def params(value: object) -> tuple[tuple[str, str], ...]:
    """The agent's parameters: strings, integers or booleans (``1``/``0`` on its stdin)."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of the agent's parameters, not {type_name(value)}")
    out: list[tuple[str, str]] = []
    for key, raw in value.items():
        at = "." + join("", key)
        if not _PARAM.match(key) or key == "action":
            raise Invalid("not a fence agent parameter name: use a-z, 0-9, _ and -", at)
        if key in _SECRET_PARAMS:
            raise Invalid("do not write a password here: use password_file", at)
        out.append((key, _param_value(raw, at)))
    return tuple(out)


def _param_value(raw: object, at: str) -> str:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, int | str):
        value = str(raw)
        if any(c in value for c in "\n\r\0"):
            raise Invalid("must be one line", at)
        return value
    raise Invalid(f"must be a string, an integer or a boolean, not {type_name(raw)}", at)


def command_template(value: object) -> tuple[str, ...]:
    """An argv template: a string split as a shell would, or an array of strings."""
    if isinstance(value, str):
        try:
            words: object = shlex.split(value)
        except ValueError as e:
            raise Invalid(f"cannot split {short_repr(value)}: {e}") from None
    else:
        words = value
    out = argv(words)
    for i, word in enumerate(out):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(word) if f is not None]
        except ValueError as e:
            raise Invalid(f"bad template {short_repr(word)}: {e}", f"[{i}]") from None
        for name in fields:
            if name not in _PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in _PLACEHOLDERS)
                raise Invalid(f"unknown placeholder {{{name}}}; known: {known}", f"[{i}]")
    return out


def password_file(value: object) -> str:
    path = text(value)
    if not os.path.isabs(path):
        raise Invalid(f"must be an absolute path, not {short_repr(path)}")
    if not os.path.isfile(path):
        raise Invalid(f"no such file: {short_repr(path, 200)}")
    if not os.access(path, os.R_OK):
        raise Invalid(f"cannot read {short_repr(path, 200)}")
    return path


def watchdog_path(value: object) -> str:
    path = text(value)
    if not path.startswith("/dev/"):
        raise Invalid(f"must be a watchdog device under /dev/, not {short_repr(path)}")
    return path


_CONVERT = {
    "agent": agent_name,
    "command": command_template,
    "params": params,
    "password_file": password_file,
}


def read_fencing(raw: object, nodes: tuple[NodeSpec, ...], problems: Problems) -> FencingSpec:
    """The :class:`FencingSpec` of the ``[fencing]`` table (absent: the defaults)."""
    if raw is None:
        return FencingSpec()
    before = len(problems)
    entry = read_table(raw, "fencing", FENCING, problems)
    values = dict(entry.values)
    default = _device(values, "fencing", None, problems)
    per_node = _nodes(values.get("nodes"), nodes, default, problems)
    self_fence = _self_fence(values.get("self_fence"), problems)
    if len(problems) > before:
        return FencingSpec()
    chosen = {k: values[k] for k in ("action", "delay", "base_delay", "timeout") if k in values}
    return FencingSpec(device=default, nodes=per_node, self_fence=self_fence, **chosen)


def _device(
    values: Mapping[str, Any], path: str, base: FenceDeviceSpec | None, problems: Problems
) -> FenceDeviceSpec:
    """One device table (the default, or a node's merged over ``base``)."""
    got: dict[str, Any] = {}
    for key, convert in _CONVERT.items():
        if key in values:
            try:
                got[key] = convert(values[key])
            except Invalid as e:
                problems.add(join(path, key) + e.at, e.reason)
    if "agent" in values and "command" in values:
        problems.add(join(path, "command"), "give either agent or command, not both")
        return FenceDeviceSpec()
    merged = _merge(base or FenceDeviceSpec(), got)
    for key in ("params", "password_file"):
        if key not in values or merged.kind == "agent":
            continue
        if merged.kind == "command":  # the table's own command, or the one it inherits
            problems.add(join(path, key), "is a key of agent devices, not of command")
        elif "agent" not in values:  # (a bad agent is reported as such)
            problems.add(join(path, key), 'needs agent = "fence_..." (here or in [fencing])')
    return merged


def _merge(base: FenceDeviceSpec, got: Mapping[str, Any]) -> FenceDeviceSpec:
    if "command" in got:
        return FenceDeviceSpec("command", command=got["command"])
    if "agent" in got or base.kind == "agent":
        own = dict(got.get("params", ()))
        merged = [(k, v) for k, v in base.params if k not in own] + list(own.items())
        return FenceDeviceSpec(
            "agent",
            agent=got.get("agent", base.agent),
            params=tuple(merged),
            password_file=got.get("password_file", base.password_file),
        )
    return base


def _nodes(
    raw: object, nodes: tuple[NodeSpec, ...], default: FenceDeviceSpec, problems: Problems
) -> dict[str, FenceDeviceSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add("fencing.nodes", f"must be a table of node names, not {type_name(raw)}")
        return {}
    names = [n.name for n in nodes]
    out: dict[str, FenceDeviceSpec] = {}
    for name, table in raw.items():
        path = join("fencing.nodes", name)
        if nodes and name not in names:
            problems.add(path, f"no node {short_repr(name)} in [[nodes]] ({', '.join(names)})")
            continue
        if not isinstance(table, dict):
            problems.add(path, f"must be a table, not {type_name(table)}")
            continue
        check_keys(table, path, [s.key for s in DEVICE], problems)
        out[name] = _device(table, path, default, problems)
    return out


def _self_fence(raw: object, problems: Problems) -> SelfFenceSpec | None:
    if raw is None:
        return SelfFenceSpec()
    if raw is False:
        return None
    if raw is True:
        return SelfFenceSpec(required=True)
    entry = read_table(raw, "fencing.self_fence", SELF_FENCE, problems)
    values = dict(entry.values)
    if "device" in values:
        try:
            values["device"] = watchdog_path(values["device"])
        except Invalid as e:
            problems.add("fencing.self_fence.device", e.reason)
    return SelfFenceSpec(required=True, **values)
