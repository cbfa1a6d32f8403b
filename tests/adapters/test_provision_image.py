"""``haosctl provision`` onto a real GPT image with an ext4 data partition (sfdisk, mkfs.ext4,
debugfs; no mount, no root needed), read back, then read by the boot-time setup."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from haos.cli.main import main
from haos.services.nodesetup import Link, etc_files, identity

EXAMPLES = Path(__file__).resolve().parents[2] / "haos" / "examples"
COROSYNC = """totem {
    version: 2
    cluster_name: shelf
}
nodelist {
    node {
        ring0_addr: 10.10.0.1
        nodeid: 1
    }
    node {
        ring0_addr: 10.10.0.2
        nodeid: 2
    }
}
"""


def sh(*argv: str, stdin: str | None = None) -> bytes:
    return subprocess.run(
        argv, input=stdin and stdin.encode(), capture_output=True, check=True
    ).stdout


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """An image laid out like the appliance's: an ESP and a data partition (labels matter)."""
    path = tmp_path / "board.img"
    with path.open("wb") as f:
        f.truncate(48 << 20)
    sh(
        "sfdisk",
        "-q",
        str(path),
        stdin="label: gpt\nsize=4M, name=haos-esp\nsize=32M, name=haos-data\n",
    )
    table = json.loads(sh("sfdisk", "--json", str(path)))["partitiontable"]["partitions"]
    offset = int(table[1]["start"]) * 512
    sh("mkfs.ext4", "-q", "-F", "-E", f"offset={offset}", str(path), "32M")
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    corosync = tmp_path / "corosync.conf"
    corosync.write_text(COROSYNC)
    key = tmp_path / "authkey"
    key.write_bytes(bytes(range(256)) * 1)
    return {"config": EXAMPLES / "small-2n.toml", "corosync": corosync, "authkey": key}


def provision(target: Path, inputs: dict[str, Path], *extra: str) -> int:
    return main(
        [
            "provision",
            str(target),
            "--node",
            "n2",
            "--config",
            str(inputs["config"]),
            "--corosync",
            str(inputs["corosync"]),
            "--authkey",
            str(inputs["authkey"]),
            *extra,
        ]
    )


def test_a_provisioned_image_tells_the_booting_board_which_node_it_is(
    image: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    assert provision(image, inputs, "--link0", "10.10.0.2/24@52:54:00:4a:02:00") == 0
    # again: provisioning twice replaces the files instead of failing
    assert provision(image, inputs, "--link0", "10.10.0.2/24@52:54:00:4a:02:00") == 0
    offset = json.loads(sh("sfdisk", "--json", str(image)))["partitiontable"]["partitions"][1]
    device = f"{image}?offset={int(offset['start']) * 512}"
    out = tmp_path / "data"
    out.mkdir()
    sh("debugfs", "-R", f"rdump provision {out}", device)
    ident = identity("quiet", out / "provision", tmp_path / "no-fw-cfg", lambda: 0)
    assert ident is not None and ident.node == 2
    assert ident.links == (Link(0, "10.10.0.2/24", "52:54:00:4a:02:00"),)
    files = etc_files(out / "provision", tmp_path / "no-fw-cfg")
    assert sorted(files) == [
        "corosync/authkey",
        "corosync/corosync.conf",
        "haos/cluster.toml",
        "haos/node.env",
    ]
    assert files["corosync/authkey"].read_bytes() == inputs["authkey"].read_bytes()
    assert files["haos/node.env"].read_text() == "HAOS_NODE=n2\n"
    mode = sh("debugfs", "-R", "stat provision/etc/corosync/authkey", device).decode()
    assert "Mode:  0400" in mode


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("--node", "n7"), "has no such node"),
        (("--link0", "10.10.0.2@eth0"), "expected ADDR/PREFIX@"),
    ],
)
def test_bad_provisioning_input_is_refused_and_nothing_is_written(
    image: Path,
    inputs: dict[str, Path],
    change: tuple[str, str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = image.read_bytes()
    assert provision(image, inputs, *change) == 2
    assert needle in capsys.readouterr().err
    assert image.read_bytes() == before


def test_a_short_authkey_or_a_corosync_conf_without_the_node_is_refused(
    image: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inputs["authkey"].write_bytes(b"short")
    assert provision(image, inputs) == 2
    assert "5 bytes, not 128..4096" in capsys.readouterr().err
    inputs["authkey"].write_bytes(b"k" * 128)
    inputs["corosync"].write_text(COROSYNC.replace("nodeid: 2", "nodeid: 3"))
    assert provision(image, inputs) == 2
    assert "no node with nodeid: 2" in capsys.readouterr().err
    inputs["corosync"].write_text(COROSYNC)
    assert provision(image.parent / "missing.img", inputs) == 2
    assert "no such image" in capsys.readouterr().err
