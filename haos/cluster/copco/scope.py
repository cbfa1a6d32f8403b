"""Which sub-trees an operator command changes: the locks it must take.

* a node: the node's component (everything the node hosts is below it);
* a service group: each of its members;
* a service instance: the components holding its primary and secondary roles now (a
  switchover moves work from the one to the other), or every member of its group when none
  holds a role;
* a component: that component and, for a switchover, the standbys of what it serves.

A name the configuration does not know changes nothing here: the availability service
refuses it with its own reason.
"""

from __future__ import annotations

from haos.cluster.crim.state import CrimState
from haos.cluster.crim.topology import Topology


def changed_by(
    topo: Topology, state: CrimState | None, action: str, target: str
) -> tuple[str, ...]:
    """The sub-trees (component names) ``action`` on ``target`` changes, sorted; ``state``
    is the availability service's state (None: not known yet, every member counts)."""
    found = topo.resolve_target(target)
    if found is None:
        return ()
    kind, name = found
    if kind == "node":
        return (topo.node_component(name),)
    if kind == "group":
        return tuple(sorted(topo.groups[name].members))
    if kind == "instance":
        holders = _holders(topo, state, name)
        return holders or tuple(sorted(topo.groups[topo.instances[name].group].members))
    out = {name}
    if action == "switchover" and state is not None and name in state.components:
        for inst in state.components[name].instances:
            if inst in topo.instances:
                out.update(state.secondaries(inst, topo))
    return tuple(sorted(out))


def _holders(topo: Topology, state: CrimState | None, instance: str) -> tuple[str, ...]:
    if state is None:
        return ()
    return tuple(sorted({*state.primaries(instance, topo), *state.secondaries(instance, topo)}))
