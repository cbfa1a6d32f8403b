"""What the nodes run: agents say what each component runs as, and an instance counts as
served only when each of its primaries' agents says it runs as primary."""

from __future__ import annotations

import pytest

from haos.errors import UsageError
from haos.services.clusterapi import serving
from haos.services.orderbook import NodeOrders, Running, running_from_json

HOSTS = {"s/n1/app": "n1", "s/n2/app": "n2", "s": None}


def said(state: str) -> dict[str, object]:
    return {"state": state, "at": 1.0, "detail": ""}


@pytest.mark.parametrize(
    ("primaries", "running", "served"),
    [
        (["s/n1/app"], {"n1": {"s/n1/app": said("primary")}}, True),
        ([], {"n1": {"s/n1/app": said("primary")}}, False),  # nobody assigned
        (["s/n1/app"], {"n1": {"s/n1/app": said("spare")}}, False),  # ordered, not taken
        (["s/n1/app"], {"n1": {"s/n1/app": said("failed")}}, False),
        (["s/n1/app"], {"n1": {}}, False),  # its agent has said nothing (yet)
        (["s/n1/app"], {"n1": None}, False),  # its node did not answer
        (["s/n1/app"], {}, False),
        (["s/n1/app", "s/n2/app"], {"n1": {"s/n1/app": said("primary")}, "n2": {}}, False),
    ],
)
def test_an_instance_is_served_only_when_its_primaries_run_as_primary(
    primaries: list[str], running: dict[str, dict[str, object] | None], served: bool
) -> None:
    assert serving(primaries, HOSTS, running) is served


def test_the_agents_word_is_checked_and_kept_until_the_agent_goes() -> None:
    book = NodeOrders("n1")
    comp, run = running_from_json({"component": "s/n1/app", "state": "primary", "at": 2.5})
    book.ran(comp, run)
    assert book.running == {"s/n1/app": Running("primary", 2.5)}
    book.agent_gone()
    assert book.running == {}
    for bad, words in [
        ({"component": "", "state": "primary", "at": 1}, "bad component"),
        ({"component": "x", "state": "boss", "at": 1}, "bad state"),
        ({"component": "x", "state": "spare", "at": "now"}, "'at' must be a number"),
        ({"component": "x", "state": "spare", "at": 1, "detail": 3}, "'detail' must be text"),
        ([], "expected an object"),
    ]:
        with pytest.raises(UsageError, match=words):
            running_from_json(bad)
