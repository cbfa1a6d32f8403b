"""Hostile configuration files: parser limits, durations at the edges, audit targets the node
agent could never run, and huge values -- each a clear ConfigError, never a traceback."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haos.config import audits, schema
from haos.config.examples import load_builtin_example
from haos.config.loader import load_config, parse_config
from haos.config.model import AuditSpec, CorrelationPolicy, ManagerSpec
from haos.errors import ConfigError, ConfigProblem, ModelError
from haos.model.redundancy import RecoveryPolicy
from haos.services.hm.probes import CommandProbe, HttpProbe

HEAD = """\
[cluster]
name = "c"
[[components]]
name = "n1"
class = "node"
[[nodes]]
name = "n1"
node_id = 1
component = "n1"
[[components]]
name = "n1/app"
class = "application"
"""


def audit(
    target: str, kind: str = "command", period: str = '"1s"', timeout: str = '"500ms"'
) -> str:
    return HEAD + (
        f'[[audits]]\ncomponent = "n1/app"\nname = "alive"\nperiod = {period}\n'
        f'timeout = {timeout}\nkind = "{kind}"\ntarget = {toml_string(target)}\n'
    )


def toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def problems(text: str) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "hostile.toml")
    assert all(p.file == "hostile.toml" for p in info.value.problems)
    return info.value.problems


# --- limits of the TOML parser and of Python's int() ---------------------------------------------


def test_arrays_nested_5000_deep_are_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(HEAD + "[recovery]\nrestart_max = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert "nested too deep" in problem.reason


def test_an_integer_of_5000_digits_is_a_config_error_naming_the_line_and_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "long.toml"
    path.write_text(HEAD + '[recovery]\nnote = "' + "7" * 5000 + '"\nrestart_max = ' + "9" * 5000)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    line = HEAD.count("\n") + 3
    assert problem.reason.startswith(f"line {line} (key 'restart_max'): an integer literal has")
    assert len(str(info.value)) < 200


# --- every duration setting has a lower bound and survives huge numbers ---------------------------

DURATION_FIELDS = [
    pytest.param(schema.RECOVERY, RecoveryPolicy, id="recovery"),
    pytest.param(schema.CORRELATION, CorrelationPolicy, id="correlation"),
    pytest.param(schema.MANAGER + schema.MANAGER_BY_KIND["client"], ManagerSpec, id="manager"),
]
TINY_OR_HUGE = [1e-7, 0.0009, "0.5ms", 10**400, "1" + "0" * 400 + "s", -1, float("inf")]


def _float_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.type in (float, "float")}


@pytest.mark.parametrize(("settings", "cls"), DURATION_FIELDS)
def test_every_duration_setting_refuses_tiny_and_huge_values(
    settings: tuple[schema.Setting, ...], cls: type
) -> None:
    by_field = {s.field: s for s in settings}
    fields = _float_fields(cls)
    assert fields
    for name in fields:
        convert = by_field[name].convert
        assert convert("2s") == 2.0
        for bad in TINY_OR_HUGE:
            with pytest.raises(schema.Invalid):
                convert(bad)


def test_audit_durations_refuse_tiny_and_huge_values() -> None:
    assert _float_fields(AuditSpec) == {"period", "timeout"}
    for bad in TINY_OR_HUGE:
        with pytest.raises(schema.Invalid, match=r"^period"):
            audits.audit_timing(bad, "1ms")
        with pytest.raises(schema.Invalid, match=r"^timeout"):
            audits.audit_timing("1h", bad)


def test_a_huge_integer_duration_is_a_config_error_not_an_overflow() -> None:
    (problem,) = problems(HEAD + "[recovery]\nrecovery_timeout = " + "9" * 400 + "\n")
    assert problem.key == "recovery.recovery_timeout"
    assert "must be at most 1.8e308 seconds, not an integer of 400 digits" in problem.reason


# --- audit timing: one rule for the loader and the application socket -----------------------------


@pytest.mark.parametrize(
    ("period", "timeout"),
    [(1e-7, "1ms"), ("10ms", "1ms"), ("1s", "1s"), ("1s", 2), ("1s", 1e-7), ("1s", 10**400)],
)
def test_the_loader_refuses_audit_timing_by_the_shared_rule(
    period: object, timeout: object
) -> None:
    found = problems(audit("/bin/true", period=toml_value(period), timeout=toml_value(timeout)))
    with pytest.raises(schema.Invalid) as shared:
        audits.audit_timing(period, timeout)
    assert [(p.key, p.reason) for p in found] == [
        ("audits[0]" + shared.value.at, shared.value.reason)
    ]


def test_audit_timing_is_converted_to_seconds() -> None:
    (spec,) = parse_config(audit("/bin/true", period='"2s"', timeout="0.5"), "ok.toml").audits
    assert (spec.period, spec.timeout) == (2.0, 0.5)


# --- audit targets: refused at load when the node agent's probe could never run them ------------

REFUSED = [
    ("command", "/bin/true\0--x", "must not contain NUL"),
    ("command", "/bin/echo 'unbalanced", "No closing quotation"),
    ("command", "/bin/echo trailing\\", "No escaped character"),
    ("command", "   ", "empty command line"),
    ("command", "/bin/" + "x" * 5000, "too long: 5005 characters, at most 4096"),
    ("http", "https://127.0.0.1/health", "http:// URLs only, not 'https://'"),
    ("http", "127.0.0.1:8080/health", "http:// URLs only"),
    ("http", "http://10.0.0.7:8080/health", "must target this node"),
    ("http", "http://example.com/health", "must target this node"),
    ("http", "http:///health", "must target this node"),
    ("http", "http://127.0.0.1:http/", "bad URL"),
    ("http", "http://127.0.0.1:70000/", "bad URL"),
    ("http", "http://[::1/", "bad URL"),
    ("http", "http://127.0.0.1:0/", "port 0"),
    ("http", "http://user:secret@127.0.0.1/", "no credentials"),
    ("http", "http://127.0.0.1/a b", "contains ' '"),
    ("http", "http://127.0.0.1/a\r\nX-Evil: 1", "contains '\\r'"),
    ("http", "http://localhost/caf\u00e9", "contains 'é'"),
    ("callback", "x" * 5000, "too long"),
]
ACCEPTED = [
    ("command", "/usr/libexec/haos/demo-check"),
    ("command", "/bin/sh -c 'test -e \"/run/app ready\"'"),
    ("http", "http://127.0.0.1:8080/healthz?deep=1"),
    ("http", "http://[::1]/"),
    ("http", "http://localhost"),
    ("http", "HTTP://LOCALHOST:80/%20x"),
    ("callback", "db.ping"),
]


@pytest.mark.parametrize(
    ("kind", "target", "reason"), REFUSED, ids=[f"{k}-{r}" for k, _, r in REFUSED]
)
def test_a_target_the_agent_cannot_run_is_refused_at_load(
    kind: str, target: str, reason: str
) -> None:
    (problem,) = problems(audit(target, kind))
    assert problem.key == "audits[0].target"
    assert reason in problem.reason
    assert len(problem.reason) < 200


@pytest.mark.parametrize(("kind", "target"), ACCEPTED)
def test_a_target_the_agent_can_run_loads(kind: str, target: str) -> None:
    (spec,) = parse_config(audit(target, kind), "ok.toml").audits
    assert (spec.kind, spec.target) == (kind, target)


def test_every_audit_kind_has_a_target_check() -> None:
    assert set(audits._BY_KIND) == set(schema._AUDIT_KINDS)


def test_a_bad_kind_is_reported_without_judging_its_target() -> None:
    (problem,) = problems(audit("http://10.0.0.7/", "snmp"))
    assert problem.key == "audits[0].kind"


PROBES = {"command": CommandProbe(), "http": HttpProbe()}


@given(
    st.sampled_from(sorted(PROBES)),
    st.one_of(
        st.text(max_size=30),
        st.builds(lambda a, b: f"http://{a}/{b}", st.text(max_size=12), st.text(max_size=8)),
        st.from_regex(
            r"\Ahttps?://(127\.0\.0\.1|localhost|\[::1\]|10\.1\.2\.3)(:[0-9]{1,6})?/\S*\Z"
        ),
    ),
)
def test_what_the_loader_accepts_the_probe_accepts(kind: str, target: str) -> None:
    spec = AuditSpec("n1/app", "alive", 1.0, 0.5, kind, target)
    try:
        audits.check_target(kind, target)
    except audits.Invalid:
        return
    PROBES[kind].check(spec)  # raises ModelError if the loader let through what fails at run time


def test_what_the_probe_refuses_the_loader_refuses() -> None:
    for kind, target, _ in REFUSED:
        if kind in PROBES and "\0" not in target and len(target) <= 4096:
            spec = AuditSpec("n1/app", "alive", 1.0, 0.5, kind, target)
            try:
                PROBES[kind].check(spec)
            except ModelError:
                with pytest.raises(audits.Invalid):
                    audits.check_target(kind, target)


# --- huge values are quoted shortened in every error ---------------------------------------------

HUGE = "A" * 1_000_000
LONG_PATH = "/".join(["a"] * 200_000)  # a well-formed component name of 400 kB
PLACES = [
    ("cluster.name", "CLUSTER"),
    ("recovery.restart_max", "[recovery]\nrestart_max = -" + "9" * 4000 + "\n"),
    ("recovery", "[recovery]\n" + "k" * 1_000_000 + " = 1\n"),
    ("recovery.component_probation", '[recovery]\ncomponent_probation = "' + HUGE + '"\n'),
    ("components[2].name", '[[components]]\nname = "' + LONG_PATH + '/X"\nclass = "a"\n'),
    ("components[2].name", '[[components]]\nname = "' + LONG_PATH + '"\nclass = "application"\n'),
    ("components[2].class", '[[components]]\nname = "n1/b"\nclass = "' + HUGE + '"\n'),
    (
        "components[2].attributes",
        '[[components]]\nname = "n1/b"\nclass = "application"\n'
        'attributes = { "' + HUGE + '" = 1 }\n',
    ),
    (
        "components[2].manager",
        '[[components]]\nname = "n1/b"\nclass = "application"\n'
        'manager = { kind = "systemd", unit = "' + HUGE + '" }\n',
    ),
    (
        "components[2].manager",
        '[[components]]\nname = "n1/b"\nclass = "application"\n'
        'manager = { kind = "ocf", agent = "' + HUGE + '" }\n',
    ),
    (
        "components[2].manager",
        '[[components]]\nname = "n1/b"\nclass = "application"\n'
        'manager = { kind = "' + HUGE + '" }\n',
    ),
    (
        "components[2].manager",
        '[[components]]\nname = "n1/b"\nclass = "application"\n'
        'manager = { kind = "client", command = ["a"], environment = { "-' + HUGE + '" = "x" } }\n',
    ),
    (
        "nodes",
        '[[nodes]]\nname = "n2"\nnode_id = 2\ncomponent = "n1/app"\naddresses = ["' + HUGE + '"]\n',
    ),
    (
        "service_groups",
        '[[service_groups]]\nname = "g"\nredundancy = "' + HUGE + '"\n'
        'members = ["' + LONG_PATH + '"]\n',
    ),
    (
        "audits",
        '[[audits]]\ncomponent = "' + LONG_PATH + '"\nname = "a"\nperiod = 1\n'
        'timeout = 0.5\ntarget = "' + HUGE + '"\n',
    ),
    (
        "audits",
        '[[audits]]\ncomponent = "n1/app"\nname = "a"\nperiod = "' + HUGE + '"\n'
        'timeout = 0.5\nkind = "http"\ntarget = "http://' + HUGE + '"\n',
    ),
]


@pytest.mark.parametrize(
    ("where", "text"), PLACES, ids=[f"{w}-{i}" for i, (w, _) in enumerate(PLACES)]
)
def test_a_huge_value_is_quoted_shortened(where: str, text: str) -> None:
    if text == "CLUSTER":  # the one table the head declares
        text = HEAD.replace('name = "c"', 'name = "' + HUGE + '"')
    found = problems(text if text.startswith("[cluster]") else HEAD + text)
    assert any(p.key.startswith(where) for p in found), found
    for p in found:
        assert len(p.key) < 120 and len(p.reason) < 400, (p.key[:200], p.reason[:200])


def test_a_50_mb_value_is_refused_quickly_and_quoted_shortened(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    # A literal string: the TOML parser finds its end at once, so the time measured is ours.
    path.write_text(audit("/bin/true").replace('"/bin/true"', "'/bin/" + "A" * 50_000_000 + "'"))
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - started < 5
    assert (
        str(info.value) == f"{path}: audits[0].target: too long: 50000005 characters, at most 4096"
    )


def test_an_unknown_huge_example_name_is_quoted_shortened() -> None:
    with pytest.raises(ConfigError) as info:
        load_builtin_example("x" * 1_000_000)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "value",
    [
        "A" * 50_000_000,
        10**5000,
        -(10**200),
        [[[[["deep"]]]]] * 100_000,
        {"k" * 1000: "v" * 1000},
        b"\x00" * 1000,
    ],
    ids=["str", "int_past_repr_limit", "negative_int", "nested_list", "table", "bytes"],
)
def test_short_repr_is_short_and_never_raises(value: object) -> None:
    assert len(schema.short_repr(value)) <= 40


def toml_value(value: object) -> str:
    return toml_string(value) if isinstance(value, str) else repr(value)
