"""``haosctl boot`` on a tmp_path ESP: status, mark-good, mark-bad, switch; JSON; exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from haos.bootctl.efivars import EfivarfsVars, LoaderVar
from haos.bootctl.entries import Layout, render_entry
from haos.bootctl.model import Slot
from haos.cli import boot

A, B = Slot.A, Slot.B


@pytest.fixture
def esp(tmp_path: Path) -> Path:
    root = tmp_path / "esp"
    (root / "loader" / "entries").mkdir(parents=True)
    (root / "loader" / "loader.conf").write_text("timeout 0\ndefault haos-a.conf\n")
    (root / "loader" / "entries" / "haos-a.conf").write_text(render_entry(A, "1.0", Layout()))
    for slot in "ab":
        (root / "haos" / slot).mkdir(parents=True)
        (root / "haos" / slot / "vmlinuz").write_bytes(b"MZ")
    return root


@pytest.fixture
def efivars(tmp_path: Path) -> Path:
    root = tmp_path / "efivars"
    root.mkdir()
    EfivarfsVars(root).set(LoaderVar.SELECTED, "haos-a.conf")
    return root


@pytest.fixture(autouse=True)
def no_reboot(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record reboots instead of asking systemd (a test must never reboot the host)."""
    calls: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float = 600.0, **kwargs: Any) -> str:
        calls.append(argv)
        assert kwargs.get("input") is None and timeout <= 60  # stdin closed, a deadline
        return ""

    monkeypatch.setattr(boot, "run", fake_run)
    return calls


def on_trial(esp: Path, efivars: Path, entry: str = "haos-b+2-1.conf") -> None:
    """Slot B runs release 1.1 on trial (systemd-boot already counted this try)."""
    (esp / "loader/entries" / entry).write_text(render_entry(B, "1.1", Layout()))
    v = EfivarfsVars(efivars)
    v.set(LoaderVar.DEFAULT, "haos-b+[1-9]*")
    v.set(LoaderVar.SELECTED, "haos-b+3.conf")


def run(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, *argv: str
) -> tuple[int, str, str]:
    try:
        status = boot.main([*argv, "--esp", str(esp), "--efivars", str(efivars)])
    except SystemExit as e:  # argparse exits on bad usage
        assert isinstance(e.code, int)
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def run_json(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, *argv: str
) -> tuple[int, dict[str, Any]]:
    status, out, err = run(capsys, esp, efivars, *argv, "--json")
    assert err == ""
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return status, doc


def entries(esp: Path) -> list[str]:
    return sorted(p.name for p in (esp / "loader" / "entries").iterdir())


# --- status ------------------------------------------------------------------------------


def test_status_of_a_fresh_node(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path
) -> None:
    status, out, err = run(capsys, esp, efivars, "status")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"ESP {esp}",
        "booted:    A (1.0)",
        "committed: A (1.0)",
        "next boot: A (1.0)",
        "* slot A: committed 1.0              haos-a.conf",
        "  slot B: empty     -                -",
    ]


def test_status_json_during_a_trial(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path
) -> None:
    on_trial(esp, efivars)
    status, doc = run_json(capsys, esp, efivars, "status")
    assert status == 0
    assert doc == {
        "esp": str(esp),
        "booted": "B",
        "committed": "A",
        "default": "B",
        "fallback": "A",
        "trial": "B",
        "oneshot": None,
        "slots": [
            {
                "slot": "A",
                "state": "committed",
                "release": "1.0",
                "entry": "haos-a.conf",
                "tries_left": None,
                "tries_done": None,
            },
            {
                "slot": "B",
                "state": "trying",
                "release": "1.1",
                "entry": "haos-b+2-1.conf",
                "tries_left": 2,
                "tries_done": 1,
            },
        ],
        "problems": [],
    }


def test_status_text_during_a_trial(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path
) -> None:
    on_trial(esp, efivars)
    status, out, _ = run(capsys, esp, efivars, "status")
    assert status == 0
    assert "next boot: B (1.1) (trial)" in out
    assert "* slot B: trying    1.1              haos-b+2-1.conf  2 tries left, 1 done" in out


def test_status_exits_1_when_nothing_is_committed(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path
) -> None:
    (esp / "loader/entries/haos-a.conf").rename(esp / "loader/entries/haos-a+0-3.conf")
    status, doc = run_json(capsys, esp, efivars, "status")
    assert status == 1
    assert "no committed release: nothing to fall back to" in doc["problems"]


def test_status_on_a_malformed_entry_exits_2_naming_the_file(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path
) -> None:
    bad = esp / "loader/entries/haos-b.conf"
    bad.write_text(
        "title x\nversion 1\nlinux /haos/b/vmlinuz\noptions root=PARTLABEL=haos-root-a\n"
    )
    status, out, err = run(capsys, esp, efivars, "status")
    assert (status, out) == (2, "")
    assert err.startswith("haosctl: config error: ")
    assert f"{bad}: options: root=PARTLABEL=haos-root-a in an entry for slot B" in err
    status, doc = run_json(capsys, esp, efivars, "status")
    assert status == 2
    assert doc["error"] == "config" and str(bad) in doc["message"]


def test_not_an_esp_is_bad_usage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, efivars: Path
) -> None:
    status, _, err = run(capsys, tmp_path, efivars, "status")
    assert status == 2
    assert "usage error" in err and "no loader/ directory" in err


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["switch", "C"], ["status", "--reboot"]], ids=str
)
def test_bad_usage_exits_2(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, argv: list[str]
) -> None:
    status, out, err = run(capsys, esp, efivars, *argv)
    assert status == 2 and out == ""
    assert "error" in err


# --- mark-good, mark-bad, switch ------------------------------------------------------------


def test_mark_good_commits_the_running_trial(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, no_reboot: list[list[str]]
) -> None:
    on_trial(esp, efivars)
    status, doc = run_json(capsys, esp, efivars, "mark-good")
    assert status == 0
    assert doc == {
        "refused": False,
        "reason": "operator committed release 1.1 in slot B, overriding unconfirmed gates: "
        "units-healthy",
        "actions": [{"action": "Bless", "slot": "B"}, {"action": "SetDefault", "slot": "B"}],
        "reboot_needed": False,
        "rebooting": False,
    }
    assert entries(esp) == ["haos-a.conf", "haos-b.conf"]
    assert "default haos-b.conf" in (esp / "loader/loader.conf").read_text()
    assert EfivarfsVars(efivars).get(LoaderVar.DEFAULT) is None
    assert no_reboot == []


def test_mark_bad_falls_back_without_rebooting_unless_asked(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, no_reboot: list[list[str]]
) -> None:
    on_trial(esp, efivars)
    status, out, err = run(capsys, esp, efivars, "mark-bad")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "operator rejected trial release 1.1 in slot B; "
        "falling back to committed release 1.0 in slot A",
        "  done: SetDefault(slot=A)",
        "  done: MarkBad(slot=B)",
        "reboot to take effect (or pass --reboot)",
    ]
    assert entries(esp) == ["haos-a.conf", "haos-b+0-1.conf"]
    assert no_reboot == []


def test_mark_bad_with_reboot_reboots(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, no_reboot: list[list[str]]
) -> None:
    on_trial(esp, efivars)
    status, doc = run_json(capsys, esp, efivars, "mark-bad", "--reboot")
    assert status == 0 and doc["rebooting"] is True
    assert no_reboot == [["systemctl", "reboot"]]


def test_mark_bad_of_the_only_committed_release_is_refused(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path, no_reboot: list[list[str]]
) -> None:
    status, out, _ = run(capsys, esp, efivars, "mark-bad", "--reboot")
    assert status == 1
    assert out.startswith("refused: slot B is empty, not a committed release to fall back to")
    assert entries(esp) == ["haos-a.conf"]
    assert no_reboot == []


def test_switch_sets_a_oneshot_for_the_other_slot(
    capsys: pytest.CaptureFixture[str], esp: Path, efivars: Path
) -> None:
    (esp / "loader/entries/haos-b.conf").write_text(render_entry(B, "0.9", Layout()))
    status, doc = run_json(capsys, esp, efivars, "switch")
    assert status == 0 and doc["reboot_needed"] is True and doc["rebooting"] is False
    assert doc["actions"][0] == {"action": "SetOneshot", "slot": "B"}
    assert EfivarfsVars(efivars).get(LoaderVar.ONESHOT) == "haos-b.conf"
    status, out, _ = run(capsys, esp, efivars, "status")
    assert "next boot: B (0.9) (one-shot)" in out


@pytest.mark.parametrize(
    ("setup", "argv", "why"),
    [
        (None, ["switch"], "slot B is empty"),
        ("haos-b+0-3.conf", ["switch", "b"], "slot B is bad"),
        ("haos-b.conf", ["switch", "A"], "slot A is already running"),
    ],
)
def test_switch_refused(
    capsys: pytest.CaptureFixture[str],
    esp: Path,
    efivars: Path,
    setup: str | None,
    argv: list[str],
    why: str,
) -> None:
    if setup:
        (esp / "loader/entries" / setup).write_text(render_entry(B, "0.9", Layout()))
    status, doc = run_json(capsys, esp, efivars, *argv)
    assert status == 1
    assert doc["refused"] is True and why in doc["reason"] and doc["actions"] == []
    assert EfivarfsVars(efivars).get(LoaderVar.ONESHOT) is None


def test_haosctl_registration_lines_work() -> None:
    """The two lines haos/cli/main.py needs: import boot, boot.add_parser(sub)."""
    import argparse

    parser = argparse.ArgumentParser(prog="haosctl")
    sub = parser.add_subparsers(dest="command", required=True)
    boot.add_parser(sub)
    args = parser.parse_args(["boot", "switch", "b", "--esp", "/x", "--json"])
    assert (args.slot, args.esp, args.json, args.reboot) == (B, Path("/x"), True, False)
