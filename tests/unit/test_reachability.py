"""Every module of the product package is reached from an entry point the product ships.

The entry points are read from the tree: the console scripts of pyproject.toml, the
``python3 -m MODULE`` lines of the systemd units and the image's scripts, and the library
applications link with (``haos.client``). A module counts as reached when an entry point
imports it, directly or through other reached modules. A module that nothing reaches is code
the appliance never runs: it is wired in, removed, or listed below with the reason.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "haos"
LIBRARIES = ("haos.client",)
RUN_MODULE = re.compile(r"python3?\"?\s+-m\s+([A-Za-z_][\w.]*)")
FOLDERS = ("units", "image", "scripts", "qemu", "mkosi.extra")

# Modules no entry point imports, each with why it is still in the product package. The list
# must match exactly: a module wired in since is taken off it.
NOT_REACHED: dict[str, str] = {
    "haos.cluster.dss.corosync.cmap": "corosync's cmap, for the hot-swap and management work",
    "haos.apps": "the sample applications package, whose modules run as commands",
    "haos.apps.counter": "the sample application, run as a component's command from cluster.toml",
    "haos.hotswap": "the hot-swap manager's package, not built yet",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def entry_points(known: dict[str, Path]) -> set[str]:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    roots = {target.split(":")[0] for target in scripts.values()}
    files = [p for f in FOLDERS for p in (ROOT / f).rglob("*") if p.is_file()]
    files += [p for p in ROOT.glob("mkosi.*") if p.is_file()]
    for path in files:
        roots.update(RUN_MODULE.findall(path.read_text(errors="replace")))
    roots.update(LIBRARIES)
    roots.update(f"{r}.__main__" for r in list(roots))  # `python3 -m PACKAGE` runs this
    return {r for r in roots if r in known}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        for target in targets:
            parts = target.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out & known.keys()


def reached(known: dict[str, Path]) -> set[str]:
    seen: set[str] = set()
    todo = list(entry_points(known))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.endswith(".__main__"):
            todo.append(name.rpartition(".")[0])
        todo.extend(imports(name, known[name], known) - seen)
    return seen


def test_every_product_module_is_reached_from_an_entry_point_or_listed_with_its_reason() -> None:
    known = modules()
    unreached = set(known) - reached(known)
    assert sorted(unreached - NOT_REACHED.keys()) == [], "reached by no entry point"
    assert sorted(NOT_REACHED.keys() - unreached) == [], "reached now: take it off the list"


def test_the_reachability_check_sees_the_daemons_and_the_command_line() -> None:
    known = modules()
    roots = entry_points(known)
    assert {"haos.services.clusterd", "haos.services.agent", "haos.client"} <= roots | {
        r.rpartition(".")[0] for r in roots
    }
    assert "haos.cli" in {r.rpartition(".")[0] for r in roots} | roots
    assert "haos.cluster.crim.policy" in reached(known)


def test_the_product_imports_nothing_from_the_development_package() -> None:
    known = modules()
    lab = {
        f"{name} imports {target}"
        for name, path in known.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        if target == "haoslab" or target.startswith("haoslab.")
    }
    assert sorted(lab) == []
