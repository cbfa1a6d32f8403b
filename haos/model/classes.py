"""Component classes, sub-classes and the standard methods they support.

Each class names its base; a sub-class supports every method of its bases plus its own.
The built-in hierarchy covers the seed's kinds of component: hardware FRUs, CPU nodes,
logical (software) FRUs and applications. Configurations add sub-classes of these.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from haos.errors import ModelError


class Method(enum.Enum):
    """Standard operations a component manager may offer."""

    RESET = "reset"
    SOFT_RESET = "soft-reset"
    RESTART = "restart"
    KILL = "kill"
    SELF_TEST = "self-test"
    LOCK = "lock"
    UNLOCK = "unlock"
    SHUTDOWN = "shutdown"
    POWER_OFF = "power-off"
    POWER_ON = "power-on"
    REBOOT = "reboot"
    QUIESCE = "quiesce"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ComponentClass:
    name: str
    base: str | None
    methods: frozenset[Method]
    hosts_components: bool = False  # a CPU node: components inside it run on it


_M = Method
BUILTIN_CLASSES: tuple[ComponentClass, ...] = (
    ComponentClass("component", None, frozenset({_M.LOCK, _M.UNLOCK, _M.SELF_TEST})),
    ComponentClass("hardware", "component", frozenset({_M.RESET, _M.POWER_OFF, _M.POWER_ON})),
    ComponentClass("chassis", "hardware", frozenset()),
    ComponentClass("slot", "hardware", frozenset()),
    ComponentClass("board", "hardware", frozenset()),
    ComponentClass("node", "board", frozenset({_M.REBOOT, _M.SHUTDOWN}), hosts_components=True),
    ComponentClass(
        "software",
        "component",
        frozenset({_M.SOFT_RESET, _M.RESTART, _M.KILL, _M.SHUTDOWN, _M.QUIESCE}),
    ),
    ComponentClass("application", "software", frozenset()),
)


class ClassRegistry:
    """Resolves class names to their full method sets, following the base chain."""

    def __init__(self, classes: Iterable[ComponentClass] = BUILTIN_CLASSES) -> None:
        self._classes: dict[str, ComponentClass] = {}
        for cls in classes:
            self.add(cls)

    def add(self, cls: ComponentClass) -> None:
        if cls.name in self._classes:
            raise ModelError(f"component class {cls.name!r} is defined twice")
        if cls.base is not None and cls.base not in self._classes:
            raise ModelError(f"component class {cls.name!r}: unknown base class {cls.base!r}")
        self._classes[cls.name] = cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str) -> ComponentClass:
        try:
            return self._classes[name]
        except KeyError:
            raise ModelError(f"unknown component class {name!r}") from None

    def lineage(self, name: str) -> list[str]:
        """The class and its bases, most specific first."""
        out = []
        cls: ComponentClass | None = self.get(name)
        while cls is not None:
            out.append(cls.name)
            cls = self._classes[cls.base] if cls.base else None
        return out

    def is_a(self, name: str, ancestor: str) -> bool:
        return ancestor in self.lineage(name)

    def methods(self, name: str) -> frozenset[Method]:
        out: set[Method] = set()
        for cls_name in self.lineage(name):
            out |= self._classes[cls_name].methods
        return frozenset(out)

    def hosts_components(self, name: str) -> bool:
        return any(self._classes[c].hosts_components for c in self.lineage(name))

    def as_mapping(self) -> Mapping[str, ComponentClass]:
        return dict(self._classes)
