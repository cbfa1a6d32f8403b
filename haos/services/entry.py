"""What the haos daemons' entry points share: load the configuration, find this node, run."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from haos.config.loader import load_config
from haos.config.model import ClusterConfig, NodeSpec
from haos.errors import HaosError, UsageError


def load_node(path: Path, node: str) -> tuple[ClusterConfig, NodeSpec]:
    """The configuration and this node's entry in it; ConfigError or UsageError."""
    config = load_config(path)
    me = next((n for n in config.nodes if n.name == node), None)
    if me is None:
        raise UsageError(f"node {node!r} is not in {path}")
    return config, me


def run_daemon(name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``start()`` until it ends; exit status 2 (not to be restarted: see the units'
    RestartPreventExitStatus=) for a HaosError, 0 on Ctrl-C or a clean end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        asyncio.run(start())
    except HaosError as e:
        print(f"{name}: {e.code} error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
