"""OcfAgent against a tiny fake OCF agent written into tmp_path: environment, rc mapping,
timeouts, meta-data parsing and parameter validation."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from haos.errors import ConfigError, UnavailableError
from haos.services.ocf import (
    OcfAction,
    OcfAgent,
    OcfAgentError,
    OcfRc,
    check_params,
    parse_duration,
    parse_metadata,
)
from haos.services.ocf.metadata import MetadataError
from haoslab.testing.procs import alive as _alive

# A fake agent: start/stop/monitor/promote/demote over a state file; OCF_RESKEY_rc forces the
# exit status of every action; OCF_RESKEY_envdump gets the environment; action "hang" is what
# start does when OCF_RESKEY_hang is set: a helper that writes its pid, then both sleep.
FAKE_AGENT = """\
#!/bin/sh
[ -n "$OCF_RESKEY_envdump" ] && env > "$OCF_RESKEY_envdump"
[ -n "$OCF_RESKEY_rc" ] && { echo "forced exit"; exit "$OCF_RESKEY_rc"; }
st="$OCF_RESKEY_state"
case "$1" in
meta-data) cat <<'END'
<?xml version="1.0"?>
<resource-agent name="fake" version="0.1">
<version>1.1</version>
<shortdesc lang="en">fake</shortdesc>
<parameters>
<parameter name="state" unique="1" required="1">
<shortdesc lang="en">State file</shortdesc>
<content type="string"/>
</parameter>
<parameter name="rc"><content type="integer" default="0"/></parameter>
<parameter name="envdump"><content type="string" default=""/></parameter>
<parameter name="hang"><content type="boolean" default="false"/></parameter>
</parameters>
<actions>
<action name="start" timeout="20s"/>
<action name="stop" timeout="2m"/>
<action name="monitor" timeout="500ms" interval="10" depth="0" role="Promoted"/>
<action name="monitor" timeout="20s" interval="11s" depth="0" role="Unpromoted"/>
<action name="promote" timeout="10s"/>
<action name="demote" timeout="10s"/>
<action name="meta-data" timeout="5s"/>
</actions>
</resource-agent>
END
    exit 0 ;;
start)
    if [ -n "$OCF_RESKEY_hang" ]; then
        sh -c 'echo $$ > "$0.helper"; exec sleep 60' "$st" &
        sleep 60
    fi
    echo started > "$st"; exit 0 ;;
stop) rm -f "$st"; exit 0 ;;
monitor)
    [ -f "$st" ] || exit 7
    [ "$(cat "$st")" = promoted ] && exit 8
    exit 0 ;;
promote) echo promoted > "$st"; exit 0 ;;
demote) echo started > "$st"; exit 0 ;;
validate-all) echo "ERROR: nothing to validate" >&2; exit 6 ;;
*) exit 3 ;;
esac
"""


@pytest.fixture
def ocf_root(tmp_path: Path) -> Path:
    agent = tmp_path / "ocf" / "resource.d" / "test" / "fake"
    agent.parent.mkdir(parents=True)
    agent.write_text(FAKE_AGENT)
    agent.chmod(agent.stat().st_mode | stat.S_IXUSR)
    return tmp_path / "ocf"


def fake(ocf_root: Path, **params: str) -> OcfAgent:
    params.setdefault("state", str(ocf_root.parent / "fake.state"))
    return OcfAgent(
        "test", "fake", params, "fake1", {"start": 5.0, "monitor": 3.0}, ocf_root=str(ocf_root)
    )


def test_environment_is_the_ocf_one_and_nothing_else(ocf_root: Path) -> None:
    dump = ocf_root.parent / "env"
    agent = OcfAgent(
        "test",
        "fake",
        {"state": "/x", "envdump": str(dump)},
        "db:0",
        {"monitor": 2.5},
        promotable=True,
        clone_max=3,
        monitor_interval=11.0,
        ocf_root=str(ocf_root),
    )
    os.environ["HAOS_TEST_LEAK"] = "1"
    try:
        asyncio.run(agent.monitor())
    finally:
        del os.environ["HAOS_TEST_LEAK"]
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "HAOS_TEST_LEAK" not in env
    expected = {
        "OCF_ROOT": str(ocf_root),
        "OCF_RA_VERSION_MAJOR": "1",
        "OCF_RA_VERSION_MINOR": "1",
        "OCF_RESOURCE_INSTANCE": "db:0",
        "OCF_RESOURCE_TYPE": "fake",
        "OCF_RESOURCE_PROVIDER": "test",
        "OCF_RESKEY_state": "/x",
        "OCF_RESKEY_CRM_meta_timeout": "2500",
        "OCF_RESKEY_CRM_meta_interval": "11000",
        "OCF_RESKEY_CRM_meta_promotable": "true",
        "OCF_RESKEY_CRM_meta_clone_max": "3",
        "OCF_RESKEY_CRM_meta_promoted_max": "1",
        "OCF_RESKEY_CRM_meta_master_max": "1",
        "OCF_RESKEY_CRM_meta_globally_unique": "false",
    }
    assert {k: env.get(k) for k in expected} == expected


def test_probe_and_other_actions_have_interval_zero_and_their_own_timeout(ocf_root: Path) -> None:
    agent = fake(ocf_root)
    probe = agent.environment(OcfAction.MONITOR)
    start = agent.environment(OcfAction.START)
    assert probe["OCF_RESKEY_CRM_meta_interval"] == "0"
    assert (start["OCF_RESKEY_CRM_meta_timeout"], start["OCF_RESKEY_CRM_meta_interval"]) == (
        "5000",
        "0",
    )
    assert agent.environment(OcfAction.STOP)["OCF_RESKEY_CRM_meta_timeout"] == "20000"
    assert "OCF_RESKEY_CRM_meta_promotable" not in start


def test_lifecycle_over_the_fake_agent(ocf_root: Path) -> None:
    agent = fake(ocf_root)

    async def scenario() -> list[OcfRc]:
        rcs = []
        for step in (
            agent.monitor(probe=True),
            agent.start(),
            agent.monitor(),
            agent.promote(),
            agent.monitor(),
            agent.demote(),
            agent.monitor(),
            agent.stop(),
            agent.monitor(),
        ):
            rcs.append((await step).rc)
        return rcs

    assert asyncio.run(scenario()) == [
        OcfRc.NOT_RUNNING,
        OcfRc.SUCCESS,
        OcfRc.SUCCESS,
        OcfRc.SUCCESS,
        OcfRc.RUNNING_PROMOTED,
        OcfRc.SUCCESS,
        OcfRc.SUCCESS,
        OcfRc.SUCCESS,
        OcfRc.NOT_RUNNING,
    ]


@pytest.mark.parametrize(
    ("status", "rc"),
    [(n, OcfRc(n)) for n in range(10)]
    + [(10, OcfRc.ERR_GENERIC), (127, OcfRc.ERR_GENERIC), (190, OcfRc.ERR_GENERIC)],
)
def test_exit_status_maps_onto_the_ocf_rc(ocf_root: Path, status: int, rc: OcfRc) -> None:
    result = asyncio.run(fake(ocf_root, rc=str(status)).start())
    assert (result.action, result.rc, result.exit_status) == (OcfAction.START, rc, status)
    assert result.stdout.strip() == "forced exit"
    assert result.ok is (status == 0) and not result.timed_out
    assert result.duration >= 0


def test_rc_names_are_the_specs() -> None:
    assert [str(rc) for rc in OcfRc] == [
        "OCF_SUCCESS",
        "OCF_ERR_GENERIC",
        "OCF_ERR_ARGS",
        "OCF_ERR_UNIMPLEMENTED",
        "OCF_ERR_PERM",
        "OCF_ERR_INSTALLED",
        "OCF_ERR_CONFIGURED",
        "OCF_NOT_RUNNING",
        "OCF_RUNNING_PROMOTED",
        "OCF_FAILED_PROMOTED",
    ]
    assert OcfRc.from_exit(None) is OcfRc.ERR_GENERIC


def test_failed_action_is_described_by_the_agents_error_line(ocf_root: Path) -> None:
    result = asyncio.run(fake(ocf_root).validate_all())
    assert result.rc is OcfRc.ERR_CONFIGURED
    assert result.describe() == (
        "validate-all returned OCF_ERR_CONFIGURED (exit 6): ERROR: nothing to validate"
    )


def test_agent_that_hangs_is_killed_with_its_helpers_within_its_timeout(ocf_root: Path) -> None:
    agent = OcfAgent(
        "test",
        "fake",
        {"state": str(ocf_root.parent / "s"), "hang": "1"},
        "fake1",
        {"start": 0.5},
        ocf_root=str(ocf_root),
    )
    started = time.monotonic()
    result = asyncio.run(agent.start())
    assert time.monotonic() - started < 2.5
    assert result.timed_out and result.exit_status is None and result.rc is OcfRc.ERR_GENERIC
    assert "timed out after 0.5" in result.describe()
    helper = int((ocf_root.parent / "s.helper").read_text())
    deadline = time.monotonic() + 2
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(helper), "the agent's helper outlived the timeout"


def test_missing_agent_is_unavailable(ocf_root: Path) -> None:
    agent = OcfAgent("test", "nosuch", {}, "x", ocf_root=str(ocf_root))
    with pytest.raises(UnavailableError, match="nosuch"):
        asyncio.run(agent.start())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"provider": "../etc"}, "provider"),
        ({"type": "a/b"}, "type"),
        ({"instance": ""}, "instance"),
        ({"params": {"bad-name": "1"}}, "params.bad-name"),
        ({"timeouts": {"start": 0.0}}, "timeouts.start"),
        ({"timeouts": {"frobnicate": 1.0}}, "timeouts.frobnicate"),
    ],
)
def test_bad_agent_config_is_a_config_error_naming_the_key(
    kwargs: dict[str, object], key: str
) -> None:
    args: dict[str, object] = {
        "provider": "heartbeat",
        "type": "Dummy",
        "params": {},
        "instance": "d",
        "timeouts": {},
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as e:
        OcfAgent(**args)  # type: ignore[arg-type]
    assert [p.key for p in e.value.problems] == [key]


def test_meta_data_is_parsed(ocf_root: Path) -> None:
    meta = asyncio.run(fake(ocf_root).meta_data())
    assert (meta.name, meta.version) == ("fake", "1.1")
    state = meta.parameter("state")
    assert state is not None
    assert (state.required, state.unique, state.default, state.shortdesc) == (
        True,
        True,
        None,
        "State file",
    )
    rc = meta.parameter("rc")
    assert rc is not None and (rc.required, rc.type, rc.default) == (False, "integer", "0")
    assert meta.promotable
    promoted = meta.action("monitor", role="Promoted")
    assert promoted is not None and (promoted.timeout, promoted.interval) == (0.5, 10.0)
    unpromoted = meta.action("monitor", role="Unpromoted")
    assert unpromoted is not None and unpromoted.interval == 11.0 and unpromoted.depth == 0
    assert meta.default_timeouts()["stop"] == 120.0
    assert meta.default_timeouts()["monitor"] == 0.5


def test_configured_params_are_checked_against_the_meta_data(ocf_root: Path) -> None:
    meta = asyncio.run(fake(ocf_root).check_params())
    with pytest.raises(ConfigError) as e:
        check_params(meta, {"colour": "red"}, source="db.toml")
    assert [str(p) for p in e.value.problems] == [
        "db.toml: params.colour: unknown parameter of OCF agent fake",
        "db.toml: params.state: required by OCF agent fake, not set",
    ]
    agent = fake(ocf_root, colour="red")
    with pytest.raises(ConfigError, match=r"params\.colour"):
        asyncio.run(agent.check_params())


def test_meta_data_that_fails_is_an_agent_error(ocf_root: Path) -> None:
    with pytest.raises(OcfAgentError, match="OCF_ERR_PERM"):
        asyncio.run(fake(ocf_root, rc="4").meta_data())


@pytest.mark.parametrize(
    "xml",
    [
        "not xml",
        "<other/>",
        "<resource-agent><parameters><parameter/></parameters></resource-agent>",
        '<resource-agent><actions><action name="start" timeout="soon"/></actions></resource-agent>',
    ],
)
def test_bad_meta_data_is_a_metadata_error(xml: str) -> None:
    with pytest.raises(MetadataError):
        parse_metadata(xml)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20s", 20.0),
        ("20", 20.0),
        ("2m", 120.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
