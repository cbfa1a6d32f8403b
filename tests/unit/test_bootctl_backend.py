"""The systemd-boot backend on a tmp_path ESP: names, entry files, loader.conf, EFI variables."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haos.bootctl import firmware as fw
from haos.bootctl import names
from haos.bootctl.efivars import (
    LOADER_GUID,
    EfivarfsVars,
    LoaderVar,
    MemoryEfiVars,
    NoEfiVars,
    decode,
    encode,
)
from haos.bootctl.entries import Layout, SlotLayout, render_entry
from haos.bootctl.model import Slot, SlotState
from haos.bootctl.policy import Bless, MarkBad, SetDefault, SetOneshot, SetTrial, WriteEntry
from haos.bootctl.systemd_boot import SystemdBoot, atomic_write, find_esp, set_default_line
from haos.errors import ConfigError, ConflictError, UnavailableError, UsageError

A, B = Slot.A, Slot.B

# --- counter names, byte-exact with systemd-boot ------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("haos-a+3.conf", ("haos-a", 3, 0)),
        ("haos-a+2-1.conf", ("haos-a", 2, 1)),
        ("haos-a+0-3.conf", ("haos-a", 0, 3)),
        ("haos-a+0.conf", ("haos-a", 0, 0)),
        ("haos-a+03-007.conf", ("haos-a", 3, 7)),  # leading zeros parse
        ("foo+bar+3.conf", ("foo+bar", 3, 0)),  # the last '+' starts the counter
        ("haos-a+2147483647.conf", ("haos-a", 2**31 - 1, 0)),
        ("haos-a.conf", None),
        ("haos-a+.conf", None),
        ("haos-a+x.conf", None),
        ("haos-a+3x.conf", None),
        ("haos-a+3-.conf", None),
        ("haos-a+-1.conf", None),
        ("haos-a+3-4-5.conf", None),
        ("haos-a+3.CONF", None),  # the suffix is compared case-sensitively
        ("haos-a+3.conf.bak", None),
        ("haos-a+2147483648.conf", None),  # above INT_MAX
        ("haos-a+3+x.conf", None),  # the last '+' is not followed by a counter
    ],
)
def test_counter_parses_as_systemd_boot_does(
    name: str, expected: tuple[str, int, int] | None
) -> None:
    counter = names.parse_counter(name)
    got = None if counter is None else (counter.base, counter.left, counter.done)
    assert got == expected


def test_counting_down_renames_like_systemd_boot() -> None:
    series = ["haos-b+3.conf"]
    for _ in range(4):
        series.append(names.bumped_name(series[-1]))
    assert series == [
        "haos-b+3.conf",
        "haos-b+2-1.conf",
        "haos-b+1-2.conf",
        "haos-b+0-3.conf",
        "haos-b+0-4.conf",  # a last-resort boot still counts the tries done
    ]
    # The series from systemd-boot's own comment, with its .efi suffix.
    efi = ["foobar+4-0.efi"]
    for _ in range(4):
        efi.append(names.bumped_name(efi[-1], ".efi"))
    assert efi[1:] == ["foobar+3-1.efi", "foobar+2-2.efi", "foobar+1-3.efi", "foobar+0-4.efi"]
    assert names.bumped_name("haos-a.conf") == "haos-a.conf"


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("haos-b+2-1.conf", "haos-b.conf", "haos-b+0-1.conf"),
        ("haos-b+3.conf", "haos-b.conf", "haos-b+0.conf"),  # bless-boot writes "+0" for done 0
        ("haos-b+0-3.conf", "haos-b.conf", "haos-b+0-3.conf"),
        ("haos-b.conf", "haos-b.conf", "haos-b+0.conf"),
    ],
)
def test_bless_and_bad_names_match_systemd_bless_boot(name: str, good: str, bad: str) -> None:
    assert names.good_name(name) == good
    assert names.bad_name(name) == bad


def test_patterns_match_only_what_they_should() -> None:
    from fnmatch import fnmatchcase

    trial = names.trial_pattern("haos", B)
    assert trial == "haos-b+[1-9]*"
    matching = ["haos-b+3.conf", "haos-b+1-2.conf", "haos-b+9-0.conf"]
    not_matching = ["haos-b+0-3.conf", "haos-b+0.conf", "haos-b.conf", "haos-a+3.conf"]
    assert all(fnmatchcase(n, trial) for n in matching)
    assert not any(fnmatchcase(n, trial) for n in not_matching)
    assert names.committed_name("haos", A) == "haos-a.conf"
    assert names.pattern_slot("HAOS-B+[1-9]*", "haos") == (B, True)
    assert names.pattern_slot("haos-a.conf", "haos") == (A, False)
    assert names.pattern_slot("haos-*", "haos") is None


# --- the ESP fixture -----------------------------------------------------------------------

ENTRY_A = """\
# provisioned
title haos 1.0 (slot A)
version 1.0
linux /haos/a/vmlinuz
initrd /haos/a/initrd
options root=PARTLABEL=haos-root-a
options ro quiet
"""

LOADER_CONF = "timeout 0\n# keep this comment\ndefault haos-a.conf\neditor no\n"


@pytest.fixture
def esp(tmp_path: Path) -> Path:
    root = tmp_path / "esp"
    (root / "loader" / "entries").mkdir(parents=True)
    (root / "loader" / "loader.conf").write_text(LOADER_CONF)
    (root / "loader" / "entries" / "haos-a.conf").write_text(ENTRY_A)
    for slot in "ab":
        (root / "haos" / slot).mkdir(parents=True)
        (root / "haos" / slot / "vmlinuz").write_bytes(b"MZ")
        (root / "haos" / slot / "initrd").write_bytes(b"")
    return root


@pytest.fixture
def efivars(tmp_path: Path) -> EfivarfsVars:
    root = tmp_path / "efivars"
    root.mkdir()
    return EfivarfsVars(root)


def backend(esp: Path, efivars: EfivarfsVars, booted: str | None = "haos-a.conf") -> SystemdBoot:
    if booted is not None:
        efivars.set(LoaderVar.SELECTED, booted)
    return SystemdBoot(esp, efivars)


def power_on(sb: SystemdBoot) -> str | None:
    """Play systemd-boot on the directory: choose, count down on disk, set the variables."""
    before = sb.read_esp()
    after, chosen = fw.power_on(before)
    for old, new in zip(before.entries, after.entries, strict=True):
        if old.name != new.name:
            os.rename(sb.entries_dir / old.name, sb.entries_dir / new.name)
    sb.efivars.set(LoaderVar.ONESHOT, None)
    sb.efivars.set(LoaderVar.SELECTED, after.selected)
    return chosen


def entries(esp: Path) -> list[str]:
    return sorted(p.name for p in (esp / "loader" / "entries").iterdir())


# --- reading -------------------------------------------------------------------------------


def test_reads_a_freshly_provisioned_esp(esp: Path, efivars: EfivarfsVars) -> None:
    snap = backend(esp, efivars).read()
    assert snap.a.state is SlotState.COMMITTED and snap.a.release == "1.0"
    assert snap.a.entry == "haos-a.conf"
    assert snap.b.state is SlotState.EMPTY
    assert (snap.booted, snap.committed, snap.default, snap.fallback) == (A, A, A, A)
    assert snap.problems == ()


def test_reads_counters_from_the_file_names(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "loader/entries/haos-b+1-2.conf").write_text(render_entry(B, "1.1", Layout()))
    efivars.set(LoaderVar.DEFAULT, "haos-b+[1-9]*")
    snap = backend(esp, efivars, booted="haos-b+2-1.conf").read()
    assert snap.b.state is SlotState.TRYING
    assert (snap.b.tries_left, snap.b.tries_done, snap.b.release) == (1, 2, "1.1")
    assert (snap.booted, snap.trial, snap.default, snap.committed) == (B, B, B, A)


def test_foreign_and_hidden_entries_are_not_slots(esp: Path, efivars: EfivarfsVars) -> None:
    d = esp / "loader" / "entries"
    (d / "memtest.conf").write_text("title memtest\nefi /memtest.efi\n")
    (d / ".haos-b+3.conf.tmp").write_text("garbage")
    (d / "auto-windows.conf").write_text("garbage")
    (d / "notes.txt").write_text("garbage")
    snap = backend(esp, efivars).read()
    assert snap.b.state is SlotState.EMPTY
    assert snap.default is A


@pytest.mark.parametrize(
    ("name", "text", "key", "reason"),
    [
        ("haos-b.conf", ENTRY_A.replace("title haos 1.0 (slot A)\n", ""), "title", "missing"),
        ("haos-b.conf", ENTRY_A.replace("version 1.0\n", ""), "version", "missing"),
        (
            "haos-b.conf",
            ENTRY_A.replace("linux /haos/a/vmlinuz\n", ""),
            "linux",
            "no linux, uki or efi line",
        ),
        ("haos-b.conf", ENTRY_A, "options", "root=PARTLABEL=haos-root-a in an entry for slot B"),
        (
            "haos-b.conf",
            ENTRY_A.replace("root=PARTLABEL=haos-root-a", "quiet"),
            "options",
            "no root=; slot B needs root=PARTLABEL=haos-root-b",
        ),
        (
            "haos-b.conf",
            ENTRY_A.replace("/haos/a/", "/haos/c/").replace("haos-root-a", "haos-root-b"),
            "linux",
            "/haos/c/vmlinuz is not on the ESP",
        ),
        (
            "haos-b.conf",
            ENTRY_A.replace("haos-root-a", "haos-root-b") + "efi /x.efi\n",
            "efi",
            "both linux and efi",
        ),
        ("haos-b+x.conf", ENTRY_A, "", "boot counter does not parse"),
    ],
)
def test_malformed_entry_is_a_config_error_naming_the_file(
    esp: Path, efivars: EfivarfsVars, name: str, text: str, key: str, reason: str
) -> None:
    path = esp / "loader" / "entries" / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        backend(esp, efivars).read()
    problems = [(p.file, p.key, p.reason) for p in info.value.problems]
    assert any(f == str(path) and k == key and reason in r for f, k, r in problems), problems
    assert str(path) in str(info.value)


def test_non_utf8_entry_is_a_config_error(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "loader/entries/haos-b.conf").write_bytes(b"title \xff\n")
    with pytest.raises(ConfigError, match=r"haos-b\.conf: not UTF-8"):
        backend(esp, efivars).read()


def test_two_entries_for_one_slot_are_an_error(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "loader/entries/haos-a+0-3.conf").write_text(ENTRY_A)
    with pytest.raises(ConfigError, match="a second entry for slot A"):
        backend(esp, efivars).read()


def test_uki_entry_may_carry_its_root_inside(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "EFI" / "Linux").mkdir(parents=True)
    (esp / "EFI/Linux/haos-b.efi").write_bytes(b"MZ")
    (esp / "loader/entries/haos-b.conf").write_text(
        "title haos 1.1\nversion 1.1\nuki /EFI/Linux/haos-b.efi\n"
    )
    assert backend(esp, efivars).read().b.state is SlotState.COMMITTED


def test_esp_without_loader_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no loader/ directory"):
        SystemdBoot(tmp_path, MemoryEfiVars()).read()
    with pytest.raises(UsageError, match="use --esp"):
        find_esp((tmp_path / "efi", tmp_path / "boot"))


def test_find_esp_takes_the_first_with_entries(tmp_path: Path, esp: Path) -> None:
    assert find_esp((tmp_path / "nothing", esp)) == esp


# --- writing -------------------------------------------------------------------------------


def test_write_entry_renders_the_slot_entry_byte_exact(esp: Path, efivars: EfivarfsVars) -> None:
    sb = backend(esp, efivars)
    sb.apply(WriteEntry(B, "1.1", 3))
    assert entries(esp) == ["haos-a.conf", "haos-b+3.conf"]
    assert (esp / "loader/entries/haos-b+3.conf").read_bytes() == (
        b"# haos slot B; written by haos.bootctl, renamed by systemd-boot (boot counting)\n"
        b"title haos 1.1 (slot B)\n"
        b"version 1.1\n"
        b"linux /haos/b/vmlinuz\n"
        b"initrd /haos/b/initrd\n"
        b"options root=PARTLABEL=haos-root-b ro\n"
    )
    assert (esp / "loader/entries/haos-a.conf").read_text() == ENTRY_A


def test_write_entry_replaces_the_old_entry_of_that_slot(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "loader/entries/haos-b+0-3.conf").write_text(render_entry(B, "0.9", Layout()))
    (esp / "loader/entries/.haos-b+3.conf.tmp").write_text("left over from a crash")
    sb = backend(esp, efivars)
    sb.apply(WriteEntry(B, "1.1", 3))
    assert entries(esp) == ["haos-a.conf", "haos-b+3.conf"]
    assert sb.read().b.release == "1.1"


def test_write_entry_for_a_uki_layout(esp: Path, efivars: EfivarfsVars) -> None:
    layout = Layout(b=SlotLayout("haos-root-b", uki="/EFI/Linux/haos-b.efi"))
    (esp / "EFI" / "Linux").mkdir(parents=True)
    (esp / "EFI/Linux/haos-b.efi").write_bytes(b"MZ")
    efivars.set(LoaderVar.SELECTED, "haos-a.conf")
    sb = SystemdBoot(esp, efivars, layout)
    sb.apply(WriteEntry(B, "1.1", 2))
    text = (esp / "loader/entries/haos-b+2.conf").read_text()
    assert "efi /EFI/Linux/haos-b.efi\n" in text and "linux" not in text
    assert sb.read().b.tries_left == 2


@pytest.mark.parametrize(
    ("action", "why"),
    [
        (WriteEntry(A, "2.0", 3), "slot A holds the committed release"),
        (MarkBad(A), "slot A is the committed default"),
        (SetDefault(B), "slot B is empty"),
        (SetTrial(B), "slot B has no tries left"),
        (Bless(B), "slot B has no entry"),
    ],
)
def test_backend_refuses_actions_that_break_the_slot_rules(
    esp: Path, efivars: EfivarfsVars, action: WriteEntry, why: str
) -> None:
    sb = backend(esp, efivars)
    with pytest.raises(ConflictError, match=why):
        sb.apply(action)
    assert entries(esp) == ["haos-a.conf"]


def test_write_entry_refuses_the_running_slot(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "loader/entries/haos-b.conf").write_text(render_entry(B, "1.1", Layout()))
    sb = backend(esp, efivars, booted="haos-b.conf")
    with pytest.raises(ConflictError, match="slot B is running"):
        sb.apply(WriteEntry(B, "2.0", 3))


def test_write_entry_needs_the_kernel_on_the_esp(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "haos/b/vmlinuz").unlink()
    with pytest.raises(ConflictError, match="copy slot B's kernel"):
        backend(esp, efivars).apply(WriteEntry(B, "1.1", 3))
    assert entries(esp) == ["haos-a.conf"]


def test_a_whole_trial_on_disk_commits_by_renaming(esp: Path, efivars: EfivarfsVars) -> None:
    sb = backend(esp, efivars)
    sb.apply(WriteEntry(B, "1.1", 3))
    sb.apply(SetTrial(B))
    assert efivars.path(LoaderVar.DEFAULT).read_bytes() == encode("haos-b+[1-9]*")
    assert power_on(sb) == "haos-b+3.conf"
    assert entries(esp) == ["haos-a.conf", "haos-b+2-1.conf"]
    snap = sb.read()
    assert (snap.booted, snap.b.state, snap.b.tries_done) == (B, SlotState.TRYING, 1)
    sb.apply(Bless(B))
    sb.apply(SetDefault(B))
    assert entries(esp) == ["haos-a.conf", "haos-b.conf"]
    assert (esp / "loader/loader.conf").read_text() == LOADER_CONF.replace(
        "default haos-a.conf", "default haos-b.conf"
    )
    assert not efivars.path(LoaderVar.DEFAULT).exists()
    snap = sb.read()
    assert (snap.committed, snap.fallback, snap.default, snap.trial) == (B, B, B, None)


def test_a_failing_trial_on_disk_falls_back_by_itself(esp: Path, efivars: EfivarfsVars) -> None:
    sb = backend(esp, efivars)
    sb.apply(WriteEntry(B, "1.1", 3))
    sb.apply(SetTrial(B))
    booted = [power_on(sb) for _ in range(5)]
    assert booted == [
        "haos-b+3.conf",
        "haos-b+2-1.conf",
        "haos-b+1-2.conf",
        "haos-a.conf",
        "haos-a.conf",
    ]
    snap = sb.read()
    assert snap.b.state is SlotState.BAD and snap.b.entry == "haos-b+0-3.conf"
    assert (snap.booted, snap.committed, snap.default) == (A, A, A)


def test_mark_bad_and_oneshot(esp: Path, efivars: EfivarfsVars) -> None:
    sb = backend(esp, efivars)
    sb.apply(WriteEntry(B, "1.1", 3))
    sb.apply(SetOneshot(B))
    assert efivars.get(LoaderVar.ONESHOT) == "haos-b+3.conf"
    assert sb.read().oneshot is B
    assert power_on(sb) == "haos-b+3.conf"
    assert efivars.get(LoaderVar.ONESHOT) is None
    sb.apply(SetDefault(A))
    sb.apply(MarkBad(B))
    assert entries(esp) == ["haos-a.conf", "haos-b+0-1.conf"]
    sb.apply(MarkBad(B))  # idempotent
    assert entries(esp) == ["haos-a.conf", "haos-b+0-1.conf"]
    assert power_on(sb) == "haos-a.conf"


def test_rename_never_replaces_an_existing_entry(esp: Path, efivars: EfivarfsVars) -> None:
    sb = backend(esp, efivars)
    (esp / "loader/entries/haos-b+2-1.conf").write_text(render_entry(B, "1.1", Layout()))
    with pytest.raises(ConflictError, match="already exists"):
        sb._rename("haos-b+2-1.conf", "haos-a.conf")
    assert entries(esp) == ["haos-a.conf", "haos-b+2-1.conf"]


# --- loader.conf and atomic writes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "default haos-b.conf\n"),
        ("timeout 3\n", "timeout 3\ndefault haos-b.conf\n"),
        ("default haos-a.conf\ntimeout 3\n", "default haos-b.conf\ntimeout 3\n"),
        ("default x\n#c\ndefault y\n", "default haos-b.conf\n#c\n"),
        ("  default\thaos-a.conf\n", "default haos-b.conf\n"),
        ("# default haos-a.conf\n", "# default haos-a.conf\ndefault haos-b.conf\n"),
    ],
)
def test_loader_conf_default_line(text: str, expected: str) -> None:
    assert set_default_line(text, "haos-b.conf") == expected


def test_loader_conf_created_when_missing(esp: Path, efivars: EfivarfsVars) -> None:
    (esp / "loader/loader.conf").unlink()
    sb = backend(esp, efivars)
    assert sb.read().fallback is None
    sb.apply(SetDefault(A))
    assert (esp / "loader/loader.conf").read_text() == "default haos-a.conf\n"


def test_atomic_write_syncs_then_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.conf"
    target.write_text("old")
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(a: Path, b: Path) -> None:
        calls.append(f"replace {Path(a).name}")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(target, b"new")
    assert calls == ["fsync", "replace .f.conf.tmp", "fsync"]  # file, rename, directory
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.conf"]


def test_atomic_write_crash_before_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "loader.conf"
    target.write_text("default haos-a.conf\n")

    def crash(a: object, b: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        atomic_write(target, b"default haos-b.conf\n")
    assert target.read_text() == "default haos-a.conf\n"
    # The half-done file is a dot-file: systemd-boot and our reader both skip it.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".loader.conf.tmp"]
    monkeypatch.undo()
    atomic_write(target, b"x")  # and the next write clears it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.conf"]


# --- EFI variables -------------------------------------------------------------------------


def test_efivar_bytes_are_attributes_then_utf16le_with_nul() -> None:
    raw = encode("haos-a.conf")
    assert raw[:4] == struct.pack("<I", 0x7)
    assert raw[4:] == "haos-a.conf\0".encode("utf-16-le")
    assert raw == b"\x07\x00\x00\x00" + b"".join(bytes([ord(c), 0]) for c in "haos-a.conf\0")
    assert decode(raw) == (7, "haos-a.conf")


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0")))
def test_efivar_encoding_round_trips(value: str) -> None:
    assert decode(encode(value)) == (7, value)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x07\x00", "not an EFI string variable"),
        (b"\x07\x00\x00\x00a", "not an EFI string variable"),
        (b"\x07\x00\x00\x00\x00\xd8", "not UTF-16LE"),
        (b"\x07\x00\x00\x00a\x00\x00\x00b\x00", "NUL inside"),
    ],
)
def test_malformed_efivar_is_a_config_error(raw: bytes, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        decode(raw, "LoaderEntryDefault")


def test_efivar_without_trailing_nul_is_read(tmp_path: Path) -> None:
    vars_ = EfivarfsVars(tmp_path)
    vars_.path(LoaderVar.SELECTED).write_bytes(
        b"\x06\x00\x00\x00" + "haos-b.conf".encode("utf-16-le")
    )
    assert vars_.get(LoaderVar.SELECTED) == "haos-b.conf"


def test_efivarfs_directory_set_get_delete(tmp_path: Path) -> None:
    vars_ = EfivarfsVars(tmp_path)
    assert vars_.get(LoaderVar.ONESHOT) is None
    vars_.set(LoaderVar.ONESHOT, "haos-b+3.conf")
    path = tmp_path / f"LoaderEntryOneShot-{LOADER_GUID}"
    assert path.read_bytes() == encode("haos-b+3.conf")
    vars_.set(LoaderVar.ONESHOT, "x")  # shorter: no stale bytes left behind
    assert path.read_bytes() == encode("x")
    vars_.set(LoaderVar.ONESHOT, None)
    vars_.set(LoaderVar.ONESHOT, None)
    assert not path.exists()
    assert sorted(tmp_path.iterdir()) == []


def test_missing_efivars_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="no EFI variables"):
        EfivarfsVars(tmp_path / "absent").set(LoaderVar.DEFAULT, "x")
    with pytest.raises(UnavailableError, match="no EFI variables"):
        NoEfiVars().set(LoaderVar.DEFAULT, "x")
    NoEfiVars().set(LoaderVar.DEFAULT, None)  # deleting nothing is fine
    assert NoEfiVars().get(LoaderVar.SELECTED) is None


def test_trial_without_efivars_is_unavailable(esp: Path) -> None:
    sb = SystemdBoot(esp, NoEfiVars())
    sb.apply(WriteEntry(B, "1.1", 3))
    with pytest.raises(UnavailableError, match="LoaderEntryDefault"):
        sb.apply(SetTrial(B))
