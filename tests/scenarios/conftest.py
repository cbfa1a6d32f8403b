"""Fixtures shared by the scenario tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from haoslab.harness import nspawn
from haoslab.harness.systemd_cluster import NODEROOT_CACHE, REPO


@pytest.fixture(scope="session")
def cache() -> Path:
    """The node root that nspawn nodes boot from (built once, then reused); skips the test
    where nspawn nodes cannot run."""
    reason = nspawn.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return nspawn.build_noderoot(REPO, NODEROOT_CACHE)
