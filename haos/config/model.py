"""The frozen configuration of a cluster, as loaded from TOML by :mod:`haos.config.loader`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from haos.bootctl.policy import ALL_GATES, BootPolicy, Gate
from haos.model.classes import ComponentClass
from haos.model.redundancy import RecoveryPolicy, ServiceGroup, ServiceInstance
from haos.model.tree import Component


@dataclass(frozen=True)
class NodeSpec:
    """A cluster node (a CPU board running haos).

    ``component`` names its node-class component in the containment tree; components
    inside that subtree run on this node. ``priority`` (higher wins) and then the lower
    ``node_id`` choose the master and vice-master.
    """

    name: str
    node_id: int
    component: str
    priority: int = 0
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorrelationPolicy:
    """Settings of the error correlator (CEC).

    ``duplicate_window``: a second report of the same kind about the same component within
    this many seconds is redundant. ``container_window`` and ``container_threshold``: when
    reports about at least ``container_threshold`` distinct children of one container arrive
    within the window, they are re-attributed to the container. ``hold_time``: how long a
    report that may become part of such a pattern is held before being forwarded as is.
    ``escalate_count``: this many forwarded reports about one component within
    ``escalate_window`` raise the recommended recovery one level.
    """

    duplicate_window: float = 1.0
    container_window: float = 0.5
    container_threshold: int = 2
    hold_time: float = 0.05
    escalate_count: int = 3
    escalate_window: float = 30.0


@dataclass(frozen=True)
class AuditSpec:
    """An audit the health monitor runs for a component."""

    component: str
    name: str
    period: float
    timeout: float
    kind: str = "command"  # command | http | callback
    target: str = ""  # command line, URL, or callback name


MANAGER_KINDS = ("systemd", "ocf", "client")


@dataclass(frozen=True)
class ManagerSpec:
    """How the node agent runs a component (the ``manager`` table of a ``[[components]]``).

    ``kind`` says which fields matter: ``systemd`` uses ``unit`` (a ``.service`` that is
    started while the component is primary and stopped otherwise); ``ocf`` uses ``agent``
    (``ocf:<provider>:<type>``), ``params`` and ``promotable`` (None: as the agent's meta-data
    says); ``client`` uses ``command`` (argv of an application linked with ``haos.client``),
    ``environment`` and ``quiesce_timeout`` (how long a primary may take to quiesce before a
    planned switchover). ``stop_timeout`` bounds a stop before the agent kills.
    """

    kind: str  # one of MANAGER_KINDS
    unit: str = ""
    agent: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    promotable: bool | None = None
    command: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    stop_timeout: float = 10.0
    quiesce_timeout: float = 5.0


FENCE_KINDS = ("none", "agent", "command")
SELF_FENCE_DEVICE = "/dev/watchdog-haos"  # the image's udev link to softdog


@dataclass(frozen=True)
class FenceDeviceSpec:
    """How one node is fenced (``[fencing]``, merged with ``[fencing.nodes.<name>]``).

    ``kind`` ``agent``: the fence agent ``agent`` (a program name or path) run with
    ``params`` on its stdin and ``password=`` read from ``password_file`` at fence time;
    ``command``: the argv template ``command`` (``{node}``, ``{node_id}``, ``{action}``);
    ``none``: no device (the node is never confirmed fenced, so its work is not taken over).
    """

    kind: str = "none"  # one of FENCE_KINDS
    agent: str = ""
    params: tuple[tuple[str, str], ...] = ()
    password_file: str = ""
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class SelfFenceSpec:
    """Self-fencing on quorum loss: stop petting the watchdog ``device`` once inquorate for
    ``after`` seconds; ``timeout`` is the watchdog's own (whole seconds). ``required``: set
    in the file (the device must exist); else the default, used only where the device is."""

    after: float = 5.0
    device: str = SELF_FENCE_DEVICE
    timeout: float = 10.0
    required: bool = False


@dataclass(frozen=True)
class FencingSpec:
    """The ``[fencing]`` section. ``device`` is every node's default; ``nodes`` holds the
    nodes with a table of their own, already merged over it (see :meth:`device_of`).
    ``delay``: a two-node cluster's priority delay; ``base_delay``: before any fencing;
    ``timeout``: one attempt's bound; ``self_fence``: None when turned off."""

    device: FenceDeviceSpec = field(default_factory=FenceDeviceSpec)
    nodes: Mapping[str, FenceDeviceSpec] = field(default_factory=dict)
    action: str = "reboot"
    delay: float = 1.0
    base_delay: float = 0.0
    timeout: float = 60.0
    self_fence: SelfFenceSpec | None = field(default_factory=SelfFenceSpec)

    def device_of(self, node: str) -> FenceDeviceSpec:
        return self.nodes.get(node, self.device)


@dataclass(frozen=True)
class BootSpec:
    """``[boot]``: how a release on trial is committed (:mod:`haos.config.boot`)."""

    gates: frozenset[Gate] = ALL_GATES
    soak: float = 60.0  # seconds the node must run its work without a break
    proving_timeout: float = 900.0  # per try
    tries: int = 3

    def policy(self) -> BootPolicy:
        return BootPolicy(self.gates, self.tries, self.proving_timeout)


@dataclass(frozen=True)
class ManagementSpec:
    """``[management]``: the management daemon's endpoint (:mod:`haos.config.management`)."""

    listen: str = "127.0.0.1"
    port: int = 7080
    token_files: tuple[str, ...] = ()  # each holds one bearer token; read by haos-mgmtd
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    classes: tuple[ComponentClass, ...]
    components: tuple[Component, ...]
    nodes: tuple[NodeSpec, ...]
    groups: tuple[ServiceGroup, ...]
    instances: tuple[ServiceInstance, ...]
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    correlation: CorrelationPolicy = field(default_factory=CorrelationPolicy)
    audits: tuple[AuditSpec, ...] = ()
    source: str = ""  # file it was loaded from
    # Component name -> how its node agent runs it; components without one (hardware, nodes)
    # are not run by an agent.
    managers: Mapping[str, ManagerSpec] = field(default_factory=dict)
    fencing: FencingSpec = field(default_factory=FencingSpec)
    boot: BootSpec = field(default_factory=lambda: BootSpec())
    management: ManagementSpec = field(default_factory=ManagementSpec)

    def group(self, name: str) -> ServiceGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def component_classes(self) -> Mapping[str, str]:
        return {c.name: c.cls for c in self.components}

    def manager(self, component: str) -> ManagerSpec | None:
        """How ``component`` is run, or None when no agent runs it."""
        return self.managers.get(component)
