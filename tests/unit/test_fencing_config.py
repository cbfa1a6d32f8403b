"""The ``[fencing]`` section of cluster.toml: good files, and bad ones refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from haos.config.loader import parse_config
from haos.config.model import ClusterConfig, FenceDeviceSpec, SelfFenceSpec
from haos.errors import ConfigError

NODES = """\
[cluster]
name = "c"
"""
for _n in (1, 2, 3):
    NODES += f"""
[[components]]
name = "n{_n}"
class = "node"

[[nodes]]
name = "n{_n}"
node_id = {_n}
component = "n{_n}"
"""


def load(fencing: str) -> ClusterConfig:
    return parse_config(NODES + fencing, "cluster.toml")


def problems(fencing: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load(fencing)
    return [(p.key, p.reason) for p in caught.value.problems]


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "bmc.pass"
    path.write_text("s3cret\n")
    return path


def test_without_a_fencing_section_no_node_has_a_device_and_self_fencing_is_automatic() -> None:
    fencing = load("").fencing
    assert {fencing.device_of(n).kind for n in ("n1", "n2", "n3")} == {"none"}
    assert fencing.action == "reboot" and fencing.delay == 1.0 and fencing.base_delay == 0.0
    assert fencing.self_fence == SelfFenceSpec(required=False)


def test_an_agent_for_every_node_with_each_nodes_own_parameters_merged_over_the_shared(
    secret: Path,
) -> None:
    fencing = load(f"""
[fencing]
agent = "fence_ipmilan"
params = {{ username = "admin", lanplus = true, ipport = 623, ip = "10.0.0.1" }}
password_file = "{secret}"
action = "off"
delay = "2s"
base_delay = "250ms"
timeout = "30s"

[fencing.nodes.n2]
params = {{ ip = "10.0.0.2" }}
""").fencing
    assert fencing.action == "off" and fencing.delay == 2.0 and fencing.base_delay == 0.25
    assert fencing.timeout == 30.0
    shared = (("username", "admin"), ("lanplus", "1"), ("ipport", "623"))
    assert fencing.device_of("n1") == FenceDeviceSpec(
        "agent", "fence_ipmilan", (*shared, ("ip", "10.0.0.1")), str(secret)
    )
    assert fencing.device_of("n2") == FenceDeviceSpec(
        "agent", "fence_ipmilan", (*shared, ("ip", "10.0.0.2")), str(secret)
    )


def test_a_command_template_as_a_string_or_an_array_and_a_node_with_its_own_kind(
    secret: Path,
) -> None:
    fencing = load(f"""
[fencing]
command = "/usr/bin/fence-it --node '{{node}}' {{action}}"
[fencing.nodes.n3]
agent = "/opt/bin/fence_custom"
params = {{ plug = "{{3}}" }}
password_file = "{secret}"
[fencing.nodes.n2]
command = ["fence-it", "{{node_id}}"]
""").fencing
    assert fencing.device_of("n1") == FenceDeviceSpec(
        "command", command=("/usr/bin/fence-it", "--node", "{node}", "{action}")
    )
    assert fencing.device_of("n2").command == ("fence-it", "{node_id}")
    n3 = fencing.device_of("n3")
    assert (n3.kind, n3.agent, n3.params) == ("agent", "/opt/bin/fence_custom", (("plug", "{3}"),))


def test_a_node_naming_a_command_drops_the_shared_agent_and_its_parameters(secret: Path) -> None:
    fencing = load(f"""
[fencing]
agent = "fence_ipmilan"
params = {{ username = "admin" }}
password_file = "{secret}"
[fencing.nodes.n1]
command = "true"
""").fencing
    assert fencing.device_of("n1") == FenceDeviceSpec("command", command=("true",))
    assert fencing.device_of("n2").kind == "agent"


def test_self_fencing_configured_turned_off_or_required_on_its_default_device() -> None:
    on = load('[fencing]\nself_fence = { after = "3s", device = "/dev/watchdog1" }\n')
    assert on.fencing.self_fence == SelfFenceSpec(3.0, "/dev/watchdog1", 10.0, required=True)
    assert load("[fencing]\nself_fence = false\n").fencing.self_fence is None
    assert load("[fencing]\nself_fence = true\n").fencing.self_fence == SelfFenceSpec(required=True)


@pytest.mark.parametrize(
    ("fencing", "key", "words"),
    [
        ("bogus = 1", "fencing.bogus", "unknown key"),
        ('agent = "fence_x"\n[fencing.nodes.n2]\nip = "1"', "fencing.nodes.n2.ip", "unknown key"),
        ('agent = "fence_x"\nparams = { password = "x" }', "fencing.params.password",
         "password_file"),
        ('agent = "fence_x"\nparams = { passwd = "x" }', "fencing.params.passwd", "password_file"),
        ('agent = "fence_x"\npassword_file = "/nonexistent/n1.pass"', "fencing.password_file",
         "no such file: '/nonexistent/n1.pass'"),
        ('agent = "fence_x"\npassword_file = "n1.pass"', "fencing.password_file", "absolute"),
        ('agent = "fence_x"\ncommand = "x"', "fencing.command", "not both"),
        ('command = "x {nod}"', "fencing.command[1]", "unknown placeholder {nod}"),
        ('command = "x \'unclosed"', "fencing.command", "cannot split"),
        ("command = []", "fencing.command", "must not be empty"),
        ('command = "x"\nparams = { ip = "1" }', "fencing.params", "agent devices"),
        ('params = { ip = "1" }', "fencing.params", "needs agent"),
        ('command = "x"\n[fencing.nodes.n2]\nparams = { ip = "1" }', "fencing.nodes.n2.params",
         "agent devices"),
        ('[fencing.nodes.n2]\npassword_file = "/etc/hostname"', "fencing.nodes.n2.password_file",
         "needs agent"),
        ('agent = "fence x"', "fencing.agent", "bad fence agent"),
        ("agent = 3", "fencing.agent", "must be a string"),
        ('agent = "fence_x"\nparams = { ip = ["1"] }', "fencing.params.ip", "must be a string"),
        ('agent = "fence_x"\nparams = { IP = "1" }', "fencing.params.IP", "parameter name"),
        ('agent = "fence_x"\nparams = { action = "on" }', "fencing.params.action",
         "parameter name"),
        ('agent = "fence_x"\nparams = { ip = "1\\n2" }', "fencing.params.ip", "one line"),
        ('agent = "fence_x"\nparams = 3', "fencing.params", "must be a table"),
        ('action = "explode"', "fencing.action", "'explode' is not one of: reboot, off"),
        ('delay = "soon"', "fencing.delay", "bad duration"),
        ("base_delay = -1", "fencing.base_delay", "negative"),
        ("timeout = 0", "fencing.timeout", "longer than zero"),
        ('[fencing.nodes.n9]\nagent = "fence_x"', "fencing.nodes.n9", "no node 'n9'"),
        ("nodes = 3", "fencing.nodes", "must be a table"),
        ('self_fence = { after = "5s", bogus = 1 }', "fencing.self_fence.bogus", "unknown key"),
        ('self_fence = { device = "/tmp/wd" }', "fencing.self_fence.device", "under /dev/"),
        ('self_fence = { after = "soon" }', "fencing.self_fence.after", "bad duration"),
        ('self_fence = "on"', "fencing.self_fence", "must be a table"),
    ],
)  # fmt: skip
def test_a_bad_fencing_section_is_refused_naming_the_key(
    fencing: str, key: str, words: str
) -> None:
    # [fencing.nodes.*] tables follow the keys of [fencing] itself
    head, _, rest = fencing.partition("[fencing.nodes.")
    text = "[fencing]\n" + head + ("\n[fencing.nodes." + rest if rest else "")
    found = problems(text + "\n")
    assert any(k == key and words in reason for k, reason in found), found


def test_the_error_names_the_file_and_nothing_of_a_bad_file_is_returned() -> None:
    with pytest.raises(ConfigError) as caught:
        load('[fencing]\naction = "explode"\ndelay = "2s"\n')
    assert "cluster.toml: fencing.action:" in str(caught.value)
