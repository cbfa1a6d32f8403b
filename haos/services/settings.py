"""Settings the cluster daemon takes from the CCR while it runs (dynamic reconfiguration).

The sub-tree ``/haos/settings/`` holds one key per setting (``/haos/settings/fence_delay``
= ``"2.5"``). Every committed change gives a whole new sub-tree; :func:`parse_settings` turns
it into a frozen :class:`LiveSettings`. A sub-tree with any bad key or value is refused as a
whole — every problem named — and the daemon keeps the settings it had: nothing of a bad
change is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from haos.config.schema import Invalid, check_duration
from haos.errors import ConfigError, ConfigProblem

SUBTREE = "/haos/settings"
PREFIX = SUBTREE + "/"


@dataclass(frozen=True)
class LiveSettings:
    """``fence_delay``: seconds a node waits before fencing a preferred node (so the
    preferred one wins a fencing race); ``fence_base_delay``: seconds before any fencing;
    ``demote_within``: informational deadline reported by status for quorum-loss demotion."""

    fence_delay: float = 1.0
    fence_base_delay: float = 0.0
    demote_within: float = 1.0


def _seconds(raw: str) -> float:
    """A number of seconds (``"2.5"``) or a duration (``"500ms"``), zero allowed, through the
    one duration check every setting uses."""
    try:
        value: object = float(raw)
    except ValueError:
        value = raw
    try:
        return check_duration(value, allow_zero=True)
    except Invalid as e:
        raise ValueError(str(e)) from None


_PARSERS: dict[str, Callable[[str], float]] = {f.name: _seconds for f in fields(LiveSettings)}


def parse_settings(tree: Mapping[str, bytes], base: LiveSettings) -> LiveSettings:
    """``base`` with the sub-tree's values; ConfigError naming every bad key (none applied).

    Keys absent from the sub-tree fall back to ``base``'s defaults at start-up, i.e. the
    command-line values the daemon was started with.
    """
    problems: list[ConfigProblem] = []
    values: dict[str, float] = {}
    for key, raw in sorted(tree.items()):
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        parser = _PARSERS.get(name)
        if parser is None:
            known = ", ".join(sorted(_PARSERS))
            problems.append(ConfigProblem("ccr", key, f"unknown setting; known: {known}"))
            continue
        try:
            values[name] = parser(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            problems.append(ConfigProblem("ccr", key, str(e)))
    if problems:
        raise ConfigError(problems)
    return replace(base, **values)
