"""Availability statistics reporter: scenario tables and properties of the figures."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haos.cluster.asr.report import (
    AvailabilityRecorder,
    Incident,
    InstanceAvailability,
    format_percent,
    nines,
    render_table,
)
from haos.model.reports import (
    Notification,
    RecoveryInitiated,
    RecoveryLevel,
    ServiceOutage,
    ServiceRestored,
    StateChanged,
)


def out(instance: str, at: float, cause: str = "") -> ServiceOutage:
    return ServiceOutage(instance, at, cause)


def back(instance: str, at: float, *by: str) -> ServiceRestored:
    return ServiceRestored(instance, at, by)


def figures(
    notes: list[Notification], now: float, instances: tuple[str, ...] = ("a",)
) -> dict[str, InstanceAvailability]:
    rec = AvailabilityRecorder(instances, start=0.0)
    for note in notes:
        rec.record(note)
    return {r.instance: r for r in rec.report(now).instances}


# (notes, now, instance, incidents, outage_total, availability, longest, mttr, down)
FIGURES = [
    pytest.param([], 100, "a", 0, 0.0, 1.0, 0.0, None, False,
                 id="availability_of_never_failed_instance_is_one"),
    pytest.param([out("a", 10), back("a", 25)], 100, "a", 1, 15.0, 0.85, 15.0, 15.0, False,
                 id="outage_and_restore_give_duration"),
    pytest.param([out("a", 10)], 100, "a", 1, 90.0, 0.1, 90.0, None, True,
                 id="open_outage_counts_until_now"),
    pytest.param([out("a", 10), back("a", 20), out("a", 50), back("a", 80)], 100,
                 "a", 2, 40.0, 0.6, 30.0, 20.0, False,
                 id="two_incidents_add_up_and_mttr_is_their_mean"),
    pytest.param([out("a", 10), back("a", 20), out("a", 90)], 100,
                 "a", 2, 20.0, 0.8, 10.0, 10.0, True,
                 id="mttr_counts_only_restored_incidents"),
    pytest.param([back("a", 5), out("a", 10), back("a", 20)], 100,
                 "a", 1, 10.0, 0.9, 10.0, 10.0, False,
                 id="restore_without_outage_is_ignored"),
    pytest.param([out("a", 10, "crash"), out("a", 15, "hang"), back("a", 20)], 100,
                 "a", 1, 10.0, 0.9, 10.0, 10.0, False,
                 id="second_outage_while_open_is_ignored"),
    pytest.param([out("a", 10), back("a", 20), back("a", 30)], 100,
                 "a", 1, 10.0, 0.9, 10.0, 10.0, False,
                 id="duplicate_restore_is_ignored"),
    pytest.param([out("a", -50), back("a", 10)], 100, "a", 1, 10.0, 0.9, 10.0, 10.0, False,
                 id="outage_before_the_window_counts_from_its_start"),
    pytest.param([out("a", 30), back("a", 20)], 100, "a", 1, 0.0, 1.0, 0.0, 0.0, False,
                 id="restore_older_than_its_outage_gives_zero_duration"),
    pytest.param([out("a", 10), back("a", 40), out("a", 20), back("a", 50)], 100,
                 "a", 2, 40.0, 0.6, 30.0, 20.0, False,
                 id="late_outage_does_not_count_the_same_seconds_twice"),
    pytest.param([out("a", 10), back("a", 90)], 50, "a", 1, 40.0, 0.2, 40.0, 40.0, False,
                 id="report_for_an_earlier_now_counts_only_up_to_now"),
    pytest.param([], 0, "a", 0, 0.0, 1.0, 0.0, None, False,
                 id="no_elapsed_time_means_full_availability"),
    pytest.param([out("b", 60), back("b", 80)], 100, "b", 1, 20.0, 0.8, 20.0, 20.0, False,
                 id="unknown_instance_is_added_on_the_fly"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("notes", "now", "instance", "incidents", "total", "avail", "longest", "mttr", "down"),
    FIGURES,
)
def test_instance_figures(
    notes: list[Notification],
    now: float,
    instance: str,
    incidents: int,
    total: float,
    avail: float,
    longest: float,
    mttr: float | None,
    down: bool,
) -> None:
    row = figures(notes, now)[instance]
    assert row.incidents == incidents
    assert row.outage_total == pytest.approx(total)
    assert row.availability == pytest.approx(avail)
    assert row.longest_outage == pytest.approx(longest)
    assert row.mttr == (None if mttr is None else pytest.approx(mttr))
    assert row.down is down


def test_incidents_keep_cause_and_who_restored() -> None:
    rec = AvailabilityRecorder(["a"], start=0.0)
    notes: list[Notification] = [
        out("a", 10, "crash"),
        out("a", 12, "hang"),
        back("a", 20, "node2/web"),
    ]
    for note in notes:
        rec.record(note)
    rec.record(out("a", 30, "hang"))
    assert rec.incidents("a") == [
        Incident("a", 10.0, 20.0, "crash", ("node2/web",)),
        Incident("a", 30.0, None, "hang", ()),
    ]
    assert rec.incidents("a")[1].duration(45.0) == 15.0
    assert rec.incidents("nobody") == []


@pytest.mark.parametrize(
    ("availabilities", "overall", "worst", "worst_instance"),
    [
        pytest.param({}, 1.0, 1.0, None, id="no_instances_is_fully_available"),
        pytest.param({"a": 1.0, "b": 0.8}, 0.9, 0.8, "b", id="overall_is_the_mean_worst_the_min"),
        pytest.param({"a": 0.5, "b": 0.5}, 0.5, 0.5, "a", id="tie_for_worst_names_the_first"),
    ],
)
def test_overall_figures(
    availabilities: dict[str, float], overall: float, worst: float, worst_instance: str | None
) -> None:
    rec = AvailabilityRecorder(availabilities, start=0.0)
    for name, a in availabilities.items():
        if a < 1.0:
            rec.record(out(name, 0.0))
            rec.record(back(name, 100 * (1 - a)))
    report = rec.report(100.0)
    assert report.overall == pytest.approx(overall)
    assert report.worst == pytest.approx(worst)
    assert report.worst_instance == worst_instance


@pytest.mark.parametrize(
    ("a", "expect"),
    [
        pytest.param(0.0, 0.0, id="never_available_has_zero_nines"),
        pytest.param(0.9, 1.0, id="ninety_percent_is_one_nine"),
        pytest.param(0.99999, 5.0, id="five_nines"),
        pytest.param(1.0, math.inf, id="perfect_record_has_infinite_nines"),
    ],
)
def test_nines(a: float, expect: float) -> None:
    assert nines(a) == pytest.approx(expect)


@pytest.mark.parametrize("a", [-0.1, 1.1, math.nan])
def test_nines_rejects_values_outside_zero_one(a: float) -> None:
    with pytest.raises(ValueError):
        nines(a)


@pytest.mark.parametrize(
    ("a", "expect"),
    [
        pytest.param(1.0, "100.0000", id="perfect"),
        pytest.param(0.9999999, "99.9999", id="almost_perfect_is_not_rounded_up_to_100"),
        pytest.param(0.85, "85.0000", id="plain"),
    ],
)
def test_format_percent(a: float, expect: str) -> None:
    assert format_percent(a) == expect


def test_render_table_lists_every_instance_and_an_overall_line() -> None:
    rec = AvailabilityRecorder(["web-1", "a-much-longer-instance-name"], start=0.0)
    rec.record(out("web-1", 10))
    rec.record(back("web-1", 20))
    rec.record(out("a-much-longer-instance-name", 95))
    lines = render_table(rec.report(100.0)).splitlines()
    assert lines[0].split() == ["instance", "incidents", "outage", "s", "avail", "%", "nines"]
    assert lines[2].split() == ["web-1", "1", "10.000", "90.0000", "1.00"]
    assert lines[3].split() == ["a-much-longer-instance-name", "1*", "5.000", "95.0000", "1.30"]
    assert len({len(line) for line in lines[:4]}) == 1, "columns are fixed width"
    assert lines[-1].startswith("overall (mean of 2 instances over 100s): 92.5000 %")
    assert "worst web-1 90.0000 %" in lines[-1]


def test_render_table_shows_a_perfect_record_as_infinity() -> None:
    text = render_table(AvailabilityRecorder(["a"], start=0.0).report(10.0))
    assert "100.0000      ∞" in text


def test_history_keeps_every_notification_in_order() -> None:
    rec = AvailabilityRecorder(["a"], start=0.0)
    notes: list[Notification] = [
        out("a", 1, "crash"),
        RecoveryInitiated("web", RecoveryLevel.RESTART, 1.1, "crash"),
        StateChanged("web", "primary", "offline", 1.2),
        back("a", 3, "node2/web"),
        back("a", 4),
    ]
    for note in notes:
        rec.record(note)
    assert [(h.at, h.kind, h.subject, h.ignored) for h in rec.history()] == [
        (1.0, "outage", "a", False),
        (1.1, "recovery", "web", False),
        (1.2, "state", "web", False),
        (3.0, "restored", "a", False),
        (4.0, "restored", "a", True),
    ]
    assert "restart" in rec.history()[1].detail
    assert "primary -> offline" in str(rec.history()[2])
    assert "node2/web" in rec.history()[3].detail


@pytest.mark.parametrize(
    ("limit", "size", "expect"),
    [
        pytest.param(2, 100, [8.0, 9.0], id="limit_gives_the_most_recent"),
        pytest.param(0, 100, [], id="zero_limit_gives_nothing"),
        pytest.param(100, 3, [7.0, 8.0, 9.0], id="history_is_bounded"),
    ],
)
def test_history_limit(limit: int, size: int, expect: list[float]) -> None:
    rec = AvailabilityRecorder([], start=0.0, history_size=size)
    for t in range(10):
        rec.record(StateChanged("web", "spare", "primary", float(t)))
    assert [h.at for h in rec.history(limit)] == expect


# --- properties ---------------------------------------------------------------------------

INSTANCES = ("a", "b", "c")
times = st.floats(-20.0, 200.0, allow_nan=False)
notes = st.lists(
    st.one_of(
        st.builds(ServiceOutage, st.sampled_from(INSTANCES), times),
        st.builds(ServiceRestored, st.sampled_from(INSTANCES), times),
    ),
    max_size=40,
)


@given(notes, st.booleans(), st.floats(0.0, 250.0))
def test_figures_are_consistent(recorded: list[Notification], in_order: bool, now: float) -> None:
    if in_order:
        recorded = sorted(recorded, key=lambda n: n.at)
    rec = AvailabilityRecorder(INSTANCES[:1], start=0.0)
    for note in recorded:
        rec.record(note)
    report = rec.report(now)
    assert 0.0 <= report.worst <= report.overall <= 1.0
    for row in report.instances:
        assert 0.0 <= row.availability <= 1.0
        assert row.outage_total <= now + 1e-9
        durations = [i.duration(now) for i in rec.incidents(row.instance)]
        assert math.fsum(durations) == pytest.approx(row.outage_total, abs=1e-9)
        assert row.incidents == len(durations)
        assert row.longest_outage == max(durations, default=0.0)
