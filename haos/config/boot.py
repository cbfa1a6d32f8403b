"""The ``[boot]`` table: how a new release on a node's trial slot is committed.

::

    [boot]
    gates = ["units-healthy", "cluster-rejoined", "cluster-proven"]   # the default: all
    soak = "60s"              # how long the node must run its work without a break
    proving_timeout = "15m"   # per try; then the next try, and on the last the fall back
    tries = 3                 # boots a new release gets (1..9)

A release is committed only once every gate held this boot (see :mod:`haos.bootctl.policy`
and :mod:`haos.services.bootgates`). Dropping the cluster gates (``gates =
["units-healthy"]``) commits a release that merely starts: for a node outside a cluster only.
"""

from __future__ import annotations

from haos.bootctl.policy import Gate
from haos.config.model import BootSpec
from haos.config.schema import (
    Invalid,
    Problems,
    Setting,
    array,
    choice,
    duration,
    integer,
    read_table,
    short_repr,
)

GATE_NAMES = tuple(sorted(g.value for g in Gate))


def _gates(value: object) -> frozenset[Gate]:
    names = array(choice(GATE_NAMES), nonempty=True)(value)
    if len(set(names)) != len(names):
        raise Invalid(f"names a gate twice: {short_repr(value)}")
    gates = frozenset(Gate(n) for n in names)
    if Gate.CLUSTER_PROVEN in gates and Gate.CLUSTER_REJOINED not in gates:
        raise Invalid("cluster-proven needs cluster-rejoined: a node proves a release in it")
    return gates


BOOT = (
    Setting("gates", _gates),
    Setting("soak", duration(allow_zero=True)),
    Setting("proving_timeout", duration(minimum=10.0)),
    Setting("tries", integer(1, 9)),
)


def read_boot(raw: object, problems: Problems) -> BootSpec:
    """The ``[boot]`` table (absent: the defaults); problems name the key."""
    if raw is None:
        return BootSpec()
    entry = read_table(raw, "boot", BOOT, problems)
    spec = BootSpec(**entry.values)
    if entry.complete and spec.soak >= spec.proving_timeout:
        problems.add(
            "boot.soak",
            f"must be shorter than proving_timeout ({spec.proving_timeout:g} s): a node"
            " must be able to prove a release within one try",
        )
    return spec
