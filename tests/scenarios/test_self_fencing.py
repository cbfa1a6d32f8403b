"""Self-fencing as ``[fencing] self_fence`` configures it, on a real 3-node corosync cluster.

Each node's cluster daemon (``haos.services.clusterd``, in the node's network namespace)
arms the watchdog its configuration names and pets it every tick. The "watchdogs" here are
regular files under ``/dev`` (a real watchdog would reset the machine running the test):
each pet writes a keep-alive byte, a clean stop the magic ``V``; a node that stops petting
leaves its file as it is -- on a board, the watchdog resets it a timeout later.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.daemons import Daemons

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

AFTER = 2.0  # self_fence.after: more than demote_within (1 s)


@pytest.fixture
def watchdogs() -> Iterator[dict[int, Path]]:
    tag = secrets.token_hex(4)
    files = {n: Path(f"/dev/haos-test-watchdog-{tag}-n{n}") for n in (1, 2, 3)}
    for path in files.values():
        path.write_bytes(b"")
    try:
        yield files
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)


def size_settles(path: Path, within: float = 1.0) -> bool:
    before = path.stat().st_size
    time.sleep(within)
    return path.stat().st_size == before


def test_a_node_cut_off_from_the_majority_stops_petting_its_watchdog_after_the_grace_time(
    watchdogs: dict[int, Path],
) -> None:
    # The nodes share one configuration file, so one device path: a link, pointed at each
    # node's file before its daemon starts (a daemon opens the device once, at start), as
    # each board has its own /dev/watchdog-haos.
    device = f"/dev/haos-test-watchdog-{secrets.token_hex(4)}"
    link = Path(device)
    with Cluster(ClusterSpec(nodes=3)) as cluster:
        self_fence = f'{{ after = "{AFTER:g}s", device = "{device}", timeout = "5s" }}'
        daemons = Daemons(cluster, {1: 30, 2: 20, 3: 10}, fence_base_delay=20.0,
                          self_fence=self_fence)  # fmt: skip
        try:
            for n in (1, 2, 3):
                link.unlink(missing_ok=True)
                link.symlink_to(watchdogs[n])
                daemons.start(n)
                daemons.wait(
                    lambda n=n: watchdogs[n].stat().st_size > 0, 30, f"n{n} arms its watchdog"
                )
            daemons.wait_ready((1, 2, 3))
            log3 = daemons.log(3).read_text()
            assert f"self-fencing on: inquorate for {AFTER:g} s stops petting {device}" in log3
            assert not size_settles(watchdogs[3], 0.6)  # petted while quorate
            at = time.monotonic()
            cluster.partition([[1, 2], [3]])
            daemons.wait(
                lambda: "self-fencing: inquorate for" in daemons.log(3).read_text(),
                AFTER + 5,
                "node 3 self-fences",
            )
            took = time.monotonic() - at
            print(f"node 3 stopped petting {took:.2f} s after it was cut off")
            assert took >= AFTER
            assert "the watchdog will reset this node" in daemons.log(3).read_text()
            assert size_settles(watchdogs[3])  # never petted again
            assert watchdogs[3].read_bytes()[-1:] == b"\0"  # no magic V: it stays armed
            for n in (1, 2):  # the quorate majority pets on
                assert not size_settles(watchdogs[n], 0.6)
                assert "self-fencing:" not in daemons.log(n).read_text()
        finally:
            daemons.close()
            link.unlink(missing_ok=True)
