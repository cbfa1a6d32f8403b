"""Health monitor audit policy: scenario tables and a property over random schedules."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec
from haos.errors import ModelError
from haos.model.reports import ErrorKind, ErrorReport

PING = AuditSpec("web", "ping", period=10.0, timeout=2.0)
DISK = AuditSpec("web", "disk", period=30.0, timeout=5.0)
DB = AuditSpec("db", "query", period=10.0, timeout=3.0)

FAILED = ErrorKind.AUDIT_FAILED
OVERDUE = ErrorKind.AUDIT_OVERDUE

# A report as the tables write it: (component, kind, observed_at).
Seen = tuple[str, ErrorKind, float]


def seen(reports: list[ErrorReport]) -> list[Seen]:
    assert all(r.source == "hm" for r in reports)
    return [(r.component, r.kind, r.observed_at) for r in reports]


# --- a tiny step language for the scenario tables ----------------------------------------


@dataclass(frozen=True)
class Due:
    now: float
    expect: tuple[str, ...]  # "component/name" of the audits to start

    def run(self, m: AuditMonitor) -> None:
        assert [f"{s.component}/{s.name}" for s in m.due(self.now)] == list(self.expect)


@dataclass(frozen=True)
class Result:
    audit: str
    ok: bool
    now: float
    expect: tuple[Seen, ...] = ()

    def run(self, m: AuditMonitor) -> None:
        component, name = self.audit.split("/")
        assert seen(m.result(component, name, self.ok, self.now)) == list(self.expect)


@dataclass(frozen=True)
class Tick:
    now: float
    expect: tuple[Seen, ...] = ()

    def run(self, m: AuditMonitor) -> None:
        assert seen(m.tick(self.now)) == list(self.expect)


@dataclass(frozen=True)
class Healthy:
    now: float
    expect: bool

    def run(self, m: AuditMonitor) -> None:
        assert m.healthy_this_round(self.now) is self.expect


@dataclass(frozen=True)
class Suspend:
    component: str

    def run(self, m: AuditMonitor) -> None:
        m.suspend(self.component)


@dataclass(frozen=True)
class Resume:
    component: str
    now: float

    def run(self, m: AuditMonitor) -> None:
        m.resume(self.component, self.now)


@dataclass(frozen=True)
class Unregister:
    component: str
    name: str | None = None

    def run(self, m: AuditMonitor) -> None:
        m.unregister(self.component, self.name)


@dataclass(frozen=True)
class Register:
    spec: AuditSpec
    now: float

    def run(self, m: AuditMonitor) -> None:
        m.register(self.spec, self.now)


Step = Due | Result | Tick | Healthy | Suspend | Resume | Unregister | Register


def monitor_at_zero(*specs: AuditSpec) -> AuditMonitor:
    m = AuditMonitor()
    for spec in specs:
        m.register(spec, 0.0)
    return m


SCENARIOS = [
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Result("web/ping", False, 0.5, (("web", FAILED, 0.5),))],
        id="failed_audit_becomes_error_report",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Result("web/ping", True, 1.0), Tick(11.9), Healthy(11.9, True)],
        id="passed_audit_gives_no_report",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Tick(1.9), Tick(2.0, (("web", OVERDUE, 2.0),))],
        id="audit_not_answered_within_timeout_is_reported_overdue",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Tick(7.5, (("web", OVERDUE, 2.0),))],
        id="overdue_is_observed_at_the_deadline_not_at_the_late_tick",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Tick(3, (("web", OVERDUE, 2.0),)),
            Result("web/ping", False, 3.5),
            Tick(4),
        ],
        id="late_result_after_overdue_is_ignored",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Result("web/ping", False, 2.0),
            Tick(2.0, (("web", OVERDUE, 2.0),)),
        ],
        id="result_at_the_deadline_is_late_even_before_tick_runs",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Tick(2, (("web", OVERDUE, 2.0),)), Tick(3), Tick(5), Tick(9)],
        id="overdue_is_not_repeated_every_tick",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Tick(2, (("web", OVERDUE, 2.0),)),
            Due(9.9, ()),
            Due(10, ("web/ping",)),
        ],
        id="overdue_audit_is_rearmed_for_the_next_period",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Due(1, ()),
            Result("web/ping", True, 1.5),
            Due(9.9, ()),
            Due(10, ("web/ping",)),
        ],
        id="started_audit_is_not_due_again_until_answered",
    ),
    pytest.param(
        (PING,),
        [Tick(1.9), Tick(2.0, (("web", OVERDUE, 2.0),))],
        id="stalled_runner_is_reported_overdue",
    ),
    pytest.param(
        (PING,),
        [Due(30, ("web/ping",)), Healthy(30, False), Tick(30, (("web", OVERDUE, 2.0),))],
        id="stall_is_reported_even_when_due_runs_before_tick",
    ),
    pytest.param(
        (PING,),
        [Tick(95, (("web", OVERDUE, 2.0),)), Tick(96), Due(96, ("web/ping",)), Tick(97.9)],
        id="long_stall_gives_one_report_and_the_audit_runs_at_once",
    ),
    pytest.param(
        (PING, DB),
        [
            Suspend("web"),
            Due(0, ("db/query",)),
            Result("db/query", True, 1),
            Tick(9, ()),
            Healthy(9, True),
        ],
        id="suspended_component_is_not_audited",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Suspend("web"), Result("web/ping", False, 1), Tick(5)],
        id="suspend_drops_the_run_in_flight",
    ),
    pytest.param(
        (PING,),
        [
            Suspend("web"),
            Tick(40),
            Resume("web", 50),
            Due(50, ("web/ping",)),
            Tick(51.9),
            Tick(52, (("web", OVERDUE, 52.0),)),
        ],
        id="resume_restarts_the_schedule_from_now",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Resume("web", 1), Due(1, ()), Result("web/ping", True, 1.5)],
        id="resume_of_a_component_not_suspended_changes_nothing",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Result("nope/ping", False, 1), Result("web/nope", False, 1)],
        id="result_for_unknown_audit_is_ignored",
    ),
    pytest.param(
        (PING,),
        [Result("web/ping", False, 0.5), Due(1, ("web/ping",))],
        id="result_for_audit_not_started_is_ignored",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Result("web/ping", True, 1), Result("web/ping", False, 1.1)],
        id="second_result_for_one_run_is_ignored",
    ),
    pytest.param(
        (PING, DISK, DB),
        [
            Due(0, ("web/ping", "web/disk", "db/query")),
            Unregister("web"),
            Tick(100, (("db", OVERDUE, 3.0),)),
        ],
        id="unregistered_component_is_no_longer_reported",
    ),
    pytest.param(
        (PING, DISK),
        [Unregister("web", "disk"), Due(0, ("web/ping",)), Unregister("web", "gone")],
        id="unregister_by_name_keeps_the_other_audits",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Result("web/ping", False, 1, (("web", FAILED, 1.0),)),
            Healthy(1, True),
        ],
        id="watchdog_is_petted_after_a_failed_audit_that_answered_in_time",
    ),
    pytest.param(
        (PING,),
        [Due(0, ("web/ping",)), Healthy(1.9, True), Healthy(2.0, False)],
        id="watchdog_is_not_petted_once_a_run_misses_its_deadline_even_before_tick",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Tick(2, (("web", OVERDUE, 2.0),)),
            Healthy(3, False),
            Due(10, ("web/ping",)),
            Healthy(10, False),
            Result("web/ping", True, 10.5),
            Healthy(10.5, True),
        ],
        id="watchdog_is_not_petted_after_overdue_until_the_audit_proves_itself_again",
    ),
    pytest.param(
        (PING,),
        [
            Due(0, ("web/ping",)),
            Tick(2, (("web", OVERDUE, 2.0),)),
            Suspend("web"),
            Healthy(3, True),
        ],
        id="watchdog_is_petted_while_the_overdue_component_is_being_recovered",
    ),
    pytest.param(
        (PING,),
        [Tick(0), Register(PING, 5), Tick(6.9), Due(7, ()), Tick(7, (("web", OVERDUE, 7.0),))],
        id="register_again_restarts_the_schedule",
    ),
]


@pytest.mark.parametrize(("specs", "steps"), SCENARIOS)
def test_scenario(specs: tuple[AuditSpec, ...], steps: list[Step]) -> None:
    m = monitor_at_zero(*specs)
    for step in steps:
        step.run(m)


# --- schedule queries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expect"),
    [
        pytest.param([], 0.0, id="fresh_audit_is_due_at_registration"),
        pytest.param([Due(0, ("web/ping",))], 2.0, id="running_audit_wakes_at_its_timeout"),
        pytest.param(
            [Due(0, ("web/ping",)), Result("web/ping", True, 1)],
            10.0,
            id="idle_audit_wakes_when_due",
        ),
        pytest.param([Suspend("web")], None, id="suspended_audit_needs_no_wakeup"),
        pytest.param([Unregister("web")], None, id="no_audits_no_deadline"),
    ],
)
def test_next_deadline(steps: list[Step], expect: float | None) -> None:
    m = monitor_at_zero(PING)
    for step in steps:
        step.run(m)
    assert m.next_deadline() == expect


def test_next_deadline_is_the_earliest_over_audits() -> None:
    m = monitor_at_zero(PING, DB)
    m.due(0)
    m.result("web", "ping", True, 1)
    assert m.next_deadline() == 3.0  # db/query times out before web/ping is due again


def test_constructor_audits_are_scheduled_by_the_first_call() -> None:
    m = AuditMonitor([PING])
    assert m.next_deadline() == -math.inf
    assert m.tick(1000.0) == []  # no stall: the schedule starts now
    assert [s.name for s in m.due(1000.0)] == ["ping"]
    assert m.next_deadline() == 1002.0


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(AuditSpec("web", "p", period=0.0, timeout=1.0), id="zero_period_is_rejected"),
        pytest.param(
            AuditSpec("web", "p", period=1.0, timeout=-1.0), id="negative_timeout_is_rejected"
        ),
        pytest.param(
            AuditSpec("web", "p", period=math.nan, timeout=1.0), id="nan_period_is_rejected"
        ),
    ],
)
def test_invalid_audit_spec_is_a_model_error(spec: AuditSpec) -> None:
    with pytest.raises(ModelError, match="web/p"):
        AuditMonitor().register(spec, 0.0)
    with pytest.raises(ModelError):
        AuditMonitor([spec])


def test_status_tracks_outcomes() -> None:
    m = monitor_at_zero(PING, DB)
    m.suspend("db")
    assert m.status() == [
        {"component": "web", "name": "ping", "last_ok": None, "last_outcome": None,
         "last_result_at": None, "consecutive_failures": 0, "suspended": False},
        {"component": "db", "name": "query", "last_ok": None, "last_outcome": None,
         "last_result_at": None, "consecutive_failures": 0, "suspended": True},
    ]  # fmt: skip
    m.due(0)
    m.result("web", "ping", False, 1, detail="HTTP 500")
    m.due(10)
    m.tick(12)  # second run overdue
    row = m.status()[0]
    assert (row["last_ok"], row["last_outcome"], row["last_result_at"]) == (False, "overdue", 12.0)
    assert row["consecutive_failures"] == 2
    m.due(20)
    m.result("web", "ping", True, 21)
    row = m.status()[0]
    assert (row["last_ok"], row["last_result_at"], row["consecutive_failures"]) == (True, 21.0, 0)


def test_failed_report_carries_the_runner_detail() -> None:
    m = monitor_at_zero(PING)
    m.due(0)
    [report] = m.result("web", "ping", False, 1, detail="HTTP 500")
    assert "ping" in report.detail and "HTTP 500" in report.detail


def test_overdue_reports_say_whether_the_runner_stalled() -> None:
    m = monitor_at_zero(PING, DB)
    m.due(0)
    m.result("web", "ping", True, 1)  # db/query left running
    reports = {r.component: r.detail for r in m.tick(40)}
    assert "no result" in reports["db"]
    assert "stalled" in reports["web"]


# --- property: every started run has exactly one outcome ----------------------------------

# One audit per component, so a report (which names the component) names its audit.
AUDITS = (PING, DB, AuditSpec("cache", "slow", period=1.0, timeout=4.0))

ops = st.lists(
    st.one_of(
        st.tuples(st.just("due"), st.floats(0, 6)),
        st.tuples(st.just("tick"), st.floats(0, 6)),
        st.tuples(st.just("result"), st.floats(0, 6), st.sampled_from(AUDITS), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_every_started_audit_has_exactly_one_outcome(
    steps: list[tuple[str, float] | tuple[str, float, AuditSpec, bool]],
) -> None:
    m = monitor_at_zero(*AUDITS)
    in_flight: dict[tuple[str, str], float] = {}  # run start, per audit
    expected_overdue: Counter[tuple[str, float]] = Counter()  # (component, start + timeout)
    outcomes = 0
    starts = 0
    overdue_seen: list[ErrorReport] = []
    now = 0.0

    def expire(at: float) -> None:
        # The contract: a run started at s is answered in time only before s + timeout.
        nonlocal outcomes
        for spec in AUDITS:
            key = (spec.component, spec.name)
            if key in in_flight and at >= in_flight[key] + spec.timeout:
                expected_overdue[(spec.component, in_flight.pop(key) + spec.timeout)] += 1
                outcomes += 1

    for step in steps:
        now += step[1]
        expire(now)
        if step[0] == "due":
            for spec in m.due(now):
                key = (spec.component, spec.name)
                assert key not in in_flight, "a started audit was started again"
                in_flight[key] = now
                starts += 1
        elif step[0] == "tick":
            overdue_seen += m.tick(now)
        else:
            assert len(step) == 4
            _, _, spec, ok = step
            key = (spec.component, spec.name)
            reports = m.result(spec.component, spec.name, ok, now)
            if key in in_flight:
                del in_flight[key]
                outcomes += 1
                assert seen(reports) == ([] if ok else [(spec.component, FAILED, now)])
            else:
                assert reports == []

    now += 100.0
    expire(now)
    overdue_seen += m.tick(now)
    assert not in_flight
    assert outcomes == starts
    assert all(r.kind is OVERDUE for r in overdue_seen)
    got = Counter((r.component, r.observed_at) for r in overdue_seen)
    for deadline, count in expected_overdue.items():
        assert got[deadline] == count, f"run missing its deadline at {deadline} not reported once"
