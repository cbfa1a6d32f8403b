"""Pure parts of the CMF: unit object paths, property encoding, the change filter."""

from __future__ import annotations

import pytest
from dbus_fast import Variant

from haos.services.cmf.systemd import encode_properties, unit_path
from haos.services.cmf.types import UNLOADED, ChangeFilter, UnitState


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("sleep.service", "/org/freedesktop/systemd1/unit/sleep_2eservice"),
        ("cmf-app@1.service", "/org/freedesktop/systemd1/unit/cmf_2dapp_401_2eservice"),
        ("9lives.service", "/org/freedesktop/systemd1/unit/_39lives_2eservice"),
        ("a_b.scope", "/org/freedesktop/systemd1/unit/a_5fb_2escope"),
        ("", "/org/freedesktop/systemd1/unit/_"),
    ],
)
def test_unit_path_escapes_like_systemd(name: str, path: str) -> None:
    assert unit_path(name) == path


def test_properties_are_typed_and_exec_start_comes_from_argv() -> None:
    encoded = dict(
        encode_properties(
            ["/bin/sleep", "1000"],
            {"Description": "d", "RemainAfterExit": True, "KillSignal": 9,
             "TimeoutStopUSec": 5_000_000, "Environment": ["A=1"]},
        )
    )  # fmt: skip
    assert encoded["Description"] == Variant("s", "d")
    assert encoded["RemainAfterExit"] == Variant("b", True)
    assert encoded["KillSignal"] == Variant("i", 9)
    assert encoded["TimeoutStopUSec"] == Variant("t", 5_000_000)
    assert encoded["Environment"] == Variant("as", ["A=1"])
    exec_start = [["/bin/sleep", ["/bin/sleep", "1000"], False]]
    assert encoded["ExecStart"] == Variant("a(sasb)", exec_start)


@pytest.mark.parametrize(
    ("argv", "properties", "message"),
    [
        ([], {}, "argv"),
        (["/bin/true"], {"ExecStart": "/bin/false"}, "ExecStart"),
        (["/bin/true"], {"SomeCounter": 3}, "SomeCounter"),
    ],
)
def test_bad_transient_requests_are_refused(
    argv: list[str], properties: dict[str, int | str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_properties(argv, properties)


def test_filter_drops_the_early_inactive_and_repeats() -> None:
    f = ChangeFilter(["a.service"])
    active = UnitState("active", "running", "success")
    assert f.report("a.service", UNLOADED, 1.0) is None  # the new unit's first report
    first = f.report("a.service", active, 2.0)
    assert first is not None and first.state == active and first.at == 2.0
    assert f.report("a.service", active, 3.0) is None
    assert f.report("other.service", active, 4.0) is None


def test_filter_seed_does_not_override_a_report_that_came_first() -> None:
    f = ChangeFilter(["a.service"])
    failed = UnitState("failed", "failed", "signal")
    assert f.report("a.service", failed, 1.0) is not None
    f.seed("a.service", UNLOADED)  # read before the signal was sent: older
    assert f.report("a.service", failed, 2.0) is None
