"""haos' loader entry files: where each slot's kernel and root are, parsing and validation.

An entry is a Boot Loader Specification type #1 file: ``key value`` lines, ``#`` comments,
repeated ``options`` lines joined with a space (as systemd-boot does). A haos entry must have a
``title``, a ``version`` (the release), exactly one of ``linux`` / ``uki`` / ``efi``, and its
root must be its own slot's partition: ``root=PARTLABEL=<the slot's label>`` is required with
``linux`` (a UKI may carry it in its embedded command line) and, when present, must never name
the other slot's partition: a "B" entry booting A's root would try nothing and could bless the
wrong release.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from haos.bootctl.model import Slot
from haos.errors import ConfigError, ConfigProblem

_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]*")
_KERNEL_KEYS = ("linux", "uki", "efi")
_SEP = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class SlotLayout:
    """Where a slot's boot files live on the ESP and which partition is its root."""

    partlabel: str
    linux: str | None = None
    initrd: tuple[str, ...] = ()
    uki: str | None = None

    @property
    def image(self) -> str:
        image = self.linux or self.uki
        assert image is not None  # checked by Layout
        return image


@dataclass(frozen=True)
class Layout:
    """The ESP layout haos writes entries for (what the image build must match)."""

    prefix: str = "haos"
    a: SlotLayout = SlotLayout("haos-root-a", linux="/haos/a/vmlinuz", initrd=("/haos/a/initrd",))
    b: SlotLayout = SlotLayout("haos-root-b", linux="/haos/b/vmlinuz", initrd=("/haos/b/initrd",))
    options: str = "ro"
    title: str = "haos"

    def __post_init__(self) -> None:
        problems = []
        if not _PREFIX.fullmatch(self.prefix):
            problems.append(ConfigProblem("boot layout", "prefix", "must be lower case [a-z0-9_-]"))
        for slot in Slot:
            sl = self.slot(slot)
            if (sl.linux is None) == (sl.uki is None):
                problems.append(
                    ConfigProblem("boot layout", f"{slot}", "needs exactly one of linux or uki")
                )
        if self.a.partlabel == self.b.partlabel:
            problems.append(ConfigProblem("boot layout", "partlabel", "A and B share a label"))
        if problems:
            raise ConfigError(problems)

    def slot(self, slot: Slot) -> SlotLayout:
        return self.a if slot is Slot.A else self.b


@dataclass(frozen=True)
class EntryFile:
    """A validated haos entry."""

    name: str
    slot: Slot
    title: str
    release: str
    kind: str  # linux, uki or efi
    image: str
    options: str


def parse_keys(text: str) -> dict[str, list[str]]:
    """Every key's values in order; ``options`` lines stay separate (joined by the caller)."""
    keys: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, *rest = _SEP.split(line, maxsplit=1)
        keys.setdefault(key, []).append(rest[0].strip() if rest else "")
    return keys


def root_labels(options: str) -> list[str]:
    """The ``root=`` values on a kernel command line."""
    return [tok[len("root=") :] for tok in options.split() if tok.startswith("root=")]


def parse_entry(
    where: str,
    name: str,
    data: bytes,
    slot: Slot,
    layout: Layout,
    exists: Callable[[str], bool] | None = None,
) -> EntryFile:
    """Validate entry ``name`` (read from ``where``) of ``slot``; ConfigError lists every problem.

    ``exists(path)`` tells whether a file named by the entry is on the ESP (systemd-boot skips
    an entry whose kernel is missing).
    """
    problems: list[ConfigProblem] = []

    def problem(key: str, reason: str) -> None:
        problems.append(ConfigProblem(where, key, reason))

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(where, "", f"not UTF-8: {e}")]) from e
    keys = parse_keys(text)
    title = _single(keys, "title", problem)
    release = _single(keys, "version", problem)
    kinds = [k for k in _KERNEL_KEYS if k in keys]
    kind, image = "", ""
    if not kinds:
        problem("linux", "no linux, uki or efi line: nothing to boot")
    elif len(kinds) > 1:
        problem(kinds[1], f"both {kinds[0]} and {kinds[1]}: one kernel per entry")
    else:
        kind = kinds[0]
        image = _single(keys, kind, problem)
        if image and exists is not None and not exists(image):
            problem(kind, f"{image} is not on the ESP; systemd-boot would skip this entry")
    options = " ".join(v for v in keys.get("options", []) if v)
    _check_root(options, kind, slot, layout, problem)
    if problems:
        raise ConfigError(problems)
    return EntryFile(name, slot, title, release, kind, image, options)


def _single(keys: dict[str, list[str]], key: str, problem: Callable[[str, str], None]) -> str:
    values = keys.get(key, [])
    if not values or not values[-1]:
        problem(key, "missing")
        return ""
    if len(values) > 1:
        problem(key, f"given {len(values)} times")
    return values[-1]


def _check_root(
    options: str, kind: str, slot: Slot, layout: Layout, problem: Callable[[str, str], None]
) -> None:
    expected = f"PARTLABEL={layout.slot(slot).partlabel}"
    roots = root_labels(options)
    if len(roots) > 1:
        problem("options", f"{len(roots)} root= arguments; the kernel would take the last")
    elif roots and roots[0] != expected:
        problem("options", f"root={roots[0]} in an entry for slot {slot}; it must be {expected}")
    elif not roots and kind == "linux":
        problem("options", f"no root=; slot {slot} needs root={expected}")


def render_entry(slot: Slot, release: str, layout: Layout) -> str:
    """The text of a new entry for ``release`` in ``slot``."""
    sl = layout.slot(slot)
    lines = [
        f"# haos slot {slot}; written by haos.bootctl, renamed by systemd-boot (boot counting)",
        f"title {layout.title} {release} (slot {slot})",
        f"version {release}",
    ]
    if sl.linux is not None:
        lines.append(f"linux {sl.linux}")
        lines.extend(f"initrd {path}" for path in sl.initrd)
    else:
        # "efi" rather than "uki": every systemd-boot since 239 starts a UKI named by "efi".
        lines.append(f"efi {sl.uki}")
    lines.append(f"options root=PARTLABEL={sl.partlabel} {layout.options}".rstrip())
    return "\n".join(lines) + "\n"
