"""haos' configuration for a cluster of appliance guests: fencing over QMP and a 2N service.

* ``[fencing]``: the guests' own ``fence_haos_qmp`` (shipped in the image as
  ``/usr/sbin/fence_haos_qmp``), unchanged, asked to power a departed guest off. It reaches
  the guest's QEMU monitor on the host over TCP: ``FENCE_HOST:FENCE_PORT+N`` on each guest's
  fencing NIC is guest N's monitor (see :func:`haoslab.vm.machine.fence_netdev` and
  :mod:`haoslab.vm.qmp_forward`). ``action = "off"``: the agent makes QEMU quit, so a fenced
  guest stays off (nothing on the host would start it again). ``self_fence = false``: a
  guest's peers fence it over QMP, and a guest without an ``i6300esb`` has softdog as its
  only watchdog, which systemd (``RuntimeWatchdogSec``) opens first: the daemon could not
  open it and would fail to start. A cluster may turn it on (:class:`GuestOptions`): its
  guests then need the ``i6300esb`` for systemd, so that softdog is ``/dev/watchdog-haos``.
* With two guests or more, the demo counter as a 2N service group with a member on every
  guest (:func:`haoslab.demo.cluster.demo_toml`): a guest cluster shows fail-over, not only
  membership. Its audits are slower than in the nspawn lab: guests under TCG share two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

from haoslab.demo.cluster import demo_toml
from haoslab.harness.config import ClusterSpec
from haoslab.harness.systemd_cluster import cluster_toml
from haoslab.vm.machine import FENCE_ADDRESS, FENCE_HOST, FENCE_PORT, fence_mac

FENCE_AGENT = "fence_haos_qmp"
# The agent's own bounds (seconds): a connection through the forwarder starts a process on
# a loaded host; the fencer's timeout stays above their sum.
LOGIN_TIMEOUT = 10
POWER_TIMEOUT = 30
FENCE_TIMEOUT = "60s"
AUDIT_PERIOD = 2.0
AUDIT_TIMEOUT = 1.0


@dataclass(frozen=True)
class GuestOptions:
    """What one guest cluster's cluster.toml sets beyond the defaults.

    ``self_fence``: the ``[fencing] self_fence`` inline table (None: ``false``; ``"default"``:
    no such key, the appliance's default: ``/dev/watchdog-haos`` where a node has it free,
    i.e. where systemd holds an ``i6300esb``). ``no_device``:
    nodes without a fence device (a board without remote power control: only its own
    watchdog can stop it, and its peers never confirm it fenced). ``proving_timeout``:
    ``[boot] proving_timeout`` (None: the appliance's default).
    """

    self_fence: str | None = None
    no_device: frozenset[int] = frozenset()
    proving_timeout: str | None = None


def fencing_toml(spec: ClusterSpec, options: GuestOptions | None = None) -> str:
    """The ``[fencing]`` section: one agent for every node (but ``options.no_device``), each
    node's monitor port."""
    options = options or GuestOptions()
    self_fence = f"{{ {options.self_fence} }}" if options.self_fence else "false"
    keep = options.self_fence != "default"
    agent = [f'agent = "{FENCE_AGENT}"']
    params = (
        f'ip = "{FENCE_HOST}", login_timeout = {LOGIN_TIMEOUT}, power_timeout = {POWER_TIMEOUT}'
    )
    # A node without a device needs a default without one: every other node names its own.
    shared = not options.no_device
    lines = [
        "[fencing]",
        *(agent if shared else []),
        'action = "off"',
        f'timeout = "{FENCE_TIMEOUT}"',
        *([f"params = {{ {params} }}"] if shared else []),
        *([f"self_fence = {self_fence}"] if keep else []),
    ]
    for n in spec.node_ids:
        if n in options.no_device:
            continue
        own = f"ipport = {FENCE_PORT + n}" if shared else f"{params}, ipport = {FENCE_PORT + n}"
        lines += ["", f"[fencing.nodes.n{n}]", *([] if shared else agent), f"params = {{ {own} }}"]
    return "\n".join(lines) + "\n"


# A release on trial is proven after 20 s of running its work (the appliance's default soak,
# 60 s, would only lengthen every boot test under TCG).
SOAK = "20s"


def guest_cluster_toml(spec: ClusterSpec, name: str, options: GuestOptions | None = None) -> str:
    """cluster.toml of a guest cluster: nodes n1..nN, fencing, and the counter (N >= 2)."""
    if spec.nodes >= 2:
        base = demo_toml(spec, audit_period=AUDIT_PERIOD, audit_timeout=AUDIT_TIMEOUT)
    else:
        base = cluster_toml(spec, name)
    options = options or GuestOptions()
    boot = ["", "[boot]", f'soak = "{SOAK}"']
    if options.proving_timeout is not None:
        boot.append(f'proving_timeout = "{options.proving_timeout}"')
    return base + "\n" + fencing_toml(spec, options) + "\n".join(boot) + "\n"


def fence_network(node: int) -> str:
    """systemd-networkd's configuration of the guest's fencing NIC (a static address: the
    restricted user network has nothing else to offer)."""
    return (
        f"[Match]\nMACAddress={fence_mac(node)}\n\n"
        f"[Network]\nAddress={FENCE_ADDRESS}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
