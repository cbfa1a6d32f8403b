"""Cluster layouts beyond the shipped examples, for the CRIM's and the simulator's tests.

Each is the ``small-2n`` example (one shelf, three nodes, a 2N ``demo`` group) with one
change, parsed through the real loader so that it is validated like a file.
"""

from __future__ import annotations

from importlib import resources

from haos.config.loader import parse_config
from haos.config.model import ClusterConfig


def _two_n_group(group: str, members: list[str]) -> str:
    """TOML of a 2N group ``group`` of application ``members`` with one instance."""
    components = "".join(
        f'\n[[components]]\nname = "{m}"\nclass = "application"\n' for m in members
    )
    listed = ", ".join(f'"{m}"' for m in members)
    return (
        f'{components}\n[[service_groups]]\nname = "{group}"\nredundancy = "2N"\n'
        f'members = [{listed}]\n\n[[service_instances]]\nname = "{group}-si"\n'
        f'group = "{group}"\n'
    )


# A 2N group "sub" of components nested inside the first two "demo" members.
_NESTED = _two_n_group("sub", [f"shelf1/slot{n}/node/demo/sub" for n in (1, 2)])
# A second 2N group "db" on the nodes of the first two "demo" members.
_CROSSED = _two_n_group("db", [f"shelf1/slot{n}/node/db" for n in (1, 2)])

_TWO_N = 'redundancy = "2N"\n'
_N_PLUS_M = 'redundancy = "N+M"\nactive = 2\nstandby = 1\n'
_SECOND_INSTANCE = """
[[service_instances]]
name = "demo-si2"
group = "demo"
"""


def small_2n_text() -> str:
    return (resources.files("haos") / "examples" / "small-2n.toml").read_text("utf-8")


def small_2n() -> ClusterConfig:
    return parse_config(small_2n_text(), "small-2n.toml")


def crossed() -> ClusterConfig:
    """``small-2n`` plus a second 2N group ``db`` on nodes 1 and 2 (the nodes of ``demo``'s
    first two members), with one instance ``db-si``: switchovers of the two can cross."""
    return parse_config(small_2n_text() + _CROSSED, "crossed.toml")


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
