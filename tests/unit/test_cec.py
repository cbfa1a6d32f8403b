"""The CEC policy core: (steps, now) -> verdicts, forwarded reports and reasons."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.cluster.cec.policy import Correlation, Correlator, Verdict
from haos.config.model import CorrelationPolicy
from haos.errors import ModelError
from haos.model.names import is_within
from haos.model.reports import ErrorKind, ErrorReport, RecoveryInitiated, RecoveryLevel

CRASH, HANG, ERROR, HARDWARE = ErrorKind.CRASH, ErrorKind.HANG, ErrorKind.ERROR, ErrorKind.HARDWARE
SOFT, RESTART, FAILOVER, REBOOT = (
    RecoveryLevel.SOFT_RESET,
    RecoveryLevel.RESTART,
    RecoveryLevel.FAILOVER,
    RecoveryLevel.REBOOT_NODE,
)
FORWARD, REATTRIBUTE, ESCALATE, HOLD, DISCARD = (
    Verdict.FORWARD,
    Verdict.REATTRIBUTE,
    Verdict.ESCALATE,
    Verdict.HOLD,
    Verdict.DISCARD,
)

NODE = "shelf1/slot1/node"
A, B, C = f"{NODE}/app_a", f"{NODE}/app_b", f"{NODE}/app_c"
OTHER = "shelf1/slot2/node/app_a"

DEFAULT = CorrelationPolicy()  # hold 0.05 s, container window 0.5 s, threshold 2
NO_HOLD = CorrelationPolicy(hold_time=0.0)
NO_CONTAINERS = CorrelationPolicy(container_threshold=1)
THREE_CHILDREN = CorrelationPolicy(container_threshold=3)


def rep(
    component: str, at: float, kind: ErrorKind = CRASH, recommended: RecoveryLevel | None = None
) -> ErrorReport:
    return ErrorReport(component, kind, observed_at=at, source="hm", recommended=recommended)


@dataclass(frozen=True)
class Report:
    report: ErrorReport
    now: float


@dataclass(frozen=True)
class Recovery:
    component: str
    at: float


@dataclass(frozen=True)
class Tick:
    now: float


Step = Report | Recovery | Tick


def seen(component: str, at: float, kind: ErrorKind = CRASH) -> Report:
    """A report that arrives the moment its cause is observed."""
    return Report(rep(component, at, kind), at)


def apply(correlator: Correlator, step: Step) -> list[Correlation]:
    if isinstance(step, Report):
        return [correlator.report(step.report, step.now)]
    if isinstance(step, Recovery):
        correlator.recovery_started(RecoveryInitiated(step.component, RESTART, step.at))
        return []
    return correlator.tick(step.now)


def via_node(component: str) -> str | None:
    """Processes of apps (``.../node/app/proc``) are correlated under their node."""
    return NODE if component.startswith(NODE + "/") else None


@dataclass(frozen=True)
class Case:
    """Run ``steps``; the correlations of the last step must match."""

    id: str
    steps: tuple[Step, ...]
    verdicts: tuple[Verdict, ...]
    out: tuple[tuple[str, ErrorKind, RecoveryLevel | None], ...] = ()
    reason: str = ""
    policy: CorrelationPolicy = DEFAULT
    container_of: Callable[[str], str | None] | None = None


CASES = [
    # --- rule 1: stale ---
    Case(
        "report_after_recovery_started_is_discarded_as_stale",
        (Recovery(A, 12.3), Report(rep(A, 12.1), 12.4)),
        (DISCARD,),
        reason=f"discarded: stale, recovery of {A} started at 12.300 after the cause at 12.100",
    ),
    Case(
        "report_observed_at_the_recovery_start_is_stale",
        (Recovery(A, 5.0), Report(rep(A, 5.0), 5.1)),
        (DISCARD,),
        reason="stale",
    ),
    Case(
        "report_about_app_inside_recovering_node_is_discarded_as_stale",
        (Recovery(NODE, 5.0), Report(rep(B, 4.9), 5.2)),
        (DISCARD,),
        reason=f"stale, recovery of {NODE} (containing {B}) started at 5.000",
    ),
    Case(
        "report_observed_after_recovery_started_is_forwarded",
        (Recovery(A, 5.0), Report(rep(A, 5.2), 5.3)),
        (FORWARD,),
        out=((A, CRASH, None),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "report_about_node_after_recovery_of_one_app_is_not_stale",
        (Recovery(A, 5.0), Report(rep(NODE, 4.0, HANG), 5.1)),
        (FORWARD,),
        out=((NODE, HANG, None),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "older_recovery_does_not_shorten_a_newer_one",
        (Recovery(A, 5.0), Recovery(A, 3.0), Report(rep(A, 4.0), 5.1)),
        (DISCARD,),
        reason="started at 5.000",
    ),
    Case(
        "held_report_that_became_stale_is_discarded_on_tick",
        (seen(A, 1.0), Recovery(A, 1.02), Tick(1.1)),
        (DISCARD,),
        reason=f"discarded: stale, recovery of {A} started at 1.020",
    ),
    # --- rule 2: redundant ---
    Case(
        "duplicate_within_window_is_discarded",
        (seen(A, 0.0), seen(A, 0.5)),
        (DISCARD,),
        reason=f"discarded: redundant, crash of {A} already reported at 0.000",
        policy=NO_CONTAINERS,
    ),
    Case(
        "duplicate_of_held_report_is_discarded",
        (seen(A, 0.0), seen(A, 0.01)),
        (DISCARD,),
        reason="redundant",
    ),
    Case(
        "same_kind_after_duplicate_window_is_forwarded",
        (seen(A, 0.0), seen(A, 1.5)),
        (FORWARD,),
        out=((A, CRASH, None),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "other_kind_about_same_component_is_not_a_duplicate",
        (seen(A, 0.0), seen(A, 0.1, HANG)),
        (FORWARD,),
        out=((A, HANG, None),),
        policy=NO_CONTAINERS,
    ),
    # --- rule 3: holding and re-attribution ---
    Case(
        "crash_is_held_when_node_has_no_other_reports",
        (seen(A, 0.0),),
        (HOLD,),
        reason=f"held: crash of {A} for 0.050 s, waiting for reports about other children of "
        f"{NODE}",
    ),
    Case(
        "held_report_released_on_tick",
        (seen(A, 0.0), Tick(0.05)),
        (FORWARD,),
        out=((A, CRASH, None),),
        reason=f"forwarded: crash of {A} after a 0.050 s hold",
    ),
    Case(
        "tick_before_hold_expires_releases_nothing",
        (seen(A, 0.0), Tick(0.04)),
        (),
    ),
    Case(
        "report_about_other_component_is_forwarded",
        (seen(A, 0.0), seen(OTHER, 0.01), Tick(0.2)),
        (FORWARD, FORWARD),
        out=((A, CRASH, None), (OTHER, CRASH, None)),
    ),
    Case(
        "report_about_top_level_component_is_forwarded_at_once",
        (seen("shelf1", 0.0, HARDWARE),),
        (FORWARD,),
        out=(("shelf1", HARDWARE, None),),
    ),
    Case(
        "two_apps_on_one_node_within_window_are_reattributed_to_node",
        (seen(A, 0.0), seen(B, 0.02)),
        (REATTRIBUTE,),
        out=((NODE, CRASH, RESTART),),
        reason=f"re-attributed: reports about 2 children of {NODE} ({A}, {B}) within 0.500 s "
        f"blame {NODE}; forwarding crash, recommending restart",
    ),
    Case(
        "reattributed_mixed_kinds_become_error_at_the_worst_level",
        (seen(A, 0.0, HANG), seen(B, 0.01, HARDWARE)),
        (REATTRIBUTE,),
        out=((NODE, ERROR, FAILOVER),),
    ),
    Case(
        "held_reports_folded_into_node_are_not_released_on_tick",
        (seen(A, 0.0), seen(B, 0.01), Tick(1.0)),
        (),
    ),
    Case(
        "child_report_after_node_was_blamed_is_discarded_as_redundant",
        (seen(A, 0.0), seen(B, 0.01), seen(C, 0.2)),
        (DISCARD,),
        reason=f"discarded: redundant, {NODE} was blamed at 0.010",
    ),
    Case(
        "child_report_after_blame_window_is_held_again",
        (seen(A, 0.0), seen(B, 0.01), Tick(0.1), seen(C, 0.6)),
        (HOLD,),
    ),
    Case(
        "apps_on_different_nodes_are_not_reattributed",
        (seen(A, 0.0), seen(OTHER, 0.01)),
        (HOLD,),
    ),
    Case(
        "second_app_after_container_window_is_not_reattributed",
        (seen(A, 0.0), Tick(0.1), seen(B, 0.6)),
        (HOLD,),
    ),
    Case(
        "second_app_within_window_after_first_was_forwarded_is_reattributed",
        (seen(A, 0.0), Tick(0.1), seen(B, 0.3)),
        (REATTRIBUTE,),
        out=((NODE, CRASH, RESTART),),
    ),
    Case(
        "stale_held_app_does_not_count_toward_reattribution",
        (seen(A, 1.0), Recovery(A, 1.01), seen(B, 1.02)),
        (HOLD,),
    ),
    Case(
        "zero_hold_time_forwards_at_once",
        (seen(A, 0.0),),
        (FORWARD,),
        out=((A, CRASH, None),),
        policy=NO_HOLD,
    ),
    Case(
        "zero_hold_time_still_reattributes_the_second_app",
        (seen(A, 0.0), seen(B, 0.1)),
        (REATTRIBUTE,),
        out=((NODE, CRASH, RESTART),),
        policy=NO_HOLD,
    ),
    Case(
        "threshold_one_forwards_at_once",
        (seen(A, 0.0), seen(B, 0.01)),
        (FORWARD,),
        out=((B, CRASH, None),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "threshold_three_holds_the_second_app",
        (seen(A, 0.0), seen(B, 0.01)),
        (HOLD,),
        policy=THREE_CHILDREN,
    ),
    Case(
        "threshold_three_reattributes_the_third_app",
        (seen(A, 0.0), seen(B, 0.01), seen(C, 0.02, HANG)),
        (REATTRIBUTE,),
        out=((NODE, ERROR, RESTART),),
        policy=THREE_CHILDREN,
    ),
    Case(
        "two_reports_about_one_app_are_not_two_children",
        (seen(A, 0.0), seen(A, 0.01, HANG)),
        (HOLD,),
    ),
    Case(
        "reattribution_redundant_with_a_recent_node_report_is_discarded",
        (seen(NODE, 0.0, HANG), Tick(0.1), seen(A, 0.2, HANG), seen(B, 0.21, HANG)),
        (DISCARD,),
        reason=f"hang of {NODE} was already reported at 0.000",
    ),
    Case(
        "blame_on_a_container_recovered_after_the_causes_is_discarded_as_stale",
        (Recovery("shelf1/power1", 5.0), Report(rep(A, 4.0), 5.1), Report(rep(B, 4.01), 5.1)),
        (DISCARD,),
        reason="discarded: shelf1/power1 is stale, recovery of shelf1/power1 started at 5.000",
        container_of=lambda _: "shelf1/power1",  # a grouping outside the containment tree
    ),
    Case(
        "processes_are_reattributed_to_the_node_chosen_by_container_of",
        (seen(f"{A}/p1", 0.0), seen(f"{B}/p2", 0.01)),
        (REATTRIBUTE,),
        out=((NODE, CRASH, RESTART),),
        container_of=via_node,
    ),
    # --- rule 4: escalation ---
    Case(
        "third_report_in_window_escalates_to_failover",
        (seen(A, 0.0), seen(A, 2.0), seen(A, 4.0)),
        (ESCALATE,),
        out=((A, CRASH, FAILOVER),),
        reason=f"escalated: crash of {A}, recommending failover instead of restart: 2 earlier "
        f"reports about {A} forwarded within 30.000 s",
        policy=NO_CONTAINERS,
    ),
    Case(
        "third_report_in_window_escalates_when_released_after_hold",
        (seen(A, 0.0), Tick(0.1), seen(A, 2.0), Tick(2.1), seen(A, 4.0), Tick(4.1)),
        (ESCALATE,),
        out=((A, CRASH, FAILOVER),),
    ),
    Case(
        "further_reports_in_window_do_not_compound_escalation",
        (seen(A, 0.0), seen(A, 2.0), seen(A, 4.0), seen(A, 6.0)),
        (ESCALATE,),
        out=((A, CRASH, FAILOVER),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "escalation_is_capped_at_reboot_node",
        (
            seen(A, 0.0, HARDWARE),
            seen(A, 2.0, HARDWARE),
            seen(A, 4.0, HARDWARE),
            Report(rep(A, 6.0, HARDWARE, REBOOT), 6.0),
        ),
        (ESCALATE,),
        out=((A, HARDWARE, REBOOT),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "reports_spread_beyond_escalate_window_do_not_escalate",
        (seen(A, 0.0), seen(A, 20.0), seen(A, 40.0)),
        (FORWARD,),
        out=((A, CRASH, None),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "escalation_raises_above_the_reporters_recommendation",
        (seen(A, 0.0, ERROR), seen(A, 2.0, ERROR), Report(rep(A, 4.0, ERROR, FAILOVER), 4.0)),
        (ESCALATE,),
        out=((A, ERROR, REBOOT),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "repeated_errors_escalate_from_soft_reset_to_restart",
        (seen(A, 0.0, ERROR), seen(A, 2.0, ERROR), seen(A, 4.0, ERROR)),
        (ESCALATE,),
        out=((A, ERROR, RESTART),),
        policy=NO_CONTAINERS,
    ),
    Case(
        "node_blamed_a_third_time_in_window_is_escalated",
        (
            *(seen(A, 0.0), seen(B, 0.01)),
            *(seen(A, 2.0), seen(B, 2.01)),
            *(seen(A, 4.0), seen(B, 4.01)),
        ),
        (REATTRIBUTE,),
        out=((NODE, CRASH, FAILOVER),),
        reason="recommending failover instead of restart",
    ),
    Case(
        "zero_escalate_count_never_escalates",
        (seen(A, 0.0), seen(A, 2.0), seen(A, 4.0)),
        (FORWARD,),
        out=((A, CRASH, None),),
        policy=CorrelationPolicy(container_threshold=1, escalate_count=0),
    ),
]


def run(
    steps: Sequence[Step],
    policy: CorrelationPolicy,
    container_of: Callable[[str], str | None] | None = None,
) -> list[list[Correlation]]:
    correlator = Correlator(policy) if container_of is None else Correlator(policy, container_of)
    return [apply(correlator, step) for step in steps]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_correlation(case: Case) -> None:
    last = run(case.steps, case.policy, case.container_of)[-1]
    assert tuple(c.verdict for c in last) == case.verdicts
    out = tuple((r.component, r.kind, r.recommended) for c in last for r in c.reports)
    assert out == case.out
    if case.reason:
        assert case.reason in last[0].reason


def test_reattributed_report_names_its_children_and_earliest_cause() -> None:
    (blame,) = run([seen(A, 0.03), seen(B, 0.01)], DEFAULT)[-1][0].reports
    assert blame.observed_at == 0.01
    assert blame.source == "cec"
    assert A in blame.detail and B in blame.detail


def test_reattribution_settles_the_held_reports_it_folds() -> None:
    first, second = seen(A, 0.0), seen(B, 0.01)
    (decision,) = run([first, second], DEFAULT)[-1]
    assert decision.settles == (first.report, second.report)


def test_next_deadline_is_the_earliest_hold_expiry() -> None:
    cec = Correlator(DEFAULT)
    assert cec.next_deadline() is None
    cec.report(rep(A, 0.0), 0.0)
    cec.report(rep(OTHER, 0.01), 0.01)
    assert cec.next_deadline() == pytest.approx(0.05)
    assert [c.verdict for c in cec.tick(0.05)] == [FORWARD]
    assert cec.next_deadline() == pytest.approx(0.06)
    assert [c.reports[0].component for c in cec.tick(10.0)] == [OTHER]
    assert cec.next_deadline() is None


def test_recovery_of_node_replaces_older_recoveries_inside_it() -> None:
    cec = Correlator(DEFAULT)
    cec.recovery_started(RecoveryInitiated(A, RESTART, 1.0))
    cec.recovery_started(RecoveryInitiated(B, RESTART, 9.0))
    cec.recovery_started(RecoveryInitiated(NODE, REBOOT, 5.0))
    cec.recovery_started(RecoveryInitiated(C, RESTART, 4.0))  # covered by the node's
    assert cec.snapshot()["recoveries"] == {B: 9.0, NODE: 5.0}


def test_history_is_pruned_to_its_windows() -> None:
    cec = Correlator(DEFAULT)
    for i in range(1000):
        now = i * 0.5
        cec.report(rep(f"shelf1/slot{i % 7}/node/app{i % 5}", now, HANG), now)
        cec.tick(now)
    state = cec.snapshot()
    assert sum(len(v) for v in state["forwarded"].values()) <= 7 * 5 * 61
    cec.tick(1e9)  # releases the last held report, which is then remembered as forwarded
    cec.tick(2e9)
    state = cec.snapshot()
    assert state["held"] == [] and state["last_seen"] == [] and state["forwarded"] == {}
    assert state["children"] == {} and state["blamed"] == {}


def test_snapshot_is_json_safe_and_continues_the_same_decisions() -> None:
    cec = Correlator(DEFAULT)
    cec.recovery_started(RecoveryInitiated(OTHER, RESTART, 0.5))
    cec.report(rep(A, 1.0, HANG, RESTART), 1.0)
    data = json.loads(json.dumps(cec.snapshot()))
    copy = Correlator.from_snapshot(DEFAULT, data)
    assert copy.snapshot() == cec.snapshot()
    assert copy.held() == cec.held()
    assert copy.report(rep(B, 1.01), 1.01) == cec.report(rep(B, 1.01), 1.01)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {**Correlator(DEFAULT).snapshot(), "version": 99},
        {**Correlator(DEFAULT).snapshot(), "last_seen": [["x", "melted", 1.0]]},
        {**Correlator(DEFAULT).snapshot(), "forwarded": {"x": [[1.0, 9]]}},
        {**Correlator(DEFAULT).snapshot(), "held": [{"report": {}}]},
    ],
    ids=["empty", "unknown_version", "unknown_kind", "unknown_level", "truncated_held"],
)
def test_malformed_snapshot_is_a_model_error(data: dict[str, Any]) -> None:
    with pytest.raises(ModelError, match="CEC snapshot"):
        Correlator.from_snapshot(DEFAULT, data)


# --- properties -------------------------------------------------------------------------

COMPONENTS = [
    "shelf1",
    "shelf1/slot1",
    NODE,
    A,
    B,
    C,
    f"{A}/p1",
    "shelf1/slot2/node",
    OTHER,
]
FAR_FUTURE = 1e9

policies = st.builds(
    CorrelationPolicy,
    duplicate_window=st.sampled_from([0.0, 0.2, 1.0]),
    container_window=st.sampled_from([0.1, 0.5, 2.0]),
    container_threshold=st.sampled_from([1, 2, 3]),
    hold_time=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    escalate_count=st.sampled_from([0, 1, 2, 3]),
    escalate_window=st.sampled_from([1.0, 30.0]),
)


@st.composite
def scenarios(draw: st.DrawFn) -> list[Step]:
    """Reports, recovery starts and ticks at non-decreasing times, with delayed reports."""
    steps: list[Step] = []
    now_ms = 0
    for _ in range(draw(st.integers(0, 40))):
        now_ms += draw(st.sampled_from([0, 1, 10, 40, 60, 300, 800, 2000]))
        now = now_ms / 1000
        choice = draw(st.sampled_from(["report", "report", "report", "recovery", "tick"]))
        if choice == "tick":
            steps.append(Tick(now))
            continue
        # apps of one node are drawn most often, so that re-attribution happens
        component = draw(st.sampled_from([*COMPONENTS, A, B, C, A, B, C]))
        at = (now_ms - draw(st.sampled_from([0, 5, 30, 200, 1500]))) / 1000
        if choice == "recovery":
            steps.append(Recovery(component, at))
        else:
            kind = draw(st.sampled_from(list(ErrorKind)))
            level = draw(st.sampled_from([None, *RecoveryLevel]))
            steps.append(Report(rep(component, at, kind, level), now))
    return steps


def decide_all(cec: Correlator, steps: Sequence[Step]) -> list[Correlation]:
    return [c for step in [*steps, Tick(FAR_FUTURE)] for c in apply(cec, step)]


@settings(max_examples=300, deadline=None)
@given(policies, scenarios())
def test_every_report_is_settled_exactly_once(policy: CorrelationPolicy, steps: list[Step]) -> None:
    decisions = decide_all(Correlator(policy), steps)
    reported = Counter(s.report for s in steps if isinstance(s, Report))
    assert Counter(r for c in decisions for r in c.settles) == reported
    for c in decisions:
        if c.verdict in (HOLD, DISCARD):
            assert not c.reports
        else:
            assert len(c.reports) == 1
        if c.verdict is HOLD:
            assert not c.settles
        if c.verdict is FORWARD:
            assert c.reports == c.settles
        if c.verdict is REATTRIBUTE:
            (blame,) = c.reports
            assert all(is_within(r.component, blame.component) for r in c.settles)


@settings(max_examples=300, deadline=None)
@given(policies, scenarios())
def test_no_report_forwarded_whose_cause_precedes_a_recovery_of_it(
    policy: CorrelationPolicy, steps: list[Step]
) -> None:
    cec = Correlator(policy)
    recoveries: list[Recovery] = []
    for step in [*steps, Tick(FAR_FUTURE)]:
        if isinstance(step, Recovery):
            recoveries.append(step)
        for c in apply(cec, step):
            for r in c.reports:
                for rec in recoveries:
                    if is_within(r.component, rec.component):
                        assert r.observed_at > rec.at, c.reason


@settings(max_examples=200, deadline=None)
@given(policies, scenarios())
def test_nothing_is_held_or_remembered_after_ticks_far_in_the_future(
    policy: CorrelationPolicy, steps: list[Step]
) -> None:
    cec = Correlator(policy)
    decide_all(cec, steps)
    assert cec.held() == ()
    assert cec.next_deadline() is None
    cec.tick(2 * FAR_FUTURE)  # forgets what the last tick forwarded
    state = cec.snapshot()
    assert state["held"] == [] and state["last_seen"] == [] and state["forwarded"] == {}


@settings(max_examples=200, deadline=None)
@given(policies, scenarios(), st.data())
def test_snapshot_round_trip_preserves_decisions(
    policy: CorrelationPolicy, steps: list[Step], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(steps)))
    original = Correlator(policy)
    for step in steps[:split]:
        apply(original, step)
    restored = Correlator.from_snapshot(policy, json.loads(json.dumps(original.snapshot())))
    assert decide_all(restored, steps[split:]) == decide_all(original, steps[split:])
    assert restored.snapshot() == original.snapshot()


def test_report_after_recovery_started_is_fresh_evidence_not_a_duplicate() -> None:
    """A crash seen after the restart began means the restart failed: it must reach the CRIM."""
    cec = Correlator(NO_CONTAINERS)
    first = cec.report(rep(A, 1.0), 1.0)
    assert first.verdict is FORWARD
    cec.recovery_started(RecoveryInitiated(A, RESTART, 1.0))
    again = cec.report(rep(A, 1.3), 1.3)
    assert again.verdict in (FORWARD, ESCALATE)
    assert again.reports and again.reports[0].component == A


def test_failover_clears_escalation_history() -> None:
    cec = Correlator(NO_CONTAINERS)
    for t in (0.0, 1.0):
        cec.report(rep(A, t), t)
    cec.recovery_started(RecoveryInitiated(A, FAILOVER, 1.5))
    after = cec.report(rep(A, 2.0), 2.0)
    assert after.verdict is FORWARD


# --- definitive errors ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ErrorKind.HARD, ErrorKind.MISCONFIGURED])
def test_a_definitive_error_is_forwarded_at_once_never_blamed_on_its_node(kind: ErrorKind) -> None:
    correlator = Correlator(DEFAULT)
    out = correlator.report(rep(A, 1.0, kind), 1.0)
    assert out.verdict is FORWARD and out.reports == (rep(A, 1.0, kind),)
    assert correlator.held() == ()
    # another child of the node failing the same way is its own verdict, not the node's fault
    out = correlator.report(rep(B, 1.01, kind), 1.01)
    assert out.verdict is FORWARD and [r.component for r in out.reports] == [B]
    # and a crash of a third child is not re-attributed on their account
    out = correlator.report(rep(C, 1.02, CRASH), 1.02)
    assert out.verdict is HOLD
    assert [c.verdict for c in correlator.tick(1.2)] == [FORWARD]


def test_a_repeated_definitive_error_is_never_escalated() -> None:
    correlator = Correlator(CorrelationPolicy(escalate_count=2, duplicate_window=0.01))
    levels = []
    for t in (1.0, 2.0, 3.0):
        out = correlator.report(rep(OTHER, t, ErrorKind.HARD), t)
        levels += [r.recommended for r in out.reports]
    assert out.verdict is FORWARD and levels == [None, None, None]
