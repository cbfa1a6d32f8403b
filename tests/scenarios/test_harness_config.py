"""The harness's pure parts: the corosync.conf it writes and the requests it refuses.

No root or corosync needed.
"""

from __future__ import annotations

import re

import pytest

from haos.errors import ConfigError, UsageError
from haoslab.harness import Cluster, ClusterSpec
from haoslab.harness.config import render_corosync_conf
from haoslab.harness.netns import Names

NAMES = Names("0a1b2c")


def section(text: str, name: str) -> str:
    """The body of the first ``name {`` section (no nesting beyond one level needed here)."""
    match = re.search(rf"^\s*{name} {{\n(.*?)^\s*}}\n", text, re.MULTILINE | re.DOTALL)
    assert match, f"no section {name} in\n{text}"
    return match[1]


def test_three_nodes_get_the_measured_stable_timers_on_both_links() -> None:
    conf = render_corosync_conf(ClusterSpec(nodes=3), NAMES)
    totem = section(conf, "totem")
    for line in (
        "transport: knet",
        "link_mode: active",
        "token: 150",
        "token_coefficient: 0",
        "crypto_cipher: aes256",
        "crypto_hash: sha256",
        "cluster_name: haos-0a1b2c",
        "seqno_unchanged_const: 1",
    ):
        assert f"    {line}\n" in totem
    assert "hold:" not in totem  # corosync's own, derived from the token
    interfaces = re.findall(r"interface \{\n(.*?)\}", conf, re.DOTALL)
    assert len(interfaces) == 2
    for link, body in enumerate(interfaces):
        assert f"linknumber: {link}" in body
        assert "knet_ping_interval: 200" in body
        assert "knet_ping_timeout: 600" in body
        assert "knet_pong_count: 2" in body
    for node in (1, 2, 3):
        assert f"ring0_addr: 10.10.0.{node}\n" in conf
        assert f"ring1_addr: 10.11.0.{node}\n" in conf
    assert "provider: corosync_votequorum" in conf
    assert "two_node" not in conf


def test_totem_idle_settings_are_left_to_corosync_or_set() -> None:
    default = section(render_corosync_conf(ClusterSpec(seqno_unchanged_const=None), NAMES), "totem")
    assert "seqno_unchanged_const" not in default and "hold" not in default
    tuned = ClusterSpec(seqno_unchanged_const=5, hold_ms=20)  # corosync takes 14..token-1
    totem = section(render_corosync_conf(tuned, NAMES), "totem")
    assert "    seqno_unchanged_const: 5\n" in totem and "    hold: 20\n" in totem


def test_only_a_two_node_cluster_gets_two_node() -> None:
    assert "two_node: 1" in section(render_corosync_conf(ClusterSpec(nodes=2), NAMES), "quorum")


def test_every_opening_brace_stays_on_its_section_line() -> None:
    conf = render_corosync_conf(ClusterSpec(nodes=3), NAMES)
    for line in conf.splitlines():
        assert line.strip() != "{"
        if "{" in line:
            assert re.fullmatch(r"\s*[a-z_]+ \{", line), line
        if "}" in line:
            assert line.strip() == "}", line


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": 33}, "nodes"),
        ({"token_ms": 100}, "token_ms"),
        ({"knet_ping_timeout_ms": 200}, "knet_ping_timeout_ms"),
        ({"seqno_unchanged_const": 0}, "seqno_unchanged_const"),
        ({"hold_ms": 150}, "hold_ms"),
        ({"hold_ms": 13}, "hold_ms"),
    ],
)
def test_a_spec_corosync_would_refuse_or_flap_with_is_rejected(
    spec: dict[str, int], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ClusterSpec(**spec)
    assert [p.key for p in caught.value.problems] == [key]


def test_names_fit_ifnamsiz_and_never_touch_the_host() -> None:
    assert len(Names.port(32, 1)) < 16
    assert NAMES.switch == "haos-0a1b2c-sw" and NAMES.node(3) == "haos-0a1b2c-n3"
    assert Names.address(3, 0) == "10.10.0.3" and Names.address(3, 1) == "10.11.0.3"


def test_bad_fault_requests_are_refused_before_anything_happens() -> None:
    cluster = Cluster(ClusterSpec(nodes=3))  # never started: nothing may be touched
    with pytest.raises(UsageError, match="overlap"):
        cluster.partition([[1, 2], [2, 3]])
    with pytest.raises(UsageError, match="no node 4"):
        cluster.partition([[1, 4]])
    with pytest.raises(UsageError, match="no link 2"):
        cluster.cut_link(1, 2)
    with pytest.raises(UsageError, match=r"0\.\.100"):
        cluster.loss(1, 101)
