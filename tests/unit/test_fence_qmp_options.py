"""fence_haos_qmp's options: stdin lines and arguments, checked before any device is asked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from haos.cluster.fencing.agent import metadata_parameters
from haos.cluster.fencing.qmp_agent import (
    PARAMETERS,
    Options,
    arguments,
    metadata,
    read_options,
)
from haos.cluster.fencing.qmp_monitor import Endpoint
from haos.errors import UsageError


def test_stdin_lines_become_options_with_aliases_and_dashes_resolved() -> None:
    text = "action=off\nport=n2\nqmp-dir=/run/q\n\n# a comment\nnodename=n2\n"
    assert read_options(text) == {"action": "off", "plug": "n2", "qmp_dir": "/run/q"}


def test_unknown_stdin_option_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert read_options("action=status\nqmp_path=/x\n") == {"action": "status"}
    assert "Ignoring unknown option 'qmp_path=/x'" in caplog.text


def test_arguments_are_read_like_fence_agents_getopt() -> None:
    values = arguments(["-o", "reboot", "-n", "n1", "--qmp-dir", "/run/q", "-u", "4401"])
    assert values == {"action": "reboot", "plug": "n1", "qmp_dir": "/run/q", "ipport": "4401"}


@pytest.mark.parametrize(
    ("values", "endpoint"),
    [
        ({"qmp_socket": "/run/g.sock"}, Endpoint(path="/run/g.sock")),
        ({"qmp_dir": "/run/q", "plug": "n2"}, Endpoint(path="/run/q/n2.sock")),
        ({"ip": "10.0.2.100", "ipport": "4402"}, Endpoint(host="10.0.2.100", port=4402)),
    ],
)
def test_the_options_name_one_monitor(values: dict[str, str], endpoint: Endpoint) -> None:
    assert Options.parse(values).endpoint() == endpoint


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"action": "explode", "qmp_socket": "/s"}, "action must be one of"),
        ({"off_method": "pull", "qmp_socket": "/s"}, "off_method must be quit or stop"),
        ({"plug": "../etc", "qmp_dir": "/run/q"}, "is not a guest name"),
        ({"power_timeout": "soon", "qmp_socket": "/s"}, "power_timeout must be a number"),
        ({"login_timeout": "0", "qmp_socket": "/s"}, "login_timeout must be positive"),
    ],
)
def test_bad_option_values_are_named(values: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Options.parse(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "exactly one of qmp_socket, qmp_dir"),
        ({"qmp_socket": "/s", "ip": "h", "ipport": "1"}, "exactly one of qmp_socket, qmp_dir"),
        ({"qmp_dir": "/run/q"}, "qmp_dir needs plug"),
        ({"ip": "10.0.2.100"}, "ip needs ipport"),
    ],
)
def test_options_that_do_not_say_where_the_monitor_is_are_refused(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        Options.parse(values).endpoint()


def test_metadata_is_fence_agents_xml_naming_every_parameter_and_action() -> None:
    xml = metadata()
    assert metadata_parameters(xml) == {name for name, *_ in PARAMETERS}
    root = ET.fromstring(xml)
    actions = {a.attrib["name"] for a in root.iter("action")}
    assert {"on", "off", "reboot", "status", "monitor", "metadata", "validate-all"} <= actions
