"""The demo's "counter placed" condition for every cluster size it supports."""

from __future__ import annotations

import pytest

from haoslab.demo.run import placed


def names(count: int) -> list[str]:
    return [f"n{k}" for k in range(1, count + 1)]


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_one_primary_one_secondary_and_a_spare_on_every_other_node(count: int) -> None:
    roles = dict.fromkeys(names(count), "spare") | {"n1": "secondary", f"n{count}": "primary"}
    assert placed(roles, names(count))


@pytest.mark.parametrize(
    "roles",
    [
        {"n1": "primary", "n2": "secondary", "n3": "spare", "n4": "spare"},  # n5 missing
        {"n1": "primary", "n2": "secondary", "n3": "spare", "n4": "spare", "n5": "offline"},
        {"n1": "primary", "n2": "primary", "n3": "spare", "n4": "spare", "n5": "spare"},
        {"n1": "primary", "n2": "spare", "n3": "spare", "n4": "spare", "n5": "spare"},
    ],
)
def test_five_nodes_not_placed_until_every_node_has_its_role(roles: dict[str, str]) -> None:
    assert not placed(roles, names(5))
