"""Cluster layouts beyond the shipped examples, for the CRIM's and the simulator's tests.

Each is the ``small-2n`` example (one shelf, three nodes, a 2N ``demo`` group) with one
change, parsed through the real loader so that it is validated like a file.
"""

from __future__ import annotations

from importlib import resources

from haos.config.loader import parse_config
from haos.config.model import ClusterConfig

_NESTED = """
[[components]]
name = "shelf1/slot1/node/demo/sub"
class = "application"

[[components]]
name = "shelf1/slot2/node/demo/sub"
class = "application"

[[service_groups]]
name = "sub"
redundancy = "2N"
members = ["shelf1/slot1/node/demo/sub", "shelf1/slot2/node/demo/sub"]

[[service_instances]]
name = "sub-si"
group = "sub"
"""

_TWO_N = 'redundancy = "2N"\n'
_N_PLUS_M = 'redundancy = "N+M"\nactive = 2\nstandby = 1\n'
_SECOND_INSTANCE = """
[[service_instances]]
name = "demo-si2"
group = "demo"
"""


def small_2n_text() -> str:
    return (resources.files("haos") / "examples" / "small-2n.toml").read_text("utf-8")


def nested_text() -> str:
    """``small-2n`` plus a 2N group ``sub`` of components nested inside two ``demo`` members."""
    return small_2n_text() + _NESTED


def nested() -> ClusterConfig:
    return parse_config(nested_text(), "nested.toml")


def n_plus_m_text() -> str:
    """``small-2n`` with ``demo`` as N+M (2 active, 1 standby) serving two instances."""
    text = small_2n_text()
    assert text.count(_TWO_N) == 1
    return text.replace(_TWO_N, _N_PLUS_M) + _SECOND_INSTANCE


def n_plus_m() -> ClusterConfig:
    return parse_config(n_plus_m_text(), "n-plus-m.toml")
