"""An OCF agent's ``meta-data`` XML as frozen data, and configured parameters checked against it.

The XML is the one of the OCF Resource Agent API (1.0 and 1.1)::

    <resource-agent name="Dummy" version="1.0">
      <parameters>
        <parameter name="state" unique="1" required="0">
          <content type="string" default="..."/>
        </parameter>
      </parameters>
      <actions>
        <action name="start" timeout="20s"/>
        <action name="monitor" timeout="20s" interval="10s" depth="0" role="Promoted"/>
      </actions>
    </resource-agent>

Durations are Pacemaker's: a number with an optional unit (``ms``, ``s``, ``m``/``min``,
``h``); a bare number is seconds.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from haos.errors import ConfigError, ConfigProblem, UsageError

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|msec|s|sec|m|min|h|hr)?\s*")
_UNIT_SECONDS = {
    None: 1.0,
    "ms": 0.001,
    "msec": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
}
_TRUE = frozenset({"1", "true", "yes", "on"})


class MetadataError(UsageError):
    """An agent's meta-data could not be read (not XML, not an OCF resource-agent document)."""

    code = "ocf-metadata"


@dataclass(frozen=True)
class ParameterSpec:
    """One ``<parameter>``: ``default`` is None when the agent declares none."""

    name: str
    required: bool = False
    unique: bool = False
    type: str = "string"
    default: str | None = None
    shortdesc: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """One ``<action>``; ``timeout``/``interval`` in seconds, None when not declared."""

    name: str
    timeout: float | None = None
    interval: float | None = None
    role: str | None = None
    depth: int | None = None


@dataclass(frozen=True)
class AgentMetadata:
    name: str
    version: str
    parameters: tuple[ParameterSpec, ...]
    actions: tuple[ActionSpec, ...]

    def parameter(self, name: str) -> ParameterSpec | None:
        return next((p for p in self.parameters if p.name == name), None)

    def action(self, name: str, role: str | None = None) -> ActionSpec | None:
        """The first ``<action name=...>`` (with ``role``, when given)."""
        return next(
            (a for a in self.actions if a.name == name and (role is None or a.role == role)),
            None,
        )

    @property
    def promotable(self) -> bool:
        """True when the agent implements promote and demote."""
        return self.action("promote") is not None and self.action("demote") is not None

    def default_timeouts(self) -> dict[str, float]:
        """Action name -> the agent's advertised timeout in seconds (first one declared)."""
        out: dict[str, float] = {}
        for a in self.actions:
            if a.timeout is not None:
                out.setdefault(a.name, a.timeout)
        return out


def parse_duration(text: str) -> float:
    """``"20s"`` -> 20.0, ``"2m"`` -> 120.0, ``"500ms"`` -> 0.5, ``"15"`` -> 15.0 (seconds)."""
    m = _DURATION.fullmatch(text.lower())
    if m is None:
        raise MetadataError(f"bad duration {text!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_metadata(xml: str) -> AgentMetadata:
    """Parse an agent's ``meta-data`` output; raises :class:`MetadataError` if it is not one."""
    try:
        root = ET.fromstring(xml.strip())
    except ET.ParseError as e:
        raise MetadataError(f"OCF meta-data is not XML: {e}") from e
    if root.tag != "resource-agent":
        raise MetadataError(f"OCF meta-data root is <{root.tag}>, not <resource-agent>")
    version = root.findtext("version") or root.get("version") or ""
    params = tuple(_parameter(p) for p in root.findall("./parameters/parameter"))
    actions = tuple(_action(a) for a in root.findall("./actions/action"))
    return AgentMetadata(root.get("name", ""), version.strip(), params, actions)


def _parameter(el: ET.Element) -> ParameterSpec:
    name = el.get("name")
    if not name:
        raise MetadataError("OCF meta-data has a <parameter> without a name")
    content = el.find("content")
    return ParameterSpec(
        name=name,
        required=el.get("required", "0").lower() in _TRUE,
        unique=el.get("unique", "0").lower() in _TRUE,
        type=content.get("type", "string") if content is not None else "string",
        default=content.get("default") if content is not None else None,
        shortdesc=(el.findtext("shortdesc") or "").strip(),
    )


def _action(el: ET.Element) -> ActionSpec:
    name = el.get("name")
    if not name:
        raise MetadataError("OCF meta-data has an <action> without a name")
    timeout, interval, depth = el.get("timeout"), el.get("interval"), el.get("depth")
    try:
        depth_value = int(depth) if depth is not None else None
    except ValueError:
        raise MetadataError(f"action {name}: bad depth {depth!r}") from None
    return ActionSpec(
        name=name,
        timeout=parse_duration(timeout) if timeout is not None else None,
        interval=parse_duration(interval) if interval is not None else None,
        role=el.get("role"),
        depth=depth_value,
    )


def check_params(meta: AgentMetadata, params: Mapping[str, str], *, source: str) -> None:
    """Raise :class:`ConfigError` listing every configured parameter the agent does not know
    and every required one that is missing; ``source`` names the resource in the messages."""
    known = {p.name for p in meta.parameters}
    problems = [
        ConfigProblem(source, f"params.{name}", f"unknown parameter of OCF agent {meta.name}")
        for name in params
        if name not in known
    ]
    problems += [
        ConfigProblem(source, f"params.{p.name}", f"required by OCF agent {meta.name}, not set")
        for p in meta.parameters
        if p.required and not params.get(p.name)
    ]
    if problems:
        raise ConfigError(problems)
