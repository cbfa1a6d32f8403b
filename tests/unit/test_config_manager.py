"""A component's ``manager`` table: how the node agent runs it, and the ways to get it wrong."""

from __future__ import annotations

import pytest

from haos.config.loader import parse_config
from haos.config.model import ManagerSpec
from haos.errors import ConfigError

HEAD = """
[cluster]
name = "c"
[[components]]
name = "n1"
class = "node"
[[components]]
name = "hw"
class = "board"
[[nodes]]
name = "n1"
node_id = 1
component = "n1"
"""


def config_with(manager: str, name: str = "n1/app") -> str:
    return HEAD + f'[[components]]\nname = "{name}"\nclass = "application"\nmanager = {manager}\n'


def problems(manager: str, name: str = "n1/app") -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(config_with(manager, name), "c.toml")
    assert all(p.file == "c.toml" for p in info.value.problems)
    return [(p.key, p.reason) for p in info.value.problems]


def test_each_kind_loads_into_a_manager_spec_with_defaults() -> None:
    text = (
        HEAD
        + """
[[components]]
name = "n1/web"
class = "application"
manager = { kind = "systemd", unit = "nginx.service" }
[[components]]
name = "n1/dummy"
class = "application"
[components.manager]
kind = "ocf"
agent = "ocf:heartbeat:Dummy"
params = { state = "/run/d" }
stop_timeout = "2s"
[[components]]
name = "n1/demo"
class = "application"
[components.manager]
kind = "client"
command = ["python3", "-m", "haos.apps.counter"]
environment = { PORT = "7000" }
quiesce_timeout = "500ms"
"""
    )
    config = parse_config(text, "c.toml")
    assert config.manager("n1/web") == ManagerSpec("systemd", unit="nginx.service")
    assert config.manager("n1/dummy") == ManagerSpec(
        "ocf", agent="ocf:heartbeat:Dummy", params={"state": "/run/d"}, stop_timeout=2.0
    )
    demo = config.manager("n1/demo")
    assert demo is not None
    assert demo.command == ("python3", "-m", "haos.apps.counter")
    assert demo.environment == {"PORT": "7000"}
    assert (demo.quiesce_timeout, demo.stop_timeout, demo.promotable) == (0.5, 10.0, None)
    assert config.manager("n1") is None and config.manager("hw") is None


def test_promotable_is_taken_as_given() -> None:
    spec = ManagerSpec("ocf", agent="ocf:pacemaker:Stateful", promotable=False)
    text = config_with('{ kind = "ocf", agent = "ocf:pacemaker:Stateful", promotable = false }')
    assert parse_config(text, "c.toml").manager("n1/app") == spec


KEY = "components[2].manager"


@pytest.mark.parametrize(
    ("manager", "key", "reason"),
    [
        ('"nginx.service"', KEY, "must be a table"),
        ('{ unit = "x.service" }', f"{KEY}.kind", "missing required key; one of: systemd"),
        ('{ kind = "docker" }', f"{KEY}.kind", "'docker' is not one of: systemd, ocf, client"),
        ('{ kind = "sytemd", unit = "x.service" }', f"{KEY}.kind", "did you mean 'systemd'"),
        ('{ kind = "systemd" }', f"{KEY}.unit", "missing required key"),
        ('{ kind = "systemd", unit = "x.socket" }', f"{KEY}.unit", "must end in .service"),
        ('{ kind = "systemd", unit = "a b.service" }', f"{KEY}.unit", "bad unit name"),
        ('{ kind = "systemd", unit = "" }', f"{KEY}.unit", "must not be empty"),
        ('{ kind = "ocf", agent = "Dummy" }', f"{KEY}.agent", "write ocf:<provider>:<type>"),
        (
            '{ kind = "ocf", agent = "ocf:heartbeat:Dummy", params = { state = 1 } }',
            f"{KEY}.params.state",
            "must be a string",
        ),
        (
            '{ kind = "ocf", agent = "ocf:heartbeat:Dummy", params = { "a-b" = "1" } }',
            f"{KEY}.params.a-b",
            "not a valid name",
        ),
        (
            '{ kind = "ocf", agent = "ocf:heartbeat:Dummy", promotable = "yes" }',
            f"{KEY}.promotable",
            "must be a boolean",
        ),
        ('{ kind = "client" }', f"{KEY}.command", "missing required key"),
        ('{ kind = "client", command = "python3 app.py" }', f"{KEY}.command", "must be an array"),
        ('{ kind = "client", command = [] }', f"{KEY}.command", "must not be empty"),
        ('{ kind = "client", command = ["python3", 3] }', f"{KEY}.command[1]", "must be a string"),
        (
            '{ kind = "client", command = ["x"], environment = { PATH = ["/bin"] } }',
            f"{KEY}.environment.PATH",
            "must be a string",
        ),
        (
            '{ kind = "client", command = ["x"], quiesce_timeout = "soon" }',
            f"{KEY}.quiesce_timeout",
            "bad duration",
        ),
        ('{ kind = "client", command = ["x"], stop_timeout = 0 }', f"{KEY}.stop_timeout", "zero"),
        (
            '{ kind = "client", command = ["x"], unit = "x.service" }',
            f"{KEY}.unit",
            "is a key of systemd managers, not of client",
        ),
        (
            '{ kind = "systemd", unit = "x.service", quiesce_timeout = "1s" }',
            f"{KEY}.quiesce_timeout",
            "is a key of client managers, not of systemd",
        ),
        ('{ kind = "systemd", unit = "x.service", colour = 1 }', f"{KEY}.colour", "unknown key"),
    ],
)
def test_bad_manager_is_reported_at_its_key(manager: str, key: str, reason: str) -> None:
    found = problems(manager)
    assert len(found) == 1, found
    assert found[0][0] == key
    assert reason in found[0][1]


def test_a_managed_component_outside_every_node_is_refused() -> None:
    found = problems('{ kind = "systemd", unit = "x.service" }', name="hw/app")
    reason = "component 'hw/app' lies inside no node's component: no agent would run it"
    assert found == [(KEY, reason)]


def test_problems_of_manager_and_component_are_all_reported() -> None:
    text = HEAD + (
        '[[components]]\nname = "n1/app"\nclass = "nosuch"\n'
        'manager = { kind = "client", command = [] }\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    keys = sorted(p.key for p in info.value.problems)
    assert keys == ["components[2].class", f"{KEY}.command"]
