"""What a test cluster looks like (:class:`ClusterSpec`) and the corosync.conf it gets.

The defaults are the settings measured stable on this platform (see
``/work/shared/reference/PLATFORM_NOTES.md``): token 150 ms without a per-node coefficient,
``link_mode: active`` (send on both links, so one cut link costs nothing) and the knet
heartbeat timers set *per interface* (knet 1.25 ignores them at totem level, and a ping
timeout derived from a short token makes every link flap about every 9 s).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from haos.errors import ConfigError, ConfigProblem
from haoslab.harness.netns import LINKS, MAX_NODES, Names

_WHERE = "ClusterSpec"


MIN_HOLD_MS = 14  # corosync: MINIMUM_TIMEOUT * 0.8 - 1000 / HZ


@dataclass(frozen=True)
class ClusterSpec:
    """Size and corosync timing of a test cluster; validated on construction."""

    nodes: int = 3
    token_ms: int = 150
    knet_ping_interval_ms: int = 200
    knet_ping_timeout_ms: int = 600
    knet_pong_count: int = 2
    # totem's idle behaviour (None: corosync's default). After seqno_unchanged_const token
    # rotations without a message the ring holds the token for up to hold_ms between
    # rotations; until then it circulates at full speed, which costs CPU on every node.
    # corosync's 30 rotations after every message kept three corosyncs on more than one of
    # two cores whenever messages flowed, and the daemons waited for a core: with 1, a CCR
    # write reaches every watcher in a third of the time and a checkpoint write in half
    # (bench/cluster.py, BENCHMARKS.md), for ~10 ms more node-loss detection.
    seqno_unchanged_const: int | None = 1
    hold_ms: int | None = None
    start_timeout: float = 30.0  # every corosync READY=1 and the first full membership
    stop_timeout: float = 10.0  # processes gone after SIGKILL

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.nodes <= MAX_NODES:
            problems.append(ConfigProblem(_WHERE, "nodes", f"must be 1..{MAX_NODES}"))
        if self.token_ms < 130:
            # corosync derives token_retransmit from the token and refuses it under 30 ms.
            problems.append(ConfigProblem(_WHERE, "token_ms", "must be at least 130"))
        if self.knet_ping_timeout_ms <= self.knet_ping_interval_ms:
            problems.append(
                ConfigProblem(_WHERE, "knet_ping_timeout_ms", "must exceed knet_ping_interval_ms")
            )
        if self.seqno_unchanged_const is not None and self.seqno_unchanged_const < 1:
            problems.append(ConfigProblem(_WHERE, "seqno_unchanged_const", "must be at least 1"))
        if self.hold_ms is not None and not MIN_HOLD_MS <= self.hold_ms < self.token_ms:
            reason = f"must be {MIN_HOLD_MS}..token_ms-1 (corosync refuses a shorter hold)"
            problems.append(ConfigProblem(_WHERE, "hold_ms", reason))
        if self.knet_pong_count < 1:
            problems.append(ConfigProblem(_WHERE, "knet_pong_count", "must be at least 1"))
        if self.start_timeout <= 0 or self.stop_timeout <= 0:
            problems.append(ConfigProblem(_WHERE, "start_timeout", "timeouts must be positive"))
        if problems:
            raise ConfigError(problems)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.nodes + 1))


def render_corosync_conf(spec: ClusterSpec, names: Names) -> str:
    """corosync.conf for every node (they share it; corosync finds itself by its address).

    Syntax quirk of corosync's parser: a section's ``{`` stays on the line of its name.
    """
    interfaces = "".join(
        f"""    interface {{
        linknumber: {link}
        knet_ping_interval: {spec.knet_ping_interval_ms}
        knet_ping_timeout: {spec.knet_ping_timeout_ms}
        knet_pong_count: {spec.knet_pong_count}
    }}
"""
        for link in LINKS
    )
    nodes = "".join(
        f"""    node {{
        nodeid: {node}
        name: n{node}
"""
        + "".join(f"        ring{link}_addr: {names.address(node, link)}\n" for link in LINKS)
        + "    }\n"
        for node in spec.node_ids
    )
    two_node = "    two_node: 1\n" if spec.nodes == 2 else ""
    idle = ""
    if spec.seqno_unchanged_const is not None:
        idle += f"    seqno_unchanged_const: {spec.seqno_unchanged_const}\n"
    if spec.hold_ms is not None:
        idle += f"    hold: {spec.hold_ms}\n"
    return f"""totem {{
    version: 2
    cluster_name: haos-{names.cluster_id}
    transport: knet
    link_mode: active
    token: {spec.token_ms}
    token_coefficient: 0
{idle}    crypto_cipher: aes256
    crypto_hash: sha256
    keyfile: /etc/corosync/authkey
{interfaces}}}
logging {{
    to_stderr: yes
    to_logfile: no
    to_syslog: no
    timestamp: hires
    blackbox: off
}}
quorum {{
    provider: corosync_votequorum
{two_node}}}
nodelist {{
{nodes}}}
"""


def add_totem_options(parser: argparse.ArgumentParser) -> None:
    """The totem knobs the benchmarks let a run override (see :func:`with_totem_options`)."""
    parser.add_argument(
        "--seqno-unchanged", type=int, help="totem seqno_unchanged_const (default: the harness's)"
    )
    parser.add_argument("--hold", type=int, help="totem hold, ms (default: corosync's)")


def with_totem_options(spec: ClusterSpec, args: argparse.Namespace) -> ClusterSpec:
    """``spec`` with the options of :func:`add_totem_options` that were given (ConfigError
    if a value is out of range)."""
    if args.seqno_unchanged is not None:
        spec = replace(spec, seqno_unchanged_const=args.seqno_unchanged)
    if args.hold is not None:
        spec = replace(spec, hold_ms=args.hold)
    return spec
