"""The management REST API over a fake source holding a real cluster's recorded answers:
reads, operator commands with optimistic concurrency, bad payloads, who may call, events,
/metrics and the committed OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from _mgmt import recorded
from prometheus_client.parser import text_string_to_metric_families

from haos.mgmt.api import ApiSettings, create_app
from haos.mgmt.daemon import openapi_document
from haos.services.control import ControlError
from haoslab.testing.mgmt import FakeSource

LOOPBACK = ("127.0.0.1", 40000)
REMOTE = ("10.10.0.2", 40000)
TOKEN = b"lab-token-1"
SI = "counter-si"
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def fake() -> FakeSource:
    r = recorded()
    return FakeSource(
        r["status"], r["crim"], r["availability"], r["history"]["history"], r["events"][1:]
    )


def call(
    source: FakeSource,
    method: str,
    url: str,
    client: tuple[str, int] = LOOPBACK,
    tokens: tuple[bytes, ...] = (TOKEN,),
    **kw: Any,
) -> httpx.Response:
    app = create_app(source, ApiSettings("demo", tokens), clock=lambda: 1_765_000_000.0)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://mgmt") as http:
            return await http.request(method, url, **kw)

    return asyncio.run(go())


# -- reads -----------------------------------------------------------------------------------


def test_instances_show_primaries_secondaries_and_served_as_the_daemon_said() -> None:
    source = fake()
    got = call(source, "GET", "/instances").json()
    crim = source.crim["instances"][SI]
    [si] = got
    assert si["name"] == SI and si["served"] is crim["served"] is True
    assert si["primaries"] == crim["primary"] and si["secondaries"] == crim["secondary"]
    assert si["failovers"] == 0


def test_an_item_carries_its_revision_as_etag_and_a_component_name_keeps_its_slashes() -> None:
    source = fake()
    comp = next(iter(source.crim["hosts"]))
    r = call(source, "GET", f"/components/{comp}")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == comp
    assert r.headers["etag"] == f'"{r.json()["revision"]}"'


def test_an_unknown_object_is_404_naming_it() -> None:
    r = call(fake(), "GET", "/nodes/n9")
    assert r.status_code == 404
    assert r.json() == {"error": "not-found", "message": "no node named 'n9'"}


def test_an_unreachable_cluster_daemon_is_503_and_the_api_keeps_serving() -> None:
    source = fake()
    source.down = True
    r = call(source, "GET", "/cluster")
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    source.down = False
    assert call(source, "GET", "/cluster").status_code == 200


def test_history_lists_the_decisions_the_node_keeps() -> None:
    source = fake()
    got = call(source, "GET", "/history", params={"limit": 3}).json()
    assert [e["seq"] for e in got] == [e["seq"] for e in source.history_entries[-3:]]


# -- writes ----------------------------------------------------------------------------------


def test_switchover_with_the_current_etag_is_sent_as_the_operator_intent() -> None:
    source = fake()
    before = call(source, "GET", f"/instances/{SI}")
    r = call(
        source, "POST", f"/instances/{SI}/switchover", headers={"If-Match": before.headers["etag"]}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "action": "switchover",
        "target": SI,
        "refused": False,
        "reason": f"switchover {SI}",
    }
    assert source.commands == [("switchover", SI, 10.0)]
    after = call(source, "GET", f"/instances/{SI}").json()
    assert after["primaries"] == before.json()["secondaries"]
    assert after["revision"] != before.json()["revision"]


def test_a_stale_if_match_is_412_and_nothing_is_sent() -> None:
    source = fake()
    old = call(source, "GET", f"/instances/{SI}").headers["etag"]
    call(source, "POST", f"/instances/{SI}/switchover")  # someone else's switchover
    r = call(source, "POST", f"/instances/{SI}/switchover", headers={"If-Match": old})
    assert r.status_code == 412
    assert r.json()["error"] == "stale"
    assert len(source.commands) == 1


def test_a_write_without_if_match_is_carried_out() -> None:
    source = fake()
    r = call(source, "POST", "/nodes/n2/lock", json={"timeout": 3})
    assert r.status_code == 200
    assert source.commands == [("lock", "n2", 3.0)]


def test_a_refusal_is_409_with_the_availability_services_reason() -> None:
    source = fake()
    source.refuse["n3"] = "n3 hosts the last standby"
    r = call(source, "POST", "/nodes/n3/lock")
    assert r.status_code == 409
    assert r.json()["refused"] is True and r.json()["reason"] == "n3 hosts the last standby"


@pytest.mark.parametrize(
    ("code", "status"), [("locked", 409), ("conflict", 409), ("not-active", 503), ("bug", 502)]
)
def test_the_cluster_daemons_error_code_goes_on_with_its_http_status(
    code: str, status: int
) -> None:
    source = fake()
    source.fail["n3"] = ControlError(code, "n3 is locked by n1 (maintenance): new fans")
    r = call(source, "POST", "/nodes/n3/lock")
    assert r.status_code == status
    assert r.json()["error"] == code and "n1 (maintenance)" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timeout": "soon"}, "body.timeout"),
        ({"timeout": 0}, "body.timeout"),
        ({"timeout": 10, "force": True}, "body.force"),
    ],
)
def test_a_bad_payload_is_422_naming_the_field_and_nothing_is_sent(
    body: dict[str, Any], field: str
) -> None:
    source = fake()
    r = call(source, "POST", f"/instances/{SI}/switchover", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "usage"
    assert r.json()["message"].startswith(field + ":")
    assert source.commands == []


def test_a_body_that_is_not_json_is_422_and_nothing_is_sent() -> None:
    source = fake()
    r = call(
        source,
        "POST",
        "/nodes/n2/lock",
        content=b"{timeout",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert source.commands == []


def test_an_action_a_collection_does_not_take_is_not_routed() -> None:
    source = fake()
    assert call(source, "POST", "/nodes/n2/switchover").status_code in (404, 405)
    assert source.commands == []


# -- who may call ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "authorization", "tokens", "status"),
    [
        (LOOPBACK, None, (TOKEN,), 200),
        (("::1", 1), None, (), 200),
        (("::ffff:127.0.0.1", 1), None, (), 200),
        (("::ffff:10.10.0.2", 1), None, (TOKEN,), 401),
        (("127.0.0.1.evil", 1), None, (TOKEN,), 401),
        (REMOTE, None, (TOKEN,), 401),
        (REMOTE, "Bearer lab-token-2", (TOKEN,), 401),
        (REMOTE, "Basic bGFiLXRva2VuLTE=", (TOKEN,), 401),
        (REMOTE, "Bearer lab-token-1", (TOKEN,), 200),
        (REMOTE, "Bearer lab-token-1", (b"other", TOKEN), 200),
        (REMOTE, "Bearer lab-token-1", (), 403),
    ],
)
def test_who_may_call(
    client: tuple[str, int], authorization: str | None, tokens: tuple[bytes, ...], status: int
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = call(fake(), "GET", "/cluster", client=client, tokens=tokens, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_refused_caller_changes_nothing_even_with_a_good_payload() -> None:
    source = fake()
    for path in (f"/instances/{SI}/switchover", "/metrics", "/openapi.json", "/nowhere"):
        r = call(source, "POST" if "switch" in path else "GET", path, client=REMOTE)
        assert r.status_code == 401, path
    assert source.commands == []


# -- events, metrics, openapi ------------------------------------------------------------------


def test_events_stream_as_server_sent_events_and_end_with_an_error_event() -> None:
    source = fake()
    r = call(source, "GET", "/events", params={"since": 0})
    assert r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b]
    assert len(blocks) == len(source.events) + 1
    first = dict(line.split(": ", 1) for line in blocks[0].splitlines())
    assert first["id"] == str(source.events[0]["seq"])
    assert first["event"] == source.events[0]["kind"]
    assert json.loads(first["data"])["text"] == source.events[0]["text"]
    assert blocks[-1].startswith("event: error")


def test_metrics_parse_and_say_what_the_model_says() -> None:
    source = fake()
    r = call(source, "GET", "/metrics")
    assert r.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    primary = source.crim["instances"][SI]["primary"][0]
    node = source.crim["hosts"][primary]
    labels = (("group", "counter"), ("instance", SI))
    assert samples[("haos_instance_served", labels)] == 1.0
    assert samples[("haos_instance_failovers_total", labels)] == 0.0
    assert ("haos_instance_outage_seconds_total", labels) in samples
    key = (("component", primary), ("node", node), ("state", "primary"))
    assert samples[("haos_component_state", key)] == 1.0
    masters = [v for (name, _), v in samples.items() if name == "haos_node_master"]
    assert sorted(masters) == [0.0, 0.0, 1.0]


def test_openapi_is_served_and_the_committed_document_matches_the_code() -> None:
    served = call(fake(), "GET", "/openapi.json").json()
    assert served == openapi_document()
    assert json.loads(OPENAPI.read_text()) == served, (
        "docs/openapi.json is out of date; regenerate it:"
        " .venv/bin/python -m haos.mgmt --openapi > docs/openapi.json"
    )
