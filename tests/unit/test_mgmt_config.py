"""``[management]`` in cluster.toml and the token files haos-mgmtd reads at its start."""

from __future__ import annotations

from pathlib import Path

import pytest

from haos.config.loader import parse_config
from haos.config.model import ClusterConfig, ManagementSpec
from haos.errors import ConfigError
from haos.mgmt.daemon import read_tokens

BASE = """\
[cluster]
name = "c"

[[components]]
name = "n1"
class = "node"

[[nodes]]
name = "n1"
node_id = 1
component = "n1"
"""


def load(section: str) -> ClusterConfig:
    return parse_config(BASE + section, "cluster.toml")


def problems(section: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load(section)
    return [(p.key, p.reason) for p in caught.value.problems]


def test_without_a_management_section_only_this_node_may_call_on_port_7080() -> None:
    assert load("").management == ManagementSpec("127.0.0.1", 7080, (), None, None)


def test_a_full_management_section() -> None:
    spec = load(
        '[management]\nlisten = "::"\nport = 8443\ntoken_files = ["/etc/haos/a.token"]\n'
        'tls_cert = "/etc/haos/cert.pem"\ntls_key = "/etc/haos/key.pem"\n'
    ).management
    assert spec == ManagementSpec(
        "::", 8443, ("/etc/haos/a.token",), "/etc/haos/cert.pem", "/etc/haos/key.pem"
    )


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ("port = 0", "management.port", "at least 1"),
        ('port = "80"', "management.port", "integer"),
        ('listen = "mgmt.example"', "management.listen", "not an IPv4 or IPv6 address"),
        ('token_files = ["noc.token"]', "management.token_files[0]", "absolute path"),
        ('token_files = "/etc/a.token"', "management.token_files", "array"),
        ('token_files = ["/a", "/a"]', "management.token_files", "twice"),
        ('tls_cert = "/etc/cert.pem"', "management.tls_key", "both or neither"),
        ('tls_key = "/etc/key.pem"', "management.tls_cert", "both or neither"),
        ('token = "s3cret"', "management.token", "unknown key"),
    ],
)
def test_a_bad_management_section_is_refused_naming_the_key(
    section: str, key: str, words: str
) -> None:
    found = problems(f"[management]\n{section}\n")
    assert [k for k, _ in found] == [key], found
    assert words in found[0][1], found


def test_the_tokens_are_read_from_their_files_without_surrounding_whitespace(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").write_text("alpha-1\n")
    (tmp_path / "b").write_text("  beta-2 ")
    spec = ManagementSpec(token_files=(str(tmp_path / "a"), str(tmp_path / "b")))
    assert read_tokens(spec, "cluster.toml") == (b"alpha-1", b"beta-2")


def test_a_missing_empty_or_spaced_token_file_stops_the_daemon_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("one two\n")
    (tmp_path / "good").write_text("fine\n")
    files = tuple(str(tmp_path / n) for n in ("missing", "empty", "good", "two"))
    with pytest.raises(ConfigError) as caught:
        read_tokens(ManagementSpec(token_files=files), "cluster.toml")
    keys = [p.key for p in caught.value.problems]
    assert keys == [
        "management.token_files[0]",
        "management.token_files[1]",
        "management.token_files[3]",
    ]
    assert str(tmp_path / "missing") in str(caught.value)
