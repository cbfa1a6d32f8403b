"""``haosctl events`` and ``haosctl report``: their arguments and what they print."""

from __future__ import annotations

import argparse
from datetime import datetime

import pytest

from haos.cli.events import event_line, render_report, since_time
from haos.cli.main import main
from haos.cluster.asr.report import AvailabilityRecorder, report_json
from haos.model.reports import ServiceOutage, ServiceRestored

NOW = 1_765_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - 600),
        ("90", NOW - 90),
        ("500ms", NOW - 0.5),
        ("2026-12-07T14:00", datetime(2026, 12, 7, 14, 0).timestamp()),
    ],
)
def test_since_is_a_duration_back_or_a_local_time(text: str, expected: float) -> None:
    assert since_time(lambda: NOW)(text) == pytest.approx(expected)


def test_a_since_that_is_neither_is_refused_saying_what_it_may_be() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="nor is it a date and time"):
        since_time(lambda: NOW)("yesterday")


def test_a_bad_since_is_a_usage_error_before_anything_is_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["report", "--since", "soon", "--control", "/nonexistent"]) == 2
    assert "--since" in capsys.readouterr().err


def test_an_event_is_one_line_with_its_time_kind_and_words() -> None:
    line = event_line({"at": NOW + 0.25, "kind": "role", "text": "a now primary (was secondary)"})
    assert line.endswith(".250  role      a now primary (was secondary)")


def test_the_report_shows_outage_in_ms_availability_and_nines_per_instance() -> None:
    rec = AvailabilityRecorder(["counter-si", "idle-si"], NOW)
    rec.record(ServiceOutage("counter-si", NOW + 10, "fail-over of n1/counter"))
    rec.record(ServiceRestored("counter-si", NOW + 10.25, ("n2/counter",)))
    text = render_report(report_json(rec, NOW + 1000))
    rows = {line.split()[0]: line.split() for line in text.splitlines() if "-si " in line}
    assert rows["counter-si"][1:] == ["1", "250.0", "99.9750", "3.60"]
    assert rows["idle-si"][1:] == ["0", "0.0", "100.0000", "∞"]
    assert "250.0 ms (fail-over of n1/counter); served again by n2/counter" in text
