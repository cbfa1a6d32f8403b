"""The HM audit runner against the real things: processes, a local HTTP server, a socket.

Real time and the real event loop; nothing sleeps to synchronise: every wait is for a
condition, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from haos.clock import MonotonicClock
from haos.cluster.hm.policy import AuditMonitor
from haos.config.model import AuditSpec
from haos.model.reports import ErrorKind, ErrorReport
from haos.services.hm.probes import CallbackProbe, CommandProbe, HttpProbe, Probe
from haos.services.hm.runner import AuditRunner
from haos.services.hm.watchdog import SdNotifier, SystemdWatchdog, WatchdogPetter
from haoslab.testing.clock import until as _until
from haoslab.testing.procs import alive

SLACK = 1.0  # how late an overdue report may come, beyond the audit's timeout


class Rig:
    def __init__(self) -> None:
        self.clock = MonotonicClock()
        self.monitor = AuditMonitor()
        self.callbacks = CallbackProbe()
        self.reports: asyncio.Queue[tuple[float, ErrorReport]] = asyncio.Queue()
        probes: dict[str, Probe] = {
            "command": CommandProbe(),
            "http": HttpProbe(),
            "callback": self.callbacks,
        }
        self.runner = AuditRunner(self.monitor, probes, self._report, self.clock)

    def _report(self, report: ErrorReport) -> None:
        self.reports.put_nowait((self.clock.now(), report))

    async def next_report(self, timeout: float) -> tuple[float, ErrorReport]:
        return await asyncio.wait_for(self.reports.get(), timeout)

    def outcome(self, component: str, name: str) -> str | None:
        for row in self.monitor.status():
            if (row["component"], row["name"]) == (component, name):
                return row["last_outcome"]
        raise KeyError((component, name))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """:func:`haoslab.testing.clock.until` with room for subprocess audits on a busy machine."""
    await _until(predicate, timeout)


def with_runner(body: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        rig = Rig()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(rig.runner.run())
            try:
                await asyncio.wait_for(body(rig), timeout=20.0)
            finally:
                task.cancel()

    asyncio.run(main())


def command(name: str, target: str, timeout: float = 2.0) -> AuditSpec:
    return AuditSpec("app", name, period=60.0, timeout=timeout, kind="command", target=target)


# --- command audits ---------------------------------------------------------------------


def test_passing_command_audit_gives_no_report() -> None:
    async def body(rig: Rig) -> None:
        rig.runner.register(command("true", "/bin/true"))
        await until(lambda: rig.outcome("app", "true") == "ok")
        assert rig.reports.empty()

    with_runner(body)


def test_failing_command_audit_is_reported_failed() -> None:
    async def body(rig: Rig) -> None:
        rig.runner.register(command("false", "/bin/false"))
        _, report = await rig.next_report(timeout=5.0)
        assert report.kind is ErrorKind.AUDIT_FAILED
        assert report.component == "app"
        assert "/bin/false exited 1" in report.detail

    with_runner(body)


def test_command_output_explains_the_failure() -> None:
    async def body(rig: Rig) -> None:
        rig.runner.register(command("df", "/bin/sh -c 'echo checking; echo disk full >&2; exit 3'"))
        _, report = await rig.next_report(timeout=5.0)
        assert report.detail.endswith("/bin/sh exited 3: disk full")

    with_runner(body)


def test_missing_program_is_a_failed_audit() -> None:
    async def body(rig: Rig) -> None:
        rig.runner.register(command("nope", "/nonexistent/audit --now"))
        _, report = await rig.next_report(timeout=5.0)
        assert report.kind is ErrorKind.AUDIT_FAILED
        assert "cannot start /nonexistent/audit" in report.detail

    with_runner(body)


def test_commands_run_with_a_clean_environment_and_closed_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "env"

    async def body(rig: Rig) -> None:
        script = f"/bin/sh -c 'env > {out}; cat; echo done >> {out}'"
        rig.runner.register(command("env", script))
        await until(lambda: rig.outcome("app", "env") == "ok")
        lines = out.read_text().splitlines()
        assert lines[-1] == "done"  # cat saw end of input at once
        names = {line.split("=", 1)[0] for line in lines[:-1]}
        assert "HOME" not in names and "PATH" in names

    monkeypatch.setenv("HAOS_TEST_SECRET", "x")
    with_runner(body)
    assert "HAOS_TEST_SECRET" not in out.read_text()


def test_hanging_command_is_overdue_in_time_and_its_process_group_is_killed(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    timeout = 0.5

    async def body(rig: Rig) -> None:
        # The shell and a helper it started: both must die with the run.
        script = f"/bin/sh -c 'sleep 30 & echo $$ $! > {pids}; wait'"
        registered = rig.clock.now()
        rig.runner.register(command("hang", script, timeout=timeout))
        arrived, report = await rig.next_report(timeout=timeout + 5.0)
        assert report.kind is ErrorKind.AUDIT_OVERDUE
        assert registered <= report.observed_at - timeout <= registered + SLACK
        assert arrived - registered <= timeout + SLACK
        shell, sleeper = (int(p) for p in pids.read_text().split())
        await until(lambda: not alive(shell) and not alive(sleeper), timeout=5.0)
        assert rig.runner.in_flight == []

    with_runner(body)


def test_command_probe_alone_kills_at_its_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    spec = command("hang", f"/bin/sh -c 'echo $$ > {pid_file}; exec sleep 30'", timeout=0.3)

    async def main() -> tuple[bool, str]:
        return await asyncio.wait_for(CommandProbe().run(spec), timeout=5.0)

    ok, detail = asyncio.run(main())
    assert not ok and detail == "/bin/sh killed after 0.3s"
    assert not alive(int(pid_file.read_text()))


# --- HTTP audits -------------------------------------------------------------------------


@asynccontextmanager
async def http_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """127.0.0.1 server: /ok -> 200, /broken -> 500, /hang never answers (until released)."""
    release = asyncio.Event()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            request = (await reader.readline()).decode()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            path = request.split()[1]
            if path == "/hang":
                await release.wait()
                return
            status = "200 OK" if path == "/ok" else "500 Internal Server Error"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            yield port, release
            release.set()
            await until(lambda: not handlers)
    finally:
        release.set()


def http(name: str, url: str, timeout: float = 2.0) -> AuditSpec:
    return AuditSpec("web", name, period=60.0, timeout=timeout, kind="http", target=url)


def test_http_audit_answered_200_gives_no_report() -> None:
    async def body(rig: Rig) -> None:
        async with http_server() as (port, _):
            rig.runner.register(http("ok", f"http://127.0.0.1:{port}/ok"))
            await until(lambda: rig.outcome("web", "ok") == "ok")
            assert rig.reports.empty()

    with_runner(body)


def test_http_audit_answered_500_is_reported_failed() -> None:
    async def body(rig: Rig) -> None:
        async with http_server() as (port, _):
            rig.runner.register(http("broken", f"http://127.0.0.1:{port}/broken"))
            _, report = await rig.next_report(timeout=5.0)
            assert report.kind is ErrorKind.AUDIT_FAILED
            assert "HTTP 500 Internal Server Error" in report.detail

    with_runner(body)


def test_http_audit_that_is_never_answered_is_overdue() -> None:
    timeout = 0.5

    async def body(rig: Rig) -> None:
        async with http_server() as (port, _):
            registered = rig.clock.now()
            rig.runner.register(http("hang", f"http://127.0.0.1:{port}/hang", timeout))
            arrived, report = await rig.next_report(timeout=timeout + 5.0)
            assert report.kind is ErrorKind.AUDIT_OVERDUE
            assert arrived - registered <= timeout + SLACK
            assert rig.runner.in_flight == []

    with_runner(body)


def test_http_audit_with_nobody_listening_is_reported_failed() -> None:
    async def body(rig: Rig) -> None:
        with socket.socket() as s:  # a port that was free a moment ago
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rig.runner.register(http("closed", f"http://127.0.0.1:{port}/ok"))
        _, report = await rig.next_report(timeout=5.0)
        assert report.kind is ErrorKind.AUDIT_FAILED
        assert "cannot GET" in report.detail

    with_runner(body)


# --- callback audits ---------------------------------------------------------------------


def test_callback_audit_registered_by_the_client_library() -> None:
    answers = [(True, ""), (False, "replica lag 40 s")]

    async def check() -> tuple[bool, str]:
        return answers.pop(0)

    async def body(rig: Rig) -> None:
        rig.callbacks.add("db", "db.lag", check)
        spec = AuditSpec("db", "lag", period=0.2, timeout=1.0, kind="callback", target="db.lag")
        rig.runner.register(spec)
        _, report = await rig.next_report(timeout=5.0)
        assert report.kind is ErrorKind.AUDIT_FAILED
        assert "replica lag 40 s" in report.detail
        rig.runner.unregister("db")

    with_runner(body)


# --- the systemd watchdog ------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.fspath(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    with sock:
        yield sock, path


def drain(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_watchdog_is_petted_only_after_a_healthy_round_never_while_overdue(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    gate = asyncio.Event()

    async def stuck() -> tuple[bool, str]:
        await gate.wait()
        return True, ""

    async def body(rig: Rig) -> None:
        notifier = SdNotifier.from_env(os.environ)
        petter = WatchdogPetter(rig.monitor, SystemdWatchdog(notifier), rig.clock, notifier.status)
        try:
            rig.callbacks.add("db", "stuck", stuck)
            rig.runner.register(command("true", "/bin/true"))
            await until(lambda: rig.outcome("app", "true") == "ok")
            assert drain(sock) == []  # no daemon iteration reported yet: no pet
            assert petter.iteration_completed().pet
            assert drain(sock)[0] == "WATCHDOG=1"

            spec = AuditSpec(
                "db", "stuck", period=60.0, timeout=0.3, kind="callback", target="stuck"
            )
            rig.runner.register(spec)
            _, report = await rig.next_report(timeout=5.0)
            assert report.kind is ErrorKind.AUDIT_OVERDUE
            decision = petter.iteration_completed()
            assert not decision.pet
            assert drain(sock) == ["STATUS=watchdog withheld: audit overdue: db/stuck"]

            # The component recovers: its next run completes in time, petting resumes.
            gate.set()
            rig.runner.resume("db")  # a no-op: it was not suspended
            rig.runner.register(spec)
            await until(lambda: rig.outcome("db", "stuck") == "ok")
            assert petter.iteration_completed().pet
            assert drain(sock)[0] == "WATCHDOG=1"
        finally:
            notifier.close()

    with_runner(body)
