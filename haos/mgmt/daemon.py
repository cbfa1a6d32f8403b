"""haos-mgmtd: the management daemon of a node (REST API, server-sent events, ``/metrics``).

Its one composition root: :func:`run` reads ``[management]`` from cluster.toml and the token
files it names, builds the control-socket source, the API and the HTTP server (uvicorn, run
inside this daemon's TaskGroup) and the systemd notifier. ``READY=1`` comes once the server
listens; ``WATCHDOG=1`` only while the loop runs and the server is serving. The cluster
daemon being away is no reason to withhold it: the API then answers 503, as ``haosctl``
exits 2.

``python3 -m haos.mgmt --openapi`` prints the API's OpenAPI document (``docs/openapi.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from haos.config.loader import load_config
from haos.config.model import ManagementSpec
from haos.errors import ConfigError, ConfigProblem, UnavailableError
from haos.mgmt.api import ApiSettings, create_app
from haos.mgmt.source import ControlSource
from haos.services.control import AsyncControlClient, ControlClient
from haos.services.entry import run_daemon, settle_heap
from haos.services.notify import Notifier

log = logging.getLogger(__name__)

DEFAULT_CONTROL = Path("/run/haos/control.sock")
MAX_TOKEN = 4096  # bytes


class Stopped(Exception):
    """The server ended (SIGTERM): the daemon ends cleanly."""


def read_tokens(spec: ManagementSpec, source: str) -> tuple[bytes, ...]:
    """The bearer tokens of ``spec.token_files`` (one per file, surrounding whitespace
    dropped); ConfigError naming each file that is missing, unreadable, empty or too long."""
    tokens, problems = [], []
    for i, path in enumerate(spec.token_files):
        key = f"management.token_files[{i}]"
        try:
            with open(path, "rb") as f:
                token = f.read(MAX_TOKEN + 1).strip()
        except OSError as e:
            problems.append(ConfigProblem(source, key, f"cannot read {path}: {e.strerror}"))
            continue
        if not token or len(token) > MAX_TOKEN or any(c <= 32 or c == 127 for c in token):
            why = f"{path} must hold one token of 1..{MAX_TOKEN} printable bytes, no spaces"
            problems.append(ConfigProblem(source, key, why))
            continue
        tokens.append(token)
    for key in ("tls_cert", "tls_key"):
        path = getattr(spec, key)
        if path is not None and not os.access(path, os.R_OK):
            problems.append(ConfigProblem(source, f"management.{key}", f"cannot read {path}"))
    if problems:
        raise ConfigError(problems)
    return tuple(tokens)


def server_config(app: object, spec: ManagementSpec) -> uvicorn.Config:
    """uvicorn's settings: our address, no proxy headers (the peer's address decides who
    needs a token), our logging, a bounded graceful stop (event streams never end)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=spec.listen,
        port=spec.port,
        proxy_headers=False,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        ssl_certfile=spec.tls_cert,
        ssl_keyfile=spec.tls_key,
        timeout_graceful_shutdown=2,
    )


async def run(config_path: Path, control: Path) -> None:
    config = load_config(config_path)
    spec = config.management
    tokens = read_tokens(spec, str(config_path))
    source = ControlSource(AsyncControlClient(control), ControlClient(control))
    app = create_app(source, ApiSettings(config.name, tokens))
    server = uvicorn.Server(server_config(app, spec))
    notifier = Notifier.from_env(os.environ, os.getpid())

    async def serving() -> None:
        if not server.started or server.should_exit:
            raise UnavailableError("the HTTP server is not serving")

    async def serve() -> None:
        await server.serve()
        notifier.stopping("stopped")
        raise Stopped

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)  # uvicorn offers no event for "listening"
        where = f"{'https' if spec.tls_cert else 'http'}://{spec.listen}:{spec.port}"
        notifier.ready(f"serving {where} ({len(tokens)} tokens)")
        log.info("haos-mgmtd serving %s for cluster %s", where, config.name)
        settle_heap()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(serve())
        tasks.create_task(announce())
        tasks.create_task(notifier.run())
        tasks.create_task(notifier.beat())
        tasks.create_task(notifier.probe("http", serving))


def openapi_document() -> dict[str, object]:
    """The API's OpenAPI document (it does not depend on the configuration)."""
    source = ControlSource(AsyncControlClient(DEFAULT_CONTROL), ControlClient(DEFAULT_CONTROL))
    return create_app(source, ApiSettings("haos")).openapi()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="haos-mgmtd", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("/etc/haos/cluster.toml"))
    p.add_argument("--control", type=Path, default=DEFAULT_CONTROL, help="node control socket")
    p.add_argument("--openapi", action="store_true", help="print the OpenAPI document and end")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.openapi:
        print(json.dumps(openapi_document(), indent=2, sort_keys=True))
        return 0

    async def start() -> None:
        try:
            await run(args.config, args.control)
        except* Stopped:
            pass  # SIGTERM: a clean end

    return run_daemon("haos-mgmtd", start)
