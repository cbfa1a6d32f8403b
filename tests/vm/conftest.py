"""The appliance image in QEMU: built (or taken from the cache) once per session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haos.proc import run
from haoslab.vm.machine import Cluster, Machine

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 1200.0


@pytest.fixture(scope="session")
def image() -> Path:
    """The image of this tree; image/build.sh rebuilds it only when an input changed."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mkosi builds the image as root, QEMU guests need /dev access")
    started = time.monotonic()
    path = Path(run([str(REPO / "image" / "build.sh")], timeout=BUILD_TIMEOUT).strip())
    print(f"image {path} ready after {time.monotonic() - started:.0f} s")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("vm")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed VM test carries the tail of each guest's serial console in its report, and
    how often the guest was reset out of a firmware stall."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    machines: list[Machine] = []
    for value in funcargs.values():
        if isinstance(value, Machine):
            machines.append(value)
        elif isinstance(value, Cluster):
            machines.extend(value.machines)
    for m in machines:
        title = f"serial console of node{m.spec.node} (firmware stalls reset: {m.firmware_resets})"
        rep.sections.append((title, m.console_tail(60)))
