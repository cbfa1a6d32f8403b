"""What the haos daemons' entry points share: load the configuration, find this node, run."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from haos import trace
from haos.config.loader import load_config
from haos.config.model import ClusterConfig, NodeSpec
from haos.errors import ConfigError, HaosError, UsageError


def load_node(path: Path, node: str) -> tuple[ClusterConfig, NodeSpec]:
    """The configuration and this node's entry in it; ConfigError or UsageError."""
    config = load_config(path)
    me = next((n for n in config.nodes if n.name == node), None)
    if me is None:
        raise UsageError(f"node {node!r} is not in {path}")
    return config, me


# Exit statuses. The units restart a daemon on anything but EXIT_CONFIG
# (RestartPreventExitStatus=): a bad configuration or command line does not mend itself, while
# a daemon that lost corosync or timed out waiting for it starts again and rejoins.
EXIT_CONFIG = 2
EXIT_TEMPFAIL = 75  # sysexits' EX_TEMPFAIL


def exit_status(error: BaseException) -> int:
    """EXIT_CONFIG when every error in ``error`` (an exception group is looked into) is a
    configuration or usage error; EXIT_TEMPFAIL otherwise."""
    if isinstance(error, BaseExceptionGroup):
        statuses = {exit_status(e) for e in error.exceptions}
        return EXIT_CONFIG if statuses == {EXIT_CONFIG} else EXIT_TEMPFAIL
    return EXIT_CONFIG if isinstance(error, (ConfigError, UsageError)) else EXIT_TEMPFAIL


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]


def settle_heap() -> None:
    """Called once a daemon is up: collect, then move every object alive into the collector's
    permanent generation (:func:`gc.freeze`). Modules, classes and the start-up state are never
    garbage; left in view, every full collection walks them all again, a pause of 10-20 ms in
    the cluster daemon, in the middle of whatever message was being handled."""
    gc.collect()
    gc.freeze()


def run_daemon(name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``start()`` until it ends: 0 on Ctrl-C or a clean end; for a HaosError (also inside
    an exception group) its message and :func:`exit_status`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trace.from_env()
    try:
        asyncio.run(start())
    except KeyboardInterrupt:
        return 0
    except (HaosError, BaseExceptionGroup) as e:
        leaves = _leaves(e)
        if not all(isinstance(leaf, HaosError) for leaf in leaves):
            raise  # a bug: the traceback is what helps (and systemd restarts the daemon)
        for leaf in leaves:
            assert isinstance(leaf, HaosError)
            print(f"{name}: {leaf.code} error: {leaf}", file=sys.stderr)
        return exit_status(e)
    return 0
