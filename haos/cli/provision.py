"""``haosctl provision TARGET --node nN --config cluster.toml --corosync FILE --authkey FILE``.

Writes one board's identity and the cluster's configuration onto the data partition of an
image before it is flashed (or onto a board's disk, or a mounted data partition), so the
same image serves every board: at boot ``haos-node-setup`` (:mod:`haos.services.nodesetup`)
finds them in ``/var/lib/haos/provision`` and installs them.

``TARGET`` is an image file or block device whose GPT holds a partition labelled
``haos-data`` (written in place with e2fsprogs' ``debugfs``, no mount needed), or a directory
(the data partition mounted). Everything is checked before anything is written: the
configuration must load and name the node, corosync.conf must name its node id, the authkey
must be one corosync accepts, the link settings must parse.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from haos.config.loader import load_config
from haos.errors import UsageError
from haos.proc import run, run_bytes
from haos.services.nodesetup import parse_link

DATA_LABEL = "haos-data"
AUTHKEY_BYTES = (128, 4096)  # what corosync's authkey may hold (corosync-keygen: 128..4096)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "provision",
        help="write a board's identity and the cluster's configuration onto an image",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("target", type=Path, help="image file, block device, or directory")
    p.add_argument("--node", required=True, help="the node's name in cluster.toml (nN)")
    p.add_argument("--config", type=Path, required=True, help="the cluster's cluster.toml")
    p.add_argument("--corosync", type=Path, required=True, help="the cluster's corosync.conf")
    p.add_argument("--authkey", type=Path, required=True, help="corosync's shared authkey")
    for i in (0, 1):
        p.add_argument(f"--link{i}", help="interconnect address ADDR/PREFIX@MAC-or-interface")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(run=_run)


def files_for(args: argparse.Namespace) -> dict[str, bytes]:
    """The provisioning directory's files (relative path -> content), all checked."""
    config = load_config(args.config)
    node = next((n for n in config.nodes if n.name == args.node), None)
    if node is None:
        names = ", ".join(n.name for n in config.nodes)
        raise UsageError(f"--node {args.node!r}: {args.config} has no such node ({names})")
    number = node.node_id
    corosync = _read(args.corosync, "--corosync")
    if not re.search(
        rf"(?m)^\s*nodeid\s*:\s*{node.node_id}\s*$", corosync.decode(errors="replace")
    ):
        raise UsageError(f"--corosync {args.corosync}: no node with nodeid: {node.node_id}")
    authkey = _read(args.authkey, "--authkey")
    low, high = AUTHKEY_BYTES
    if not low <= len(authkey) <= high:
        raise UsageError(f"--authkey {args.authkey}: {len(authkey)} bytes, not {low}..{high}")
    env = [f"HAOS_NODE=n{number}"]
    for i in (0, 1):
        text = getattr(args, f"link{i}")
        if text is not None:
            link = parse_link(i, text)
            env.append(f"HAOS_LINK{i}={link.address}@{link.match}")
    return {
        "node.env": ("\n".join(env) + "\n").encode(),
        "etc/haos/node.env": f"HAOS_NODE={node.name}\n".encode(),
        "etc/haos/cluster.toml": _read(args.config, "--config"),
        "etc/corosync/corosync.conf": corosync,
        "etc/corosync/authkey": authkey,
    }


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{option} {path}: {e.strerror or e}") from None


def data_offset(image: Path) -> int:
    """The byte offset of the ``haos-data`` partition in ``image``'s GPT."""
    try:
        table = json.loads(run(["sfdisk", "--json", str(image)]))["partitiontable"]
    except (ValueError, KeyError) as e:
        raise UsageError(f"{image}: no readable partition table: {e}") from None
    sector = int(table.get("sectorsize", 512))
    for part in table.get("partitions", []):
        if part.get("name") == DATA_LABEL:
            return int(part["start"]) * sector
    raise UsageError(f"{image}: no partition labelled {DATA_LABEL}")


def write_image(image: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` under ``provision/`` of the image's data partition, then read each
    back and compare."""
    device = f"{image}?offset={data_offset(image)}"
    with tempfile.TemporaryDirectory(prefix="haos-provision-") as tmp:
        script: list[str] = []
        dirs = sorted({str(Path("provision", rel).parent) for rel in files}, key=len)
        for d in dirs:
            parts = Path(d).parts
            script += [f"mkdir {'/'.join(parts[: i + 1])}" for i in range(len(parts))]
        for i, (rel, data) in enumerate(sorted(files.items())):
            local = Path(tmp) / str(i)
            local.write_bytes(data)
            dest = f"provision/{rel}"
            mode = "0100400" if rel.endswith("authkey") else "0100644"
            script += [f"rm {dest}", f"write {local} {dest}", f"sif {dest} mode {mode}"]
        commands = Path(tmp) / "commands"
        commands.write_text("\n".join(script) + "\n")
        run(["debugfs", "-w", "-f", str(commands), device])  # "exists" errors are expected
        for rel, data in files.items():
            back = run_bytes(["debugfs", "-R", f"cat provision/{rel}", device])
            if back != data:
                raise UsageError(f"{image}: provision/{rel} did not read back as written")


def write_directory(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        dest = root / "provision" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(0o400 if rel.endswith("authkey") else 0o644)


def _run(args: argparse.Namespace) -> int:
    files = files_for(args)
    if args.target.is_dir():
        write_directory(args.target, files)
    elif args.target.exists():
        write_image(args.target, files)
    else:
        raise UsageError(f"{args.target}: no such image, device or directory")
    written = sorted(f"provision/{rel}" for rel in files)
    if args.json:
        print(json.dumps({"target": str(args.target), "written": written}, indent=2))
    else:
        print(f"{args.target}: provisioned {args.node}: {', '.join(written)}")
    return 0
