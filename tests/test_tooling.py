"""Tooling as tests: ruff and mypy --strict over the code, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _has_python(path: Path) -> bool:
    return path.is_file() or any(path.rglob("*.py"))


def _existing(paths: list[str]) -> list[str]:
    """The paths that exist and hold Python files (mypy refuses a directory with none)."""
    found = [p for p in paths if (ROOT / p).exists() and _has_python(ROOT / p)]
    assert found, f"none of {paths} exist under {ROOT}"
    return found


def _mypy_files() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    files = config["tool"]["mypy"]["files"]
    assert isinstance(files, list) and all(isinstance(f, str) for f in files)
    return _existing(files)


def _tool(name: str) -> str:
    exe = BIN / name
    assert exe.exists(), f"{name} is not installed next to {sys.executable}"
    return str(exe)


def _ruff() -> list[str]:
    return [_tool("ruff"), "check", *_existing(["haos", "haoslab", "tests", "bench"])]


def _mypy() -> list[str]:
    # The files are passed explicitly: pyproject's list may name a directory not yet written.
    return [_tool("mypy"), "--strict", *_mypy_files()]


@pytest.mark.parametrize(
    "command",
    [pytest.param(_ruff, id="ruff-check"), pytest.param(_mypy, id="mypy-strict")],
)
def test_tool_passes(command: Callable[[], list[str]]) -> None:
    argv = command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYPY", "RUFF"))}
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=280,
    )
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
