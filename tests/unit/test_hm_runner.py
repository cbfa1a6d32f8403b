"""The HM audit runner on a fake clock, with callback probes the tests script."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest

from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec
from haos.errors import ModelError
from haos.model.reports import ErrorKind, ErrorReport
from haos.services.agent.daemon import HmRegistry
from haos.services.hm.probes import CallbackProbe, CommandProbe, HttpProbe
from haos.services.hm.runner import AuditRunner
from haoslab.testing.clock import FakeClock, until

T0 = 1000.0
PING = AuditSpec("web", "ping", period=10.0, timeout=2.0, kind="callback", target="ping")


class Scripted:
    """An audit callback: answers from ``answers`` in turn, or hangs when told to."""

    def __init__(self, *answers: tuple[bool, str] | str) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.cancelled = 0

    async def __call__(self) -> tuple[bool, str]:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else (True, "")
        if answer == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if answer == "raise":
            raise RuntimeError("boom")
        assert isinstance(answer, tuple)
        return answer


class Rig:
    def __init__(self, *callbacks: tuple[str, Scripted]) -> None:
        self.clock = FakeClock(T0)
        self.monitor = AuditMonitor()
        self.callbacks = CallbackProbe()
        for name, cb in callbacks:
            self.callbacks.add("web", name, cb)
        self.reports: list[ErrorReport] = []
        self.runner = AuditRunner(
            self.monitor,
            {"callback": self.callbacks, "command": CommandProbe(), "http": HttpProbe()},
            self.reports.append,
            self.clock,
        )

    def outcome(self, component: str = "web", name: str = "ping") -> str | None:
        row = next(
            r for r in self.monitor.status() if (r["component"], r["name"]) == (component, name)
        )
        return row["last_outcome"]

    async def idle(self) -> None:
        """Until the runner sleeps with nothing in flight."""
        await until(lambda: self.clock.sleeping and not self.runner.in_flight)


def run(body: Callable[[Rig], Awaitable[None]], rig: Rig) -> None:
    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(rig.runner.run())
            try:
                await asyncio.wait_for(body(rig), timeout=10.0)
            finally:
                task.cancel()

    asyncio.run(main())


def test_passing_callback_audit_gives_no_report_and_runs_each_period() -> None:
    cb = Scripted()

    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: rig.outcome() == "ok")
        await rig.idle()
        assert rig.clock.waiting_until == T0 + 10.0  # next run, one period after the start
        rig.clock.advance(10.0)
        await until(lambda: cb.calls == 2)
        await until(lambda: rig.outcome() == "ok" and not rig.runner.in_flight)
        assert rig.reports == []

    run(body, Rig(("ping", cb)))


def test_failing_callback_audit_is_reported_failed_with_its_detail() -> None:
    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: bool(rig.reports))
        [report] = rig.reports
        assert report.kind is ErrorKind.AUDIT_FAILED
        assert (report.component, report.observed_at, report.source) == ("web", T0, "hm")
        assert "queue full" in report.detail

    run(body, Rig(("ping", Scripted((False, "queue full")))))


def test_callback_that_raises_is_a_failed_audit_and_the_runner_goes_on() -> None:
    cb = Scripted("raise", (True, ""))

    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: bool(rig.reports))
        assert rig.reports[0].kind is ErrorKind.AUDIT_FAILED
        assert "RuntimeError: boom" in rig.reports[0].detail
        rig.clock.advance(10.0)
        await until(lambda: cb.calls == 2 and rig.outcome() == "ok")
        assert len(rig.reports) == 1

    run(body, Rig(("ping", cb)))


def test_missing_callback_is_a_failed_audit() -> None:
    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: bool(rig.reports))
        assert rig.reports[0].kind is ErrorKind.AUDIT_FAILED
        assert "no callback registered as 'ping'" in rig.reports[0].detail

    run(body, Rig())


def test_hanging_audit_is_overdue_at_its_deadline_and_its_run_is_cancelled() -> None:
    cb = Scripted("hang", (True, ""))

    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: cb.calls == 1 and rig.clock.sleeping)
        assert rig.clock.waiting_until == T0 + 2.0  # wakes exactly at the run's deadline
        rig.clock.advance(1.999)
        await until(lambda: rig.clock.sleeping)
        assert rig.reports == []
        rig.clock.advance(0.001)
        await until(lambda: bool(rig.reports) and cb.cancelled == 1)
        [report] = rig.reports
        assert report.kind is ErrorKind.AUDIT_OVERDUE
        assert report.observed_at == T0 + 2.0
        assert rig.runner.in_flight == []
        # One missed run, one report; the next run passes and clears the overdue state.
        rig.clock.advance(8.0)
        await until(lambda: cb.calls == 2 and rig.outcome() == "ok")
        assert len(rig.reports) == 1
        assert rig.monitor.healthy_this_round(rig.clock.now())

    run(body, Rig(("ping", cb)))


def test_result_that_arrives_at_the_deadline_is_not_taken_as_in_time() -> None:
    gate = asyncio.Event()
    calls = 0

    async def late() -> tuple[bool, str]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return False, "late failure"

    async def body(rig: Rig) -> None:
        rig.callbacks.add("web", "ping", late)
        rig.runner.register(PING)
        await until(lambda: calls == 1 and rig.clock.sleeping)
        # The clock passes the deadline while the runner is busy elsewhere: the result
        # comes first, yet it is too late and must not count as this run's outcome.
        rig.clock.t += 2.0
        gate.set()
        await until(lambda: bool(rig.reports))
        assert [r.kind for r in rig.reports] == [ErrorKind.AUDIT_OVERDUE]

    run(body, Rig())


def test_registering_wakes_the_sleeping_runner_at_once() -> None:
    cb = Scripted()

    async def body(rig: Rig) -> None:
        await until(lambda: rig.clock.sleeping)
        assert rig.clock.waiting_until is None  # nothing to do: sleeps until woken
        rig.runner.register(PING)
        await until(lambda: cb.calls == 1)
        assert rig.clock.now() == T0

    run(body, Rig(("ping", cb)))


def test_short_period_after_a_slow_run_moves_the_next_run_earlier() -> None:
    # period < timeout: the loop sleeps until the run's deadline, the result must wake it.
    spec = AuditSpec("web", "ping", period=1.0, timeout=5.0, kind="callback", target="ping")
    cb = Scripted()

    async def body(rig: Rig) -> None:
        rig.runner.register(spec)
        await until(lambda: cb.calls == 1)
        await rig.idle()
        assert rig.clock.waiting_until == T0 + 1.0

    run(body, Rig(("ping", cb)))


def test_suspend_cancels_the_run_and_resume_audits_again() -> None:
    cb = Scripted("hang", (True, ""))

    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: cb.calls == 1 and rig.clock.sleeping)
        rig.runner.suspend("web")
        await until(lambda: cb.cancelled == 1 and rig.clock.sleeping)
        rig.clock.advance(5.0)  # past the old deadline: nothing is overdue while suspended
        await rig.idle()
        assert rig.reports == []
        assert rig.clock.waiting_until is None
        rig.runner.resume("web")
        await until(lambda: cb.calls == 2 and rig.outcome() == "ok")
        assert rig.reports == []

    run(body, Rig(("ping", cb)))


def test_reregistering_replaces_the_run_in_flight() -> None:
    cb = Scripted("hang", (True, ""))

    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: cb.calls == 1 and rig.clock.sleeping)
        rig.clock.advance(1.0)
        rig.runner.register(PING)
        await until(lambda: cb.cancelled == 1 and cb.calls == 2 and rig.outcome() == "ok")
        rig.clock.advance(1.5)  # past the first run's deadline: it was replaced, not overdue
        await rig.idle()
        assert rig.reports == []

    run(body, Rig(("ping", cb)))


def test_unregister_cancels_the_run_and_stops_auditing() -> None:
    cb = Scripted("hang")

    async def body(rig: Rig) -> None:
        rig.runner.register(PING)
        await until(lambda: cb.calls == 1 and rig.clock.sleeping)
        rig.runner.unregister("web")
        await until(lambda: cb.cancelled == 1)
        await rig.idle()
        assert rig.clock.waiting_until is None
        assert rig.monitor.status() == []

    run(body, Rig(("ping", cb)))


def test_audits_given_to_the_monitor_run_at_start() -> None:
    cb = Scripted()
    rig = Rig(("ping", cb))
    rig.monitor = AuditMonitor([PING])
    rig.runner = AuditRunner(
        rig.monitor, {"callback": rig.callbacks}, rig.reports.append, rig.clock
    )

    async def body(rig: Rig) -> None:
        await until(lambda: cb.calls == 1 and rig.outcome() == "ok")

    run(body, rig)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (AuditSpec("web", "x", 1.0, 1.0, kind="smoke", target="x"), "unknown kind 'smoke'"),
        (AuditSpec("web", "x", 1.0, 1.0, kind="command", target=""), "empty command line"),
        (AuditSpec("web", "x", 1.0, 1.0, kind="command", target="'open"), "bad command line"),
        (
            AuditSpec("web", "x", 1.0, 1.0, kind="http", target="https://127.0.0.1/health"),
            "http:// URLs only, not 'https://'",
        ),
        (
            AuditSpec("web", "x", 1.0, 1.0, kind="http", target="http://example.com/"),
            "must target this node (127.0.0.1, ::1 or localhost)",
        ),
        (AuditSpec("web", "x", 1.0, 1.0, kind="http", target="http://[::1]:99999/"), "bad URL"),
        (AuditSpec("web", "x", 1.0, 1.0, kind="callback", target=""), "no callback name"),
        (AuditSpec("web", "x", 1.0, 1.0, target="/bin/echo a\0b"), "must not contain NUL"),
        (AuditSpec("web", "x", 1.0, 1.0, target="/bin/echo 'open"), "No closing quotation"),
        (
            AuditSpec("web", "x", 0.0, 1.0, kind="callback", target="x"),
            "period must be a positive number",
        ),
    ],
)
def test_register_refuses_audits_that_can_never_run(spec: AuditSpec, message: str) -> None:
    rig = Rig()
    with pytest.raises(ModelError, match=re.escape(message)):
        rig.runner.register(spec)
    assert rig.monitor.status() == []


def test_http_probe_accepts_loopback_urls() -> None:
    probe = HttpProbe()
    for target in ("http://127.0.0.1:8080/health", "http://localhost/", "http://[::1]:1/x?y=1"):
        probe.check(AuditSpec("web", "x", 1.0, 1.0, kind="http", target=target))


def test_a_configured_callback_audit_runs_the_callback_its_application_registered() -> None:
    """``[[audits]] kind = "callback", target = "ping"`` names the audit the component's own
    application registers; another component's "ping" is not it."""
    configured = AuditSpec("db", "alive", period=10.0, timeout=2.0, kind="callback", target="ping")
    mine, theirs = Scripted((True, "db answers")), Scripted((False, "web is down"))

    async def body(rig: Rig) -> None:
        registry = HmRegistry(rig.runner, rig.callbacks)
        registry.add(PING, theirs)  # web's application registers its "ping"
        rig.runner.register(configured)
        await until(lambda: rig.outcome("db", "alive") == "failed")
        assert rig.reports[-1].detail.endswith("no callback registered as 'ping'")
        assert theirs.calls == 1  # web's own audit ran, db's did not borrow it
        registry.add(AuditSpec("db", "ping", 10.0, 2.0, "callback", "ping"), mine)
        rig.clock.advance(10.0)
        await until(lambda: rig.outcome("db", "alive") == "ok")
        assert mine.calls >= 1

    run(body, Rig())
