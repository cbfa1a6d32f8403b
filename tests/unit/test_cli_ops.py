"""haosctl's cluster commands: argument errors, an unreachable cluster, the status view."""

from __future__ import annotations

from pathlib import Path

import pytest

from haos.cli.main import main
from haos.cli.ops import render_status

STATUS = {
    "quorate": True,
    "master": 1,
    "vice_master": 2,
    "node_names": {"1": "n1", "2": "n2"},
}
CRIM = {
    "seq": 12,
    "master": "n1",
    "hosts": {"s/n1/app": "n1", "s/n2/app": "n2", "s/n1": "n1"},
    "groups": {"app": {"redundancy": "2N", "members": ["s/n1/app", "s/n2/app"]}},
    "instances": {
        "app-si": {"group": "app", "primary": ["s/n1/app"], "secondary": [], "served": True}
    },
    "crim": {
        "nodes": {
            "n1": {"member": True, "admin": "unlocked"},
            "n2": {"member": False, "admin": "locked"},
        },
        "components": {
            "s": {"state": "spare", "health": "healthy", "admin": "unlocked"},
            "s/n1/app": {"state": "primary", "health": "healthy", "admin": "unlocked"},
            "s/n2/app": {"state": "offline", "health": "absent", "admin": "unlocked"},
        },
    },
}


def test_status_says_what_the_primary_runs_as_and_that_an_unrun_assignment_is_not_served() -> None:
    running = {"n1": {"s/n1/app": {"state": "spare", "at": 1.0, "detail": ""}}}
    info = {**CRIM["instances"]["app-si"], "served": False, "assigned": True}  # type: ignore[dict-item]
    crim = {**CRIM, "running": running, "instances": {"app-si": info}}
    text = render_status(STATUS, crim)
    assert "app-si               app (2N): NOT SERVED (assigned, but its primary" in text
    assert "primary   s/n1/app on n1, runs as spare" in text
    crim = {**CRIM, "running": {"n1": None}}
    assert "s/n1/app on n1, runs as unknown" in render_status(STATUS, crim)


def test_status_view_shows_quorum_roles_and_components() -> None:
    text = render_status(STATUS, CRIM)
    assert "quorate, master n1 (1), vice-master n2 (2)" in text
    assert "decision #12" in text
    assert "n2         OFFLINE  locked" in text
    assert "primary   s/n1/app on n1" in text
    assert "s/n2/app" in text and "absent" in text
    assert "\n  s " not in text  # hardware above the nodes is not listed


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["lock"], "the following arguments are required: target"),
        (
            ["history", "--limit", "0", "--control", "/nonexistent.sock"],
            "--limit must be in 1..1000000, not 0",
        ),
        (["status", "--timeout", "-1", "--control", "/nonexistent.sock"], "--timeout"),
        (["demo", "--nodes", "9"], "--nodes must be 3..5"),
    ],
)
def test_bad_arguments_are_named_and_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        code = main(argv)
        raise SystemExit(code)
    assert raised.value.code == 2
    assert words in capsys.readouterr().err


def test_an_unreachable_cluster_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "none.sock"
    assert main(["switchover", "app", "--control", str(sock)]) == 2
    err = capsys.readouterr().err
    assert "unavailable" in err and str(sock) in err
