"""The QEMU helpers' pure parts: when a guest counts as stuck in its firmware after a reboot,
and the report port's idle call while a test waits (which drives the rescue)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from haos.errors import UnavailableError
from haoslab.vm.machine import Machine, MachineSpec, stuck_in_firmware
from haoslab.vm.reports import PREFIX, ReportPort

pytestmark = pytest.mark.timeout(30)

RESTART = """\
[   24.048118] systemd-shutdown[1]: Rebooting.
[   24.048510] kvm: exiting hardware virtualization
[   24.059931] reboot: machine restart
"""


def test_a_console_silent_since_the_kernel_restarted_the_machine_is_stuck() -> None:
    assert stuck_in_firmware(RESTART, silent=95.0, stall=90.0)
    assert stuck_in_firmware(RESTART + "\n\n", silent=95.0, stall=90.0)


def test_not_stuck_while_the_firmware_may_still_come_or_after_another_last_line() -> None:
    assert not stuck_in_firmware(RESTART, silent=30.0, stall=90.0)  # not silent long enough
    booted = RESTART + "[    0.000000] Linux version 6.1.0-28-amd64\n"
    assert not stuck_in_firmware(booted, silent=600.0, stall=90.0)  # it booted, then quiet
    halted = "[   12.1] reboot: Power down\n"
    assert not stuck_in_firmware(halted, silent=600.0, stall=90.0)
    assert not stuck_in_firmware("", silent=600.0, stall=90.0)


def test_a_waiting_report_port_calls_idle_until_the_report_comes(tmp_path: Path) -> None:
    calls: list[float] = []
    port = ReportPort(tmp_path / "r.sock", tmp_path / "r.log", idle=lambda: calls.append(1.0),
                      idle_every=0.05)  # fmt: skip
    try:

        def guest() -> None:
            time.sleep(0.3)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(tmp_path / "r.sock"))
                s.sendall((PREFIX + json.dumps({"event": "commit"}) + "\n").encode())
                time.sleep(0.2)

        threading.Thread(target=guest, daemon=True).start()
        report = port.wait_event("commit", timeout=10.0)
        assert report["event"] == "commit"
        assert 3 <= len(calls) <= 20  # every 0.05 s while it waited about 0.3 s
        with pytest.raises(UnavailableError, match="no report 'never'"):
            port.wait_event("never", timeout=0.2)
    finally:
        port.close()


def test_a_reset_guest_gets_the_whole_stall_time_again_before_another_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console stays as it was until the kernel prints: without counting from the last
    reset, a stalled guest was reset every few seconds and never got through its firmware."""
    spec = MachineSpec(node=1, image=tmp_path / "haos.raw", workdir=tmp_path)
    console = spec.file("console.log")
    console.write_text(RESTART + "\n")
    old = time.time() - 100.0
    os.utime(console, (old, old))
    resets: list[float] = []

    class Monitor:
        def system_reset(self) -> None:
            resets.append(time.time())

    machine = Machine(spec, firmware_stall=90.0)
    monkeypatch.setattr(Machine, "running", property(lambda self: True))
    monkeypatch.setattr(Machine, "qmp", lambda self: Monitor())
    assert machine.rescue() is True  # silent 100 s after the restart line: reset
    assert machine.rescue() is False  # at once again: the firmware gets its time
    assert len(resets) == 1 and machine.firmware_resets == 1
    machine._reset_at -= 95.0  # the whole stall time since the reset, still silent
    assert machine.rescue() is True and machine.firmware_resets == 2
