"""The management REST API (FastAPI): the managed objects, operator commands, events and
``/metrics``, each rendered from one :class:`~haos.mgmt.objects.Snapshot`.

Reads: ``GET /cluster``, ``/snapshot`` (everything at once), ``/nodes``, ``/components``,
``/groups``, ``/instances`` and each item by name (``/components/shelf1/slot1/node/app``: a
component's name keeps its slashes), ``/history`` (the availability service's decisions),
``/history/events`` (the cluster events the node keeps), ``/events`` (server-sent events,
as they come), ``/metrics`` and ``/openapi.json``. An item's answer carries its revision in
the body and as its ``ETag``.

Writes: ``POST /<collection>/<name>/<action>`` with an optional JSON body ``{"timeout": s}``:
the operator commands of ``haosctl`` (lock, unlock, offline, online, switchover), sent to the
cluster daemon as the same ``operator`` request, so they become the same intents with the
same outcomes. 200: done; 409: the availability service refused (its reason is in the body);
404: no such object; 412: ``If-Match`` names a revision the object no longer has (nothing is
sent); 422: a bad body, naming the field. A write without ``If-Match`` is carried out on the
object as it is (as ``haosctl`` does); the check is against the state read just before the
command is sent.

Who may call is decided by :mod:`haos.mgmt.auth` before any route runs
(:class:`Guard`, an ASGI middleware): loopback freely, anything else with a bearer token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from haos.cli.ops import OPERATOR_ANSWER, checked
from haos.errors import HaosError, UnavailableError
from haos.mgmt import auth, metrics
from haos.mgmt.build import build, event_record, history_entry
from haos.mgmt.objects import (
    Cluster,
    Component,
    EventRecord,
    HistoryEntry,
    Node,
    ServiceGroup,
    ServiceInstance,
    Snapshot,
)
from haos.mgmt.source import ClusterSource
from haos.services.control import BadAnswer, ControlError

log = logging.getLogger(__name__)

VERSION = "1"
MAX_HISTORY = 1_000_000
# collection -> (its item type, the operator commands it takes)
WRITES: dict[str, tuple[str, ...]] = {
    "nodes": ("lock", "unlock"),
    "groups": ("lock", "unlock", "switchover"),
    "components": ("lock", "unlock", "offline", "online", "switchover"),
    "instances": ("switchover",),
}
IF_MATCH = "the revision (ETag) the object must still have"
# The cluster daemon's error codes as HTTP statuses: not serving now, or held by another
# operation (an operation lock, a compare-on-revision that lost); anything else is its fault.
_CONTROL_STATUS = {"unavailable": 503, "not-active": 503, "locked": 409, "conflict": 409}


class OperatorBody(BaseModel):
    """The optional body of an operator command."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timeout: float = Field(
        default=10.0, gt=0.0, le=3600.0, description="seconds to wait for the outcome"
    )


@dataclass(frozen=True)
class Outcome:
    """What the availability service made of an operator command."""

    action: str
    target: str
    refused: bool
    reason: str


@dataclass(frozen=True)
class Problem:
    """An error answer: a stable code and what is wrong."""

    error: str
    message: str


@dataclass(frozen=True)
class BadRequest:
    """A request that is not what the API takes: each problem names its field."""

    error: str  # "usage"
    message: str
    detail: list[str]


BAD_REQUEST: dict[int | str, dict[str, Any]] = {422: {"model": BadRequest}}


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        self.status, self.error, self.message = status, error, message
        super().__init__(message)


@dataclass(frozen=True)
class ApiSettings:
    cluster: str  # the cluster's name (from cluster.toml)
    tokens: tuple[bytes, ...] = ()


class Guard:
    """ASGI middleware: every HTTP request passes :func:`haos.mgmt.auth.decide` first."""

    def __init__(self, app: ASGIApp, tokens: tuple[bytes, ...]) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        verdict = auth.decide(host, header.decode("latin-1") if header else None, self.tokens)
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        log.info("refused %s %s from %s: %s", scope["method"], scope["path"], host, verdict.reason)
        code = "unauthorized" if verdict.status == 401 else "forbidden"
        headers = {"WWW-Authenticate": "Bearer"} if verdict.status == 401 else {}
        answer = JSONResponse(asdict(Problem(code, verdict.reason)), verdict.status, headers)
        await answer(scope, receive, send)


def create_app(
    source: ClusterSource, settings: ApiSettings, clock: Callable[[], float] = time.time
) -> FastAPI:
    """The API over ``source``; ``clock`` dates snapshots (wall-clock seconds)."""
    app = FastAPI(
        title="haos management",
        version=VERSION,
        description=(__doc__ or "").split("\n\n")[0],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the guard like everything else
    )

    async def snapshot() -> Snapshot:
        a = await source.answers()
        return build(settings.cluster, a.status, a.crim, a.availability, clock())

    _errors(app)
    _reads(app, snapshot)
    _streams(app, source, snapshot)
    for collection, actions in WRITES.items():
        for action in actions:
            _write(app, source, snapshot, collection, action)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.add_middleware(Guard, tokens=settings.tokens)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(asdict(Problem(e.error, e.message)), e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = [_problem(err) for err in e.errors()]
        return JSONResponse(asdict(BadRequest("usage", "; ".join(problems), problems)), 422)

    @app.exception_handler(HaosError)
    async def haos_error(request: Request, e: HaosError) -> JSONResponse:
        status, code = (503 if isinstance(e, UnavailableError) else 502), e.code
        if isinstance(e, BadAnswer):
            status = 502
        elif isinstance(e, ControlError):  # the cluster daemon's own code goes on
            status, code = _CONTROL_STATUS.get(e.error, 502), e.error
        log.warning("%s %s: %s", request.method, request.url.path, e)
        return JSONResponse(asdict(Problem(code, str(e))), status)


def _problem(err: Any) -> str:
    """One validation error as ``where: what`` (``body.timeout: Input should be ...``)."""
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'is not valid')}"


def _one(items: Sequence[Any], kind: str, name: str, response: Response | None = None) -> Any:
    for item in items:
        if item.name == name:
            if response is not None:
                response.headers["ETag"] = f'"{item.revision}"'
            return item
    raise ApiError(404, "not-found", f"no {kind} named {name!r}")


Snap = Callable[[], Awaitable[Snapshot]]


def _reads(app: FastAPI, snapshot: Snap) -> None:
    @app.get("/snapshot", tags=["objects"])
    async def get_snapshot() -> Snapshot:
        """Every managed object at one moment."""
        return await snapshot()

    @app.get("/cluster", tags=["objects"])
    async def get_cluster(response: Response) -> Cluster:
        c = (await snapshot()).cluster
        response.headers["ETag"] = f'"{c.revision}"'
        return c

    @app.get("/nodes", tags=["objects"])
    async def list_nodes() -> list[Node]:
        return list((await snapshot()).nodes)

    @app.get("/nodes/{name}", tags=["objects"])
    async def get_node(name: str, response: Response) -> Node:
        return _one((await snapshot()).nodes, "node", name, response)  # type: ignore[no-any-return]

    @app.get("/components", tags=["objects"])
    async def list_components() -> list[Component]:
        return list((await snapshot()).components)

    @app.get("/components/{name:path}", tags=["objects"])
    async def get_component(name: str, response: Response) -> Component:
        return _one((await snapshot()).components, "component", name, response)  # type: ignore[no-any-return]

    @app.get("/groups", tags=["objects"])
    async def list_groups() -> list[ServiceGroup]:
        return list((await snapshot()).groups)

    @app.get("/groups/{name}", tags=["objects"])
    async def get_group(name: str, response: Response) -> ServiceGroup:
        return _one((await snapshot()).groups, "service group", name, response)  # type: ignore[no-any-return]

    @app.get("/instances", tags=["objects"])
    async def list_instances() -> list[ServiceInstance]:
        return list((await snapshot()).instances)

    @app.get("/instances/{name}", tags=["objects"])
    async def get_instance(name: str, response: Response) -> ServiceInstance:
        return _one((await snapshot()).instances, "service instance", name, response)  # type: ignore[no-any-return]

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    async def get_metrics() -> Response:
        """The snapshot in the Prometheus text format."""
        return Response(metrics.render(await snapshot()), media_type=metrics.CONTENT_TYPE)


def _streams(app: FastAPI, source: ClusterSource, snapshot: Snap) -> None:
    since_query = Query(None, description="only from this time on (seconds since the epoch)")

    @app.get("/history", tags=["history"], responses=BAD_REQUEST)
    async def get_history(
        limit: int = Query(50, ge=1, le=MAX_HISTORY, description="entries, the newest"),
    ) -> list[HistoryEntry]:
        """The availability service's decisions and notifications (``haosctl history``)."""
        return [history_entry(e) for e in await source.history(limit)]

    @app.get("/history/events", tags=["history"], responses=BAD_REQUEST)
    async def get_kept_events(since: float | None = since_query) -> list[EventRecord]:
        """The cluster events the node keeps (``haosctl events``)."""
        return [event_record(e) for e in await source.kept_events(since)]

    @app.get(
        "/events",
        tags=["history"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **BAD_REQUEST},
    )
    async def get_events(since: float | None = since_query) -> StreamingResponse:
        """Server-sent events: each cluster event as it comes (``haosctl events --follow``);
        with ``since``, those kept from then on first. ``id`` is the record's number,
        ``event`` its kind, ``data`` the record as JSON; an ``error`` event ends the stream."""
        return StreamingResponse(_sse(source.follow_events(since)), media_type="text/event-stream")


async def _sse(items: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for item in items:
            if isinstance(item, dict) and item.get("ok") is False:
                raise ControlError(str(item.get("error")), str(item.get("message")))
            record = event_record(item)
            data = json.dumps(asdict(record), sort_keys=True)
            yield f"id: {record.seq}\nevent: {record.kind}\ndata: {data}\n\n"
    except HaosError as e:
        yield f"event: error\ndata: {json.dumps(asdict(Problem(e.code, str(e))))}\n\n"


def _matches(if_match: str, revision: str) -> bool:
    """Whether an ``If-Match`` header admits ``revision`` (``*`` admits any)."""
    for tag in (t.strip() for t in if_match.split(",")):
        if tag == "*" or tag.removeprefix("W/").strip('"') == revision:
            return True
    return False


_KINDS: dict[str, tuple[str, Callable[[Snapshot], Sequence[Any]]]] = {
    "nodes": ("node", lambda s: s.nodes),
    "groups": ("service group", lambda s: s.groups),
    "components": ("component", lambda s: s.components),
    "instances": ("service instance", lambda s: s.instances),
}


def _write(
    app: FastAPI, source: ClusterSource, snapshot: Snap, collection: str, action: str
) -> None:
    kind, items_of = _KINDS[collection]
    name_part = "{name:path}" if collection == "components" else "{name}"

    async def write(
        name: str,
        body: Annotated[OperatorBody | None, Body()] = None,
        if_match: Annotated[str | None, Header(description=IF_MATCH)] = None,
    ) -> JSONResponse:
        target = _one(items_of(await snapshot()), kind, name)
        if if_match is not None and not _matches(if_match, target.revision):
            raise ApiError(
                412,
                "stale",
                f"{kind} {name} is at revision {target.revision}, not {if_match}: nothing done",
            )
        timeout = (body or OperatorBody()).timeout
        answer = checked(OPERATOR_ANSWER, await source.operator(action, name, timeout))
        outcome = Outcome(action, name, answer["refused"], str(answer["reason"]))
        log.info("%s %s: %s", action, name, outcome.reason)
        return JSONResponse(asdict(outcome), 409 if outcome.refused else 200)

    app.post(
        f"/{collection}/{name_part}/{action}",
        tags=["commands"],
        operation_id=f"{action}_{collection}",
        summary=f"{action} a {kind}",
        response_model=Outcome,
        responses={
            404: {"model": Problem},
            409: {"model": Outcome, "description": "refused"},
            412: {"model": Problem, "description": "stale If-Match"},
            **BAD_REQUEST,
        },
    )(write)
