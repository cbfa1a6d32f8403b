"""The systemd-boot EFI variables haos reads and writes, behind a small Protocol.

All live under the Boot Loader Interface vendor GUID. In efivarfs a variable is the file
``<Name>-<guid>`` whose content is a 4-byte little-endian attribute mask followed by the value;
systemd's string variables are UTF-16LE with a terminating NUL. We write them with the mask
systemd uses (non-volatile, boot-service and runtime access).

:class:`EfivarfsVars` works on ``/sys/firmware/efi/efivars`` or on any directory laid out the
same way (tests). efivarfs cannot rename, so a variable is written by one ``write()`` of the
whole buffer (the kernel makes that one SetVariable call); the kernel marks most variables
immutable, so the flag is cleared before changing or deleting one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from haos.errors import ConfigError, ConfigProblem, UnavailableError

LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFI_VARIABLE_NON_VOLATILE = 0x1
EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x2
EFI_VARIABLE_RUNTIME_ACCESS = 0x4
DEFAULT_ATTRIBUTES = (
    EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS
)
EFIVARFS = Path("/sys/firmware/efi/efivars")

_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10


class LoaderVar(StrEnum):
    DEFAULT = "LoaderEntryDefault"
    ONESHOT = "LoaderEntryOneShot"
    SELECTED = "LoaderEntrySelected"
    BOOT_COUNT_PATH = "LoaderBootCountPath"


class EfiVars(Protocol):
    """String variables of the boot loader.

    ``get`` returns None for a variable that does not exist; ``set(name, None)`` deletes it
    (deleting a missing one is fine). Both raise :class:`UnavailableError` when the variables
    cannot be reached, :class:`ConfigError` when a value is malformed.
    """

    def get(self, name: LoaderVar) -> str | None: ...

    def set(self, name: LoaderVar, value: str | None) -> None: ...


def encode(value: str, attributes: int = DEFAULT_ATTRIBUTES) -> bytes:
    """efivarfs bytes of a string variable: attributes, UTF-16LE, NUL."""
    return struct.pack("<I", attributes) + (value + "\0").encode("utf-16-le")


def decode(raw: bytes, where: str = "efivar") -> tuple[int, str]:
    """(attributes, string) of efivarfs bytes; ConfigError naming ``where`` if malformed."""
    if len(raw) < 4 or (len(raw) - 4) % 2:
        raise ConfigError(
            [ConfigProblem(where, "", f"not an EFI string variable ({len(raw)} bytes)")]
        )
    (attributes,) = struct.unpack("<I", raw[:4])
    try:
        text = raw[4:].decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(where, "", f"not UTF-16LE: {e}")]) from e
    # Strings are NUL-terminated; be lenient with a missing NUL, strict about one inside.
    if text.endswith("\0"):
        text = text[:-1]
    if "\0" in text:
        raise ConfigError([ConfigProblem(where, "", "NUL inside the string")])
    return attributes, text


class EfivarfsVars:
    """Boot loader variables in an efivarfs mount, or a directory laid out like one.

    ``efivarfs`` (default: whether ``root`` is the real mount point) selects how a value is
    written: one ``write()`` that the kernel turns into one SetVariable call, or, in a plain
    directory, a temporary file renamed over the old one.
    """

    def __init__(
        self, root: Path = EFIVARFS, guid: str = LOADER_GUID, *, efivarfs: bool | None = None
    ) -> None:
        self.root = root
        self.guid = guid
        self.efivarfs = root == EFIVARFS if efivarfs is None else efivarfs

    def path(self, name: LoaderVar) -> Path:
        return self.root / f"{name.value}-{self.guid}"

    def get(self, name: LoaderVar) -> str | None:
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UnavailableError(f"cannot read EFI variable {path}: {e}") from e
        return decode(raw, str(path))[1]

    def set(self, name: LoaderVar, value: str | None) -> None:
        path = self.path(name)
        if not self.root.is_dir():
            raise UnavailableError(f"no EFI variables at {self.root}")
        try:
            if self.efivarfs and path.exists():
                _clear_immutable(path)
            if value is None:
                path.unlink(missing_ok=True)
            elif self.efivarfs:
                _write_once(path, encode(value))
            else:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.unlink(missing_ok=True)
                _write_once(tmp, encode(value))
                os.replace(tmp, path)
        except OSError as e:
            raise UnavailableError(f"cannot write EFI variable {path}: {e}") from e


def _write_once(path: Path, data: bytes) -> None:
    # No O_TRUNC: efivarfs replaces the whole variable on each write and has no truncate.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, f"short write to {path}")
    finally:
        os.close(fd)


def _clear_immutable(path: Path) -> None:
    """Clear efivarfs' immutable flag; a plain directory (tests) has none to clear."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        # The kernel reads and writes an int here, whatever the ioctl number's size says.
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("i", 0))
        (flags,) = struct.unpack("i", buf)
        if flags & _FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags & ~_FS_IMMUTABLE_FL))
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)


class NoEfiVars:
    """No EFI variables (no UEFI, or a container): reads see nothing, writes are refused."""

    def get(self, name: LoaderVar) -> str | None:
        return None

    def set(self, name: LoaderVar, value: str | None) -> None:
        if value is None:
            return  # nothing to delete
        raise UnavailableError(
            f"cannot set {name.value}: no EFI variables on this system (pass --efivars DIR?)"
        )


class MemoryEfiVars:
    """In-memory variables for unit tests."""

    def __init__(self, values: dict[LoaderVar, str] | None = None) -> None:
        self.values: dict[LoaderVar, str] = dict(values or {})

    def get(self, name: LoaderVar) -> str | None:
        return self.values.get(name)

    def set(self, name: LoaderVar, value: str | None) -> None:
        if value is None:
            self.values.pop(name, None)
        else:
            self.values[name] = value
