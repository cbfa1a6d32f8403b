"""The containment tree: every component exactly once, under exactly one parent.

Names are paths (see :mod:`haos.model.names`), so the tree enforces that a component's
parent exists before the component is added, and removing a component removes its subtree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from haos.errors import ModelError
from haos.model.names import check_name, is_within, parent_of


@dataclass(frozen=True)
class Component:
    """A managed component: hardware FRU, CPU node, logical FRU or application."""

    name: str
    cls: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return parent_of(self.name)


class ContainmentTree:
    """A mutable containment tree; copy it with :meth:`copy` to keep a snapshot."""

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}
        self._children: dict[str | None, list[str]] = {None: []}

    def add(self, component: Component) -> None:
        check_name(component.name)
        if component.name in self._components:
            raise ModelError(f"component {component.name!r} already exists")
        parent = component.parent
        if parent is not None and parent not in self._components:
            raise ModelError(f"component {component.name!r}: parent {parent!r} does not exist")
        self._components[component.name] = component
        self._children[parent].append(component.name)
        self._children[component.name] = []

    def remove(self, name: str) -> list[str]:
        """Remove ``name`` and its subtree; return the removed names, deepest first."""
        if name not in self._components:
            raise ModelError(f"no component {name!r}")
        removed = list(reversed(list(self.subtree(name))))
        for n in removed:
            del self._components[n]
            del self._children[n]
        self._children[parent_of(name)].remove(name)
        return removed

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __len__(self) -> int:
        return len(self._components)

    def __iter__(self) -> Iterator[Component]:
        return iter(self._components.values())

    def get(self, name: str) -> Component:
        try:
            return self._components[name]
        except KeyError:
            raise ModelError(f"no component {name!r}") from None

    def children(self, name: str | None) -> list[str]:
        if name is not None and name not in self._components:
            raise ModelError(f"no component {name!r}")
        return list(self._children[name])

    def roots(self) -> list[str]:
        return list(self._children[None])

    def subtree(self, name: str) -> Iterator[str]:
        """``name`` and every component it contains, parents before children."""
        stack = [name]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(self._children[n]))

    def contains(self, container: str, name: str) -> bool:
        return is_within(name, container)

    def copy(self) -> ContainmentTree:
        other = ContainmentTree()
        other._components = dict(self._components)
        other._children = {k: list(v) for k, v in self._children.items()}
        return other
