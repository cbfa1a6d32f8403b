"""QEMU guests of the appliance image and clusters of them.

A :class:`Machine` is one guest under TCG (KVM is not assumed): UEFI firmware (OVMF) with its
own variable store, so systemd-boot's boot counting and ``LoaderEntryDefault`` are real; a
qcow2 copy-on-write overlay over the shared image; an ``i6300esb`` watchdog whose expiry
resets the guest; two NICs on two :class:`~haoslab.vm.hub.Hub` segments (MAC
``52:54:00:4a:NN:0L``, which the guest's haos-node-setup matches); the node number through
``-fw_cfg opt/haos/node`` (and, for a provisioned cluster, its /etc files) -- or, without
fw_cfg, from its own raw copy of the image that ``haosctl provision`` wrote them into, as a
board is flashed; ttyS0 logged to a
file, ttyS1 the report port; a QMP socket and the guest agent's socket; a free PCIe root port
``hp0`` for hot-plug; the image's root partition as a read-only disk
``/dev/disk/by-id/virtio-haos-release``, a release the guest can install into its free slot.

Everything of a guest lives in the cluster's work directory as ``nodeN.*``.

**Firmware stalls.** Under TCG, OVMF now and then never gets past its early DXE phase after a
warm reboot (seen about once in ten clean runs: both vCPUs spinning, PCI not yet enumerated,
nothing more on the console). While a test waits for a guest's report, a guest whose console
ends with the kernel's ``reboot: machine restart`` and then stays silent for
``FIRMWARE_STALL`` seconds is reset over QMP, as a board's management controller would
power-cycle it; each such reset is counted (:attr:`Machine.firmware_resets`) and noted in the
guest's ``qemu.log``. It cannot hide a hang of haos: the guest's own kernel had already
restarted the machine, and systemd-boot had not yet run (no try was counted).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from haos.cli.provision import write_image
from haos.errors import HaosError, UnavailableError, UsageError
from haos.proc import ENV, run
from haoslab.lifecycle import Closing
from haoslab.vm import qmp_forward
from haoslab.vm.hub import Hub
from haoslab.vm.qga import Agent, wait_agent
from haoslab.vm.qmp import Qmp
from haoslab.vm.reports import ReportPort

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
LINKS = 2
# Seconds of console silence after the kernel restarted the machine before it is reset: a
# healthy warm boot under TCG prints its first kernel line within about 10 s.
FIRMWARE_STALL = 90.0
RESTARTED = ("reboot: machine restart", "reboot: Restarting system")
# The image's committed root, offered to every guest as a release it can install.
RELEASE_PARTITION = "haos-root-a"
# Where a guest reaches its peers' fencing monitors: FENCE_HOST:FENCE_PORT+N is node N's
# (see fence_netdev), from FENCE_ADDRESS on its fencing NIC.
FENCE_HOST = "10.0.2.100"
FENCE_PORT = 4400
FENCE_ADDRESS = "10.0.2.15/24"


@dataclass(frozen=True)
class MachineSpec:
    """What a guest is made of; ``node`` is 1..254."""

    node: int
    image: Path
    workdir: Path
    memory_mb: int = 1024
    cpus: int = 2
    watchdog: bool = True
    # What QEMU does when the i6300esb expires: "reset" (a board's watchdog) or "none" (the
    # expiry is only reported: systemd holds the device, and a guest whose vCPUs starve on a
    # loaded host is no hang).
    watchdog_action: str = "reset"
    # False: no -fw_cfg at all; the guest boots its own raw copy of the image (``raw``) into
    # whose data partition ``haosctl provision`` wrote the node's identity and etc_files.
    fw_cfg: bool = True
    # (path under /etc, host file): installed in the guest by haos-node-setup at every boot.
    etc_files: tuple[tuple[str, Path], ...] = ()
    # A read-only disk /dev/disk/by-id/virtio-haos-release: (file, offset, size) in bytes,
    # e.g. the image's own root partition, for installing a release into the other slot.
    release: tuple[Path, int, int] | None = None
    # The nodes whose fencing monitors this guest reaches (see FENCE_HOST): its cluster.
    fence_peers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.node <= 254:
            raise UsageError(f"node number must be 1..254, not {self.node}")
        if self.memory_mb < 256 or self.cpus < 1:
            raise UsageError("a guest needs at least 256 MiB and one CPU")
        if self.watchdog_action not in ("reset", "none"):
            raise UsageError(f"watchdog action must be reset or none, not {self.watchdog_action}")

    def file(self, suffix: str) -> Path:
        return self.workdir / f"node{self.node}.{suffix}"

    def mac(self, link: int) -> str:
        return f"52:54:00:4a:{self.node:02x}:{link:02x}"

    def fence_mac(self) -> str:
        return fence_mac(self.node)

    def fence_socket(self) -> Path:
        return fence_socket(self.workdir, self.node)


def fence_mac(node: int) -> str:
    """The MAC of guest ``node``'s fencing NIC."""
    return f"52:54:00:4b:{node:02x}:00"


def fence_socket(workdir: Path, node: int) -> Path:
    """Guest ``node``'s fencing monitor: ``fence/n<node>.sock`` (``qmp_dir``/``plug`` of
    ``fence_haos_qmp`` on the host; a monitor of its own, as QEMU serves one client per
    monitor and the tests keep ``qmp.sock`` open)."""
    return workdir / "fence" / f"n{node}.sock"


def fence_netdev(spec: MachineSpec, python: str = sys.executable) -> str:
    """The guest's fencing NIC: QEMU user networking with no route anywhere (``restrict``),
    whose only destinations are ``FENCE_HOST:FENCE_PORT+N``, forwarded to node N's fencing
    monitor by :mod:`haoslab.vm.qmp_forward` (one process per connection)."""
    rules = []
    for peer in spec.fence_peers:
        sock = str(fence_socket(spec.workdir, peer))
        if "," in sock or " " in sock or "," in python or " " in python:
            raise UsageError(f"paths with commas or spaces cannot be forwarded: {sock}")
        rules.append(
            f"guestfwd=tcp:{FENCE_HOST}:{FENCE_PORT + peer}-"
            f"cmd:{python} -m {qmp_forward.__name__} {sock}"
        )
    return ",".join(["user,id=fence,restrict=on,net=10.0.2.0/24,ipv6=off", *rules])


def hub_path(workdir: Path, link: int) -> Path:
    return workdir / f"hub{link}.sock"


def qemu_argv(spec: MachineSpec) -> list[str]:
    """The QEMU command line of ``spec``'s guest."""
    f = spec.file
    disk = f"format=qcow2,file={f('qcow2')}" if spec.fw_cfg else f"format=raw,file={f('raw')}"
    argv = [
        "qemu-system-x86_64",
        "-name", f"node{spec.node}",
        "-machine", "q35,accel=tcg",
        "-cpu", "max",
        "-smp", str(spec.cpus),
        "-m", str(spec.memory_mb),
        "-nodefaults", "-display", "none", "-vga", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={f('vars.fd')}",
        "-drive", f"if=none,id=disk,cache=unsafe,discard=unmap,{disk}",
        "-device", "virtio-blk-pci,drive=disk,bootindex=1",
        "-serial", f"file:{f('console.log')}",
        "-chardev", f"socket,id=report,path={f('report.sock')},server=off,reconnect=1",
        "-serial", "chardev:report",
        "-chardev", f"socket,id=qga,path={f('qga.sock')},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
        "-qmp", f"unix:{f('qmp.sock')},server=on,wait=off",
        "-qmp", f"unix:{spec.fence_socket()},server=on,wait=off",
        "-device", "pcie-root-port,id=hp0,bus=pcie.0,chassis=1,slot=1",
        "-object", "rng-random,id=rng,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng",
    ]  # fmt: skip
    for link in range(LINKS):
        sock = f(f"link{link}.sock")
        argv += [
            "-netdev",
            f"dgram,id=link{link},local.type=unix,local.path={sock},"
            f"remote.type=unix,remote.path={hub_path(spec.workdir, link)}",
            "-device",
            f"virtio-net-pci,netdev=link{link},mac={spec.mac(link)}",
        ]
    if spec.fence_peers:
        argv += ["-netdev", fence_netdev(spec)]
        argv += ["-device", f"virtio-net-pci,netdev=fence,mac={spec.fence_mac()}"]
    if spec.release is not None:
        path, offset, size = spec.release
        blockdev = {
            "driver": "raw",
            "node-name": "release",
            "offset": offset,
            "size": size,
            "read-only": True,
            "file": {"driver": "file", "filename": str(path), "read-only": True},
        }
        argv += ["-blockdev", json.dumps(blockdev)]
        argv += ["-device", "virtio-blk-pci,drive=release,serial=haos-release"]
    if spec.fw_cfg:
        argv += ["-fw_cfg", f"name=opt/haos/node,string={spec.node}"]
        for rel, host_file in spec.etc_files:
            argv += ["-fw_cfg", f"name=opt/haos/etc/{rel},file={host_file}"]
    if spec.watchdog:
        argv += ["-device", "i6300esb", "-action", f"watchdog={spec.watchdog_action}"]
    return argv


@dataclass
class Machine:
    """A running (or stopped) guest."""

    spec: MachineSpec
    proc: subprocess.Popen[bytes] | None = None
    reports: ReportPort | None = None
    firmware_resets: int = 0
    firmware_stall: float = FIRMWARE_STALL
    _qmp: Qmp | None = field(default=None, repr=False)
    _reset_at: float = field(default=0.0, repr=False)  # wall time of the last rescue reset

    def create_disk(self) -> None:
        """A fresh overlay over the image (or, without fw_cfg, a provisioned raw copy of it)
        and fresh firmware variables (a new board)."""
        f = self.spec.file
        for suffix in ("qcow2", "raw", "vars.fd"):
            with contextlib.suppress(FileNotFoundError):
                f(suffix).unlink()
        if self.spec.fw_cfg:
            run([
                "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                "-b", str(self.spec.image), str(f("qcow2")),
            ])  # fmt: skip
        else:
            run(["cp", "--sparse=always", str(self.spec.image), str(f("raw"))], timeout=600)
            provision(f("raw"), self.spec)
        shutil.copyfile(OVMF_VARS, f("vars.fd"))

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise UsageError(f"node{self.spec.node} is already running")
        f = self.spec.file
        for suffix in ("qmp.sock", "qga.sock", *(f"link{i}.sock" for i in range(LINKS))):
            with contextlib.suppress(FileNotFoundError):
                f(suffix).unlink()
        self.spec.fence_socket().parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.spec.fence_socket().unlink()
        if self.reports is None:
            self.reports = ReportPort(f("report.sock"), f("report.log"), idle=self.rescue)
        with f("qemu.log").open("ab") as log:
            try:
                self.proc = subprocess.Popen(
                    qemu_argv(self.spec),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=ENV,
                )
            except OSError as e:
                raise UnavailableError(f"cannot start QEMU: {e}") from e
        self._qmp = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def qmp(self) -> Qmp:
        """The guest's QMP session (connected on first use)."""
        if self._qmp is None:
            if not self.running:
                raise UnavailableError(f"node{self.spec.node} is not running")
            self._qmp = _connect_qmp(self.spec.file("qmp.sock"))
        return self._qmp

    def agent(self, timeout: float = 120.0) -> Agent:
        """A guest-agent connection, once the guest's agent answers."""
        return wait_agent(self.spec.file("qga.sock"), timeout)

    def sh(self, script: str, timeout: float = 120.0, check: bool = True) -> str:
        """Run ``script`` with /bin/sh in the guest; its stdout (UnavailableError if it fails)."""
        with self.agent() as agent:
            res = agent.exec(["/bin/sh", "-c", script], timeout=timeout)
        if check and not res.ok:
            raise UnavailableError(
                f"node{self.spec.node}: `{script}` exited {res.exitcode}: {res.stderr.strip()}"
            )
        return res.stdout

    def kill(self) -> None:
        """Stop QEMU at once (pull the plug)."""
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        if self.reports is not None:
            self.reports.close()
            self.reports = None

    def rescue(self) -> bool:
        """Reset the guest if it is stuck in its firmware after a reboot (see the module
        docstring); True if it was reset."""
        console = self.spec.file("console.log")
        try:
            # Silent since the last line or the last reset: a reset guest needs the whole
            # stall time again to print (its console stays as it was until the kernel runs).
            silent = time.time() - max(console.stat().st_mtime, self._reset_at)
        except OSError:
            return False
        if silent < self.firmware_stall or not self.running:
            return False  # the common case: no need to read the console
        if not stuck_in_firmware(self.console_tail(3), silent, self.firmware_stall):
            return False
        try:
            self.qmp().system_reset()
        except HaosError:
            return False
        self.firmware_resets += 1
        self._reset_at = time.time()
        with self.spec.file("qemu.log").open("a", encoding="utf-8") as log:
            log.write(
                f"haos: reset after {silent:.0f} s without a console line since the kernel "
                f"restarted the machine (firmware stall {self.firmware_resets})\n"
            )
        return True

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.spec.file("console.log").read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# What ``haosctl provision`` takes as options; the other etc_files are written beside them.
PROVISION_OPTIONS = {
    "haos/cluster.toml": "--config",
    "corosync/corosync.conf": "--corosync",
    "corosync/authkey": "--authkey",
}


def provision(raw: Path, spec: MachineSpec) -> None:
    """Write ``spec``'s node identity, links and etc_files onto ``raw``'s data partition
    with ``haosctl provision``, as onto a board's image before it is flashed."""
    files = dict(spec.etc_files)
    missing = [rel for rel in PROVISION_OPTIONS if rel not in files]
    if missing:
        raise UsageError(f"node{spec.node}: no fw_cfg and no {', '.join(missing)} to provision")
    argv = [str(Path(sys.executable).with_name("haosctl")), "provision", str(raw)]
    argv += ["--node", f"n{spec.node}"]
    for rel, option in PROVISION_OPTIONS.items():
        argv += [option, str(files[rel])]
    for link in range(LINKS):
        argv += [f"--link{link}", f"10.1{link}.0.{spec.node}/24@{spec.mac(link)}"]
    run(argv, timeout=120)
    # The node's own /etc files that haosctl provision has no option for (the lab's fencing
    # NIC): beside them, where haos-node-setup installs every provision/etc file from.
    # (node.env is haosctl provision's own.)
    extra = {f"etc/{rel}": path.read_bytes() for rel, path in files.items()}
    for rel in (*PROVISION_OPTIONS, "haos/node.env"):
        extra.pop(f"etc/{rel}", None)
    if extra:
        write_image(raw, extra)


def stuck_in_firmware(tail: str, silent: float, stall: float) -> bool:
    """Whether a console whose last lines are ``tail``, silent for ``silent`` seconds, shows a
    guest that its kernel restarted and that has printed nothing since for ``stall`` seconds."""
    lines = [line for line in tail.splitlines() if line.strip()]
    return bool(lines) and silent >= stall and lines[-1].rstrip().endswith(RESTARTED)


def _connect_qmp(path: Path, timeout: float = 30.0) -> Qmp:
    # QEMU creates the socket a moment after it starts: retry until it is there.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Qmp(path)
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def partition(image: Path, name: str) -> tuple[int, int]:
    """(offset, size) in bytes of the GPT partition labelled ``name`` in ``image``."""
    table = json.loads(run(["sfdisk", "--json", str(image)]))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    for part in table["partitions"]:
        if part.get("name") == name:
            return int(part["start"]) * sector, int(part["size"]) * sector
    raise UsageError(f"{image} has no partition labelled {name}")


# corosync's timers for TCG guests. The host harness's 150 ms token holds in network
# namespaces, but emulated guests sharing two host cores stall for hundreds of milliseconds:
# there such a token flaps the membership, and corosync, at real-time priority, then starves
# the guest (its agent and network stop answering). corosync's own default token (3 s) with
# knet timers below it keeps a cut link a link event, not a membership change.
GUEST_TIMING = {
    "token_ms": 3000,
    "knet_ping_interval_ms": 500,
    "knet_ping_timeout_ms": 2000,
    "knet_pong_count": 2,
}


def provision_files(
    workdir: Path, n: int, name: str, config_toml: str | None = None
) -> dict[int, tuple[tuple[str, Path], ...]]:
    """Each node's /etc files for a corosync + haos cluster of ``n`` (written to ``workdir``).

    The same corosync.conf (two knet links; :data:`GUEST_TIMING`), one fresh authkey, haos'
    cluster.toml for nodes n1..nN (``config_toml``, default :func:`guest_cluster_toml`) and
    each node's node.env.
    """
    # Imported here: the harness is needed only by clusters that run haos' daemons.
    from haoslab.harness.config import ClusterSpec, render_corosync_conf
    from haoslab.harness.netns import Names
    from haoslab.vm.guestconfig import fence_network, guest_cluster_toml

    spec = ClusterSpec(nodes=n, **GUEST_TIMING)
    shared = {
        "corosync/corosync.conf": render_corosync_conf(spec, Names(name)).encode(),
        "corosync/authkey": secrets.token_bytes(256),
        "haos/cluster.toml": (config_toml or guest_cluster_toml(spec, name)).encode(),
    }
    out: dict[int, tuple[tuple[str, Path], ...]] = {}
    for node in range(1, n + 1):
        files = {
            **shared,
            "haos/node.env": f"HAOS_NODE=n{node}\n".encode(),
            "systemd/network/20-haos-fence.network": fence_network(node).encode(),
        }
        entries = []
        for rel, data in files.items():
            host = workdir / f"node{node}.etc" / rel
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(data)
            host.chmod(0o600)
            entries.append((rel, host))
        out[node] = tuple(entries)
    return out


class Cluster(Closing):
    """``n`` guests of ``image`` on two hub segments, in ``workdir``.

    With ``provision`` every guest gets corosync's and haos' configuration for the cluster
    (see :func:`provision_files`; ``config_toml`` is their cluster.toml), so haos' daemons
    run as on a provisioned board. Without ``watchdog`` the guests have no i6300esb (see the
    cluster test for why; a set: only those nodes have one); ``watchdog_action`` is what its
    expiry does. The nodes in
    ``no_fw_cfg`` get no fw_cfg: each boots its own copy of the image, provisioned with
    ``haosctl provision`` (see :func:`provision`).
    """

    def __init__(
        self,
        image: Path,
        workdir: Path,
        n: int,
        memory_mb: int = 1024,
        provision: bool = True,
        watchdog: bool | frozenset[int] = True,
        config_toml: str | None = None,
        watchdog_action: str = "reset",
        no_fw_cfg: frozenset[int] = frozenset(),
    ) -> None:
        if not 1 <= n <= 8:
            raise UsageError(f"a cluster has 1..8 guests, not {n}")
        if not image.is_file():
            raise UsageError(f"image {image} does not exist (build it with image/build.sh)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        name = f"vm{secrets.token_hex(3)}"
        files = provision_files(workdir, n, name, config_toml) if provision else {}
        if no_fw_cfg and not provision:
            raise UsageError("a guest without fw_cfg needs a provisioned cluster")
        offset, size = partition(image, RELEASE_PARTITION)
        self.machines = [
            Machine(
                MachineSpec(
                    node,
                    image,
                    workdir,
                    memory_mb=memory_mb,
                    etc_files=files.get(node, ()),
                    release=(image, offset, size),
                    watchdog=watchdog if isinstance(watchdog, bool) else node in watchdog,
                    watchdog_action=watchdog_action,
                    fw_cfg=node not in no_fw_cfg,
                    fence_peers=tuple(range(1, n + 1)) if provision else (),
                )
            )
            for node in range(1, n + 1)
        ]
        self.hubs = [
            Hub(hub_path(workdir, link), [m.spec.file(f"link{link}.sock") for m in self.machines])
            for link in range(LINKS)
        ]

    def node(self, number: int) -> Machine:
        return self.machines[number - 1]

    def start(self) -> None:
        for m in self.machines:
            m.create_disk()
            m.start()

    def close(self) -> None:
        for m in self.machines:
            m.close()
        for hub in self.hubs:
            hub.close()
