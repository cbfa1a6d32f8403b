"""``haosctl``: simulate on every built-in example, JSON output, determinism, bad usage."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from haos.cli.main import main
from haos.config.examples import builtin_examples, load_builtin_example

EXAMPLES = builtin_examples()
QUICK = ["simulate", "--faults", "200", "--seed", "3"]
# The only line that carries wall-clock time: "... CRIM decisions (N refused) in 0.20 s".
_WALL_TIME = re.compile(r" in \d+\.\d+ s$", re.MULTILINE)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``haosctl argv`` in-process: (exit status, stdout, stderr)."""
    try:
        status = main(argv)
    except SystemExit as e:  # argparse exits on bad usage
        assert isinstance(e.code, int)
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    status, out, err = run_cli([*argv, "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def without_wall_time(text: str) -> str:
    masked, n = _WALL_TIME.subn(" in <wall> s", text)
    assert n == 1, text
    return masked


def example_text(name: str) -> str:
    return (resources.files("haos") / "examples" / f"{name}.toml").read_text("utf-8")


def test_there_are_builtin_examples() -> None:
    assert len(EXAMPLES) >= 2
    assert "cpci-2shelf" in EXAMPLES


# --- simulate on each example -------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES)
def test_simulate_example_reports_no_violations_and_every_instance(
    example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli([*QUICK, "--example", example], capsys)
    assert status == 0, out + err
    assert err == ""
    lines = out.splitlines()
    assert "0 invariant violations" in lines
    config = load_builtin_example(example)
    assert lines[0].startswith(f"cluster {config.name} ")
    assert "seed 3: 200 faults" in out
    for instance in config.instances:
        row = re.compile(rf"^{re.escape(instance.name)} +\d+ +\d+\.\d+ +\d+\.\d{{4}} ")
        assert any(row.match(line) for line in lines), f"no table row for {instance.name}"
    assert f"overall (mean of {len(config.instances)} instances" in out


@pytest.mark.parametrize("example", EXAMPLES)
def test_simulate_json_has_no_violations_and_overall_within_unit_interval(
    example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json([*QUICK, "--example", example], capsys)
    assert result["violations"] == []
    overall = result["availability"]["overall"]
    assert isinstance(overall, float)
    assert 0.0 <= overall <= 1.0
    assert 0.0 <= result["availability"]["worst"] <= overall
    config = load_builtin_example(example)
    assert set(result["availability"]["instances"]) == {i.name for i in config.instances}
    assert sum(result["faults"].values()) == result["faults_requested"] == 200


@pytest.mark.parametrize("example", EXAMPLES)
def test_same_seed_gives_identical_output(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = run_cli([*QUICK, "--example", example], capsys)
    second = run_cli([*QUICK, "--example", example], capsys)
    assert first[0] == second[0] == 0
    assert without_wall_time(first[1]) == without_wall_time(second[1])

    one = run_json([*QUICK, "--example", example], capsys)
    two = run_json([*QUICK, "--example", example], capsys)
    del one["wall_time"], two["wall_time"]
    assert one == two


@pytest.mark.parametrize("example", EXAMPLES)
def test_different_seeds_give_different_fault_counts(
    example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed3 = run_json(["simulate", "--faults", "200", "--seed", "3", "--example", example], capsys)
    seed4 = run_json(["simulate", "--faults", "200", "--seed", "4", "--example", example], capsys)
    assert seed3["faults"] != seed4["faults"]


def test_installed_haosctl_matches_in_process_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*QUICK, "--example", "small-2n"]
    haosctl = Path(sys.executable).parent / "haosctl"
    assert haosctl.exists(), f"{haosctl} missing: is the package installed in this venv?"
    proc = subprocess.run(
        [str(haosctl), *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    status, out, _ = run_cli(argv, capsys)
    assert status == 0
    assert without_wall_time(proc.stdout) == without_wall_time(out)


def test_installed_haosctl_exits_2_on_bad_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "haos.cli.main", "simulate", "--faults", "-1"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "argument --faults: --faults must be in 0..10000000, not -1" in proc.stderr


# --- bad usage and bad configuration ------------------------------------------------------------

BAD_USAGE = [
    pytest.param(
        ["simulate", "--faults", "-1"],
        ["argument --faults", "--faults must be in 0..10000000, not -1"],
        id="negative-faults",
    ),
    pytest.param(
        ["simulate", "--faults", "abc"],
        ["argument --faults", "--faults must be a whole number, not 'abc'"],
        id="non-numeric-faults",
    ),
    pytest.param(
        ["simulate", "--faults", "1.5"],
        ["argument --faults", "--faults must be a whole number, not '1.5'"],
        id="fractional-faults",
    ),
    pytest.param(
        ["simulate", "--mean-gap", "0"],
        ["argument --mean-gap", "--mean-gap must be longer than zero"],
        id="zero-mean-gap",
    ),
    pytest.param(
        ["simulate", "--mean-gap", "nan"],
        ["argument --mean-gap", "--mean-gap duration nan is not finite"],
        id="nan-mean-gap",
    ),
    pytest.param(
        ["simulate", "--mean-gap", "inf"],
        ["argument --mean-gap", "--mean-gap duration inf is not finite"],
        id="infinite-mean-gap",
    ),
    pytest.param(
        ["simulate", "--mean-gap", "soon"],
        ["argument --mean-gap", "--mean-gap bad duration 'soon'"],
        id="non-numeric-mean-gap",
    ),
    pytest.param(
        ["simulate", "--seed", "-3"],
        ["argument --seed", "--seed must be in 0..9223372036854775807, not -3"],
        id="negative-seed",
    ),
    pytest.param(
        ["simulate", "--faults", "9" * 30],
        ["argument --faults", "--faults must be in 0..10000000"],
        id="endless-faults",
    ),
    pytest.param(
        ["simulate", "--mean-gap", "1e-9"],
        ["argument --mean-gap", "must be at least 0.001s"],
        id="tiny-mean-gap",
    ),
    pytest.param(["frobnicate"], ["invalid choice: 'frobnicate'"], id="unknown-subcommand"),
    pytest.param([], ["required: command"], id="no-subcommand"),
    pytest.param(
        ["simulate", "--example", "nope"],
        ["usage error", "no example 'nope'", *EXAMPLES],
        id="unknown-example-lists-valid-ones",
    ),
    pytest.param(
        ["simulate", "--example", "small-2n", "--config", "x.toml"],
        ["argument --config: not allowed with argument --example"],
        id="example-and-config",
    ),
    pytest.param(
        ["simulate", "--config", "/nonexistent.toml"],
        ["config error", "/nonexistent.toml", "cannot read"],
        id="missing-config-file",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_USAGE)
def test_bad_usage_exits_2_naming_the_problem(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(argv, capsys)
    assert status == 2
    assert out == ""
    for fragment in expected:
        assert fragment in err


SMALL = example_text("small-2n")
SMALL_MEMBERS = (
    'members = ["shelf1/slot1/node/demo", "shelf1/slot2/node/demo", "shelf1/slot3/node/demo"]'
)

BAD_CONFIG = [
    pytest.param(
        "[cluster\nname = 'x'\n",
        ["TOML syntax error", "line 1"],
        id="toml-syntax-error",
    ),
    pytest.param(
        SMALL.replace(
            SMALL_MEMBERS, 'members = ["shelf1/slot1/node/demo", "shelf1/slot9/node/demo"]'
        ),
        ["service_groups[0].members[1]", "unknown component 'shelf1/slot9/node/demo'"],
        id="group-member-does-not-exist",
    ),
    pytest.param(
        SMALL.replace('group = "demo"', 'group = "dmeo"'),
        ["service_instances[0].group", "unknown service group 'dmeo'"],
        id="instance-of-unknown-group",
    ),
    pytest.param(
        SMALL.replace("node_id = 2", "node_id = 1"),
        ["nodes[1].node_id"],
        id="duplicate-node-id",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIG)
def test_bad_config_file_exits_2_naming_file_and_key(
    text: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert text != SMALL, "the table's replacement did not apply"
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    status, out, err = run_cli(["simulate", "--config", str(path)], capsys)
    assert status == 2
    assert out == ""
    assert err.startswith(f"haosctl: config error: {path}: ")
    for fragment in expected:
        assert fragment in err


def test_good_config_file_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(SMALL, encoding="utf-8")
    status, out, err = run_cli([*QUICK, "--config", str(path)], capsys)
    assert status == 0, err
    assert f"cluster small ({path})" in out
    assert "0 invariant violations" in out
