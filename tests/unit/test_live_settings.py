"""Live settings from the CCR: applied whole, or refused whole with every problem named."""

from __future__ import annotations

import pytest

from haos.errors import ConfigError
from haos.services.settings import PREFIX, LiveSettings, parse_settings

BASE = LiveSettings(fence_delay=1.0, fence_base_delay=0.0)


def test_values_in_the_subtree_replace_the_started_ones() -> None:
    tree = {PREFIX + "fence_delay": b"2.5", PREFIX + "fence_base_delay": b"0.25"}
    assert parse_settings(tree, BASE) == LiveSettings(2.5, 0.25)


def test_durations_with_units_are_read_as_the_config_reads_them() -> None:
    tree = {PREFIX + "fence_delay": b"500ms", PREFIX + "fence_base_delay": b"0"}
    assert parse_settings(tree, BASE) == LiveSettings(0.5, 0.0)


def test_keys_removed_from_the_subtree_fall_back_to_the_started_values() -> None:
    assert parse_settings({}, BASE) == BASE


@pytest.mark.parametrize(
    ("tree", "fragments"),
    [
        pytest.param({PREFIX + "fence_dely": b"1"}, ["fence_dely", "unknown setting"], id="typo"),
        pytest.param({PREFIX + "fence_delay": b"-1"}, ["fence_delay", "negative"], id="negative"),
        pytest.param({PREFIX + "fence_delay": b"soon"}, ["fence_delay", "soon"], id="not_a_number"),
        pytest.param({PREFIX + "fence_delay": b"inf"}, ["finite"], id="infinite"),
        pytest.param({PREFIX + "fence_delay": b"1e-9"}, ["at least 0.001s"], id="too_short"),
        pytest.param({PREFIX + "fence_delay": b"9" * 400}, ["finite"], id="overflow"),
        pytest.param(
            {PREFIX + "fence_delay": b"y" * 1_000_000}, ["fence_delay", "..."], id="long_value"
        ),
        pytest.param({PREFIX + "fence_delay": b"\xff"}, ["fence_delay"], id="not_utf8"),
        pytest.param(
            {PREFIX + "fence_delay": b"x", PREFIX + "bogus": b"1"},
            ["fence_delay", "bogus"],
            id="every_problem_is_named",
        ),
    ],
)
def test_a_bad_subtree_is_refused_whole(tree: dict[str, bytes], fragments: list[str]) -> None:
    good = {PREFIX + "fence_base_delay": b"3"}
    with pytest.raises(ConfigError) as caught:
        parse_settings({**good, **tree}, BASE)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert len(str(caught.value)) < 1000  # a long value is quoted shortened
