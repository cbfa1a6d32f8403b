"""The systemd-boot backend: haos' two loader entries on an ESP directory plus EFI variables.

Layout on the ESP (``esp`` is any directory: the mounted ESP, or a test's tmp_path)::

    loader/loader.conf                 default haos-a.conf      <- the committed release
    loader/entries/haos-a.conf         committed (no counter)
    loader/entries/haos-b+2-1.conf     on trial: 2 tries left, 1 done

How the two-phase commit maps onto systemd-boot (see :mod:`haos.bootctl.names`):

* ``loader.conf``'s ``default`` always names the committed entry exactly (``haos-a.conf``).
* A trial sets ``LoaderEntryDefault`` to the tries-left pattern ``haos-b+[1-9]*``. systemd-boot
  prefers that variable over ``loader.conf``; once the tries are used up the pattern stops
  matching and it boots the committed entry again, without any help from a running system.
* Blessing renames ``haos-b+1-2.conf`` to ``haos-b.conf``, then ``default`` moves to it and the
  variable is removed. systemd-bless-boot.service must not bless on its own (it would commit
  at boot-complete.target, before the cluster has proven the release): the image masks it.
* The booted slot comes from ``LoaderEntrySelected`` (the entry id before systemd-boot counted
  the try down).

Every file change is atomic: a new file is written to a dot-file (which systemd-boot ignores),
fsynced and renamed into place, then the directory is fsynced; a counter change is one rename
that never replaces an existing file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from haos.bootctl import firmware, names
from haos.bootctl.efivars import EfiVars, LoaderVar
from haos.bootctl.entries import EntryFile, Layout, parse_entry, render_entry
from haos.bootctl.loader import LoaderAction, check_action
from haos.bootctl.model import BootSnapshot, Slot
from haos.bootctl.policy import Bless, MarkBad, SetDefault, SetOneshot, SetTrial, WriteEntry
from haos.errors import ConfigError, ConfigProblem, ConflictError, UnavailableError, UsageError

ESP_CANDIDATES = (Path("/efi"), Path("/boot"), Path("/boot/efi"))


def find_esp(candidates: tuple[Path, ...] = ESP_CANDIDATES) -> Path:
    """The first candidate holding ``loader/entries`` (systemd's usual mount points)."""
    for path in candidates:
        if (path / "loader" / "entries").is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise UsageError(f"no systemd-boot ESP found (looked for loader/entries in {tried}); use --esp")


class SystemdBoot:
    """haos' slots on a systemd-boot ESP. Implements :class:`haos.bootctl.loader.BootLoader`."""

    def __init__(self, esp: Path, efivars: EfiVars, layout: Layout | None = None) -> None:
        self.esp = esp
        self.efivars = efivars
        self.layout = layout or Layout()

    @property
    def entries_dir(self) -> Path:
        return self.esp / "loader" / "entries"

    @property
    def loader_conf(self) -> Path:
        return self.esp / "loader" / "loader.conf"

    # --- reading -------------------------------------------------------------------------

    def read(self) -> BootSnapshot:
        return firmware.snapshot_of(self.read_esp())

    def read_esp(self) -> firmware.Esp:
        """The ESP as the firmware model sees it; ConfigError lists every malformed entry."""
        entries, foreign = self.read_entries()
        return firmware.Esp(
            entries=tuple(firmware.EspEntry(e.name, e.release) for e in entries.values())
            + tuple(firmware.EspEntry(n) for n in foreign),
            loader_default=self.read_loader_default(),
            efi_default=self.efivars.get(LoaderVar.DEFAULT),
            oneshot=self.efivars.get(LoaderVar.ONESHOT),
            selected=self.efivars.get(LoaderVar.SELECTED),
            prefix=self.layout.prefix,
        )

    def _entry_names(self) -> list[str]:
        if not (self.esp / "loader").is_dir():
            raise UsageError(f"{self.esp} is not a systemd-boot ESP: it has no loader/ directory")
        if not self.entries_dir.is_dir():
            return []
        try:
            listing = sorted(p.name for p in self.entries_dir.iterdir() if p.is_file())
        except OSError as e:
            raise UnavailableError(f"cannot list {self.entries_dir}: {e}") from e
        # What systemd-boot reads: *.conf, not hidden, not "auto-" (reserved for its own).
        return [
            n
            for n in listing
            if n.lower().endswith(names.SUFFIX)
            and not n.startswith(".")
            and not n.lower().startswith("auto-")
        ]

    def read_entries(self) -> tuple[dict[Slot, EntryFile], list[str]]:
        """haos' entries by slot, and the names of foreign entries."""
        problems: list[ConfigProblem] = []
        found: dict[Slot, EntryFile] = {}
        foreign: list[str] = []
        for name in self._entry_names():
            path = self.entries_dir / name
            slot = names.slot_of(name, self.layout.prefix)
            if slot is None:
                if self._looks_like_ours(name):
                    problems.append(
                        ConfigProblem(
                            str(path),
                            "",
                            "a haos entry whose boot counter does not "
                            "parse (expected NAME+LEFT[-DONE].conf)",
                        )
                    )
                foreign.append(name)
                continue
            if slot in found:
                problems.append(
                    ConfigProblem(
                        str(path), "", f"a second entry for slot {slot} (also {found[slot].name})"
                    )
                )
                continue
            try:
                found[slot] = parse_entry(
                    str(path), name, self._read(path), slot, self.layout, self._on_esp
                )
            except ConfigError as e:
                problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)
        return found, foreign

    def _looks_like_ours(self, name: str) -> bool:
        lower = name.lower()
        return any(lower.startswith(names.slot_base(self.layout.prefix, s) + "+") for s in Slot)

    def _on_esp(self, path: str) -> bool:
        return (self.esp / path.replace("\\", "/").lstrip("/")).is_file()

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as e:
            raise UnavailableError(f"cannot read {path}: {e}") from e

    def read_loader_default(self) -> str | None:
        try:
            text = self._read(self.loader_conf).decode("utf-8", errors="replace")
        except UnavailableError:
            if not self.loader_conf.exists():
                return None
            raise
        value = None
        for line in text.splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and parts[0] == "default":
                value = parts[1].strip()  # the last one wins, as in systemd-boot
        return value

    # --- writing -------------------------------------------------------------------------

    def apply(self, action: LoaderAction) -> None:
        esp = self.read_esp()
        check_action(firmware.snapshot_of(esp), action)
        entry = esp.entry(action.slot)
        match action:
            case Bless(slot):
                assert entry is not None
                self._rename(entry.name, names.good_name(entry.name))
            case MarkBad(slot):
                assert entry is not None
                self._rename(entry.name, names.bad_name(entry.name))
            case WriteEntry(slot, release, tries):
                self._write_entry(slot, release, tries)
            case SetDefault(slot):
                self._set_loader_default(names.committed_name(self.layout.prefix, slot))
                self.efivars.set(LoaderVar.DEFAULT, None)
            case SetTrial(slot):
                self.efivars.set(LoaderVar.DEFAULT, names.trial_pattern(self.layout.prefix, slot))
            case SetOneshot(slot):
                assert entry is not None
                self.efivars.set(LoaderVar.ONESHOT, names.entry_id(entry.name))

    def _rename(self, old: str, new: str) -> None:
        if old == new:
            return
        src, dst = self.entries_dir / old, self.entries_dir / new
        if dst.exists():
            raise ConflictError(f"cannot rename {src} to {dst.name}: that entry already exists")
        try:
            os.rename(src, dst)
            _fsync_dir(self.entries_dir)
        except OSError as e:
            raise UnavailableError(f"cannot rename {src} to {dst.name}: {e}") from e

    def _write_entry(self, slot: Slot, release: str, tries: int) -> None:
        image = self.layout.slot(slot).image
        if not self._on_esp(image):
            raise ConflictError(
                f"{self.esp / image.lstrip('/')} is missing: copy slot {slot}'s kernel to the "
                f"ESP before writing its entry (systemd-boot skips an entry without one)"
            )
        text = render_entry(slot, release, self.layout)
        name = names.counted_name(names.slot_base(self.layout.prefix, slot), tries)
        try:
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.entries_dir.glob(".*.tmp"):
                stale.unlink()
            # Old entry first: a crash in between leaves the slot empty, never two entries.
            for old in self._entry_names():
                if names.slot_of(old, self.layout.prefix) is slot:
                    (self.entries_dir / old).unlink()
            _fsync_dir(self.entries_dir)
            atomic_write(self.entries_dir / name, text.encode("utf-8"))
        except OSError as e:
            raise UnavailableError(f"cannot write {self.entries_dir / name}: {e}") from e

    def _set_loader_default(self, pattern: str) -> None:
        path = self.loader_conf
        try:
            old = path.read_text("utf-8") if path.exists() else ""
            atomic_write(path, set_default_line(old, pattern).encode("utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise UnavailableError(f"cannot update {path}: {e}") from e


def set_default_line(text: str, pattern: str) -> str:
    """``loader.conf`` text with one ``default`` line naming ``pattern``; the rest kept."""
    out: list[str] = []
    placed = False
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and parts[0] == "default":
            if not placed:
                out.append(f"default {pattern}")
                placed = True
            continue
        out.append(line)
    if not placed:
        out.append(f"default {pattern}")
    return "\n".join(out) + "\n"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: dot-file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
