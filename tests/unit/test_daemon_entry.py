"""How a daemon's end becomes its exit status: only a configuration or usage error stops
systemd from starting it again (the units' RestartPreventExitStatus=2)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path

import pytest

from haos.cluster.dss.corosync.errors import CorosyncUnavailableError, CsError
from haos.errors import ConfigError, ConfigProblem, UnavailableError, UsageError
from haos.services.entry import (
    EXIT_CONFIG,
    EXIT_TEMPFAIL,
    exit_status,
    run_daemon,
    settle_heap,
)

REPO = Path(__file__).resolve().parents[2]


def _config_error() -> ConfigError:
    return ConfigError([ConfigProblem("cluster.toml", "nodes", "empty")])


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (_config_error(), EXIT_CONFIG),
        (UsageError("node 'n9' is not in cluster.toml"), EXIT_CONFIG),
        (UnavailableError("corosync is not running"), EXIT_TEMPFAIL),
        (ExceptionGroup("tasks", [UsageError("bad"), _config_error()]), EXIT_CONFIG),
        (ExceptionGroup("tasks", [UsageError("bad"), UnavailableError("gone")]), EXIT_TEMPFAIL),
        (ExceptionGroup("o", [ExceptionGroup("i", [UnavailableError("gone")])]), EXIT_TEMPFAIL),
    ],
)
def test_exit_status(error: BaseException, status: int) -> None:
    assert exit_status(error) == status


def _ending_with(error: BaseException):  # type: ignore[no-untyped-def]
    async def start() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(3600))

            async def fail() -> None:
                raise error

            tg.create_task(fail())

    return start


def test_a_lost_corosync_inside_the_task_group_is_restarted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = CorosyncUnavailableError("cpg_join", CsError.CS_ERR_TIMEOUT, "no answer")
    assert run_daemon("haos-test", _ending_with(error)) == EXIT_TEMPFAIL
    assert "cpg_join: CS_ERR_TIMEOUT" in capsys.readouterr().err


def test_a_bad_configuration_is_not_restarted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_daemon("haos-test", _ending_with(_config_error())) == EXIT_CONFIG
    assert "cluster.toml: nodes: empty" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(ExceptionGroup) as info:
        run_daemon("haos-test", _ending_with(ZeroDivisionError("bug")))
    assert isinstance(info.value.exceptions[0], ZeroDivisionError)


def test_clusterd_with_a_missing_node_exits_2(tmp_path: Path) -> None:
    """The real entry point: a node that is not in the configuration is a usage error."""
    config = REPO / "haos" / "examples" / "small-2n.toml"
    if not config.is_file():
        pytest.fail(f"{config} is missing")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "haos.services.clusterd",
            "--config",
            str(config),
            "--node",
            "no-such-node",
            "--state-dir",
            str(tmp_path),
            "--control",
            str(tmp_path / "c.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "no-such-node" in proc.stderr


def test_a_settled_heap_keeps_its_start_up_objects_out_of_later_collections() -> None:
    class Survivor:
        pass

    kept = [Survivor() for _ in range(100)]
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(kept)
        # a full collection now walks only what was allocated since
        assert not any(isinstance(o, Survivor) for o in gc.get_objects())
    finally:
        gc.unfreeze()
