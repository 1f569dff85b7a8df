"""Drive formats: lay a rendered file tree onto a medium atomically, and read one back.

Writers only lay out bytes they are given (see :mod:`configdrive.render`); they never decide
what goes on a drive. Files are written in-process (no genisoimage, no mkfs, no mount, no root)
to a temporary file beside the target, fsynced, and moved into place, mode 0600. One timestamp
dates everything on a drive (:mod:`configdrive.drive.timestamps`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from configdrive.drive.iso9660 import is_iso9660, read_iso9660, write_iso9660
from configdrive.drive.timestamps import SOURCE_DATE_EPOCH, build_time
from configdrive.drive.vfat import NOVA_VFAT_SIZE, is_vfat, read_vfat, write_vfat
from configdrive.errors import DriveError, InvalidDrive

__all__ = [
    "NOVA_VFAT_SIZE",
    "SOURCE_DATE_EPOCH",
    "DriveContents",
    "DriveFormat",
    "Filesystem",
    "build_time",
    "read_drive",
    "write_drive",
    "write_image",
]

CONFIG_DRIVE_LABEL = "config-2"
NOCLOUD_LABEL = "cidata"
DRIVE_MODE = 0o600


class Filesystem(enum.StrEnum):
    ISO9660 = "iso9660"
    VFAT = "vfat"


class DriveFormat(enum.StrEnum):
    """What ``--format`` picks: the tree layout and the filesystem it goes on."""

    ISO9660 = "iso9660"  # config-2 on ISO9660 (nova's default)
    VFAT = "vfat"  # config-2 on VFAT (nova's legacy format)
    NOCLOUD = "nocloud"  # NoCloud seed (cidata) on ISO9660, as cloud-localds makes it
    NOCLOUD_VFAT = "nocloud-vfat"  # NoCloud seed on VFAT

    @property
    def filesystem(self) -> Filesystem:
        vfat = self in (DriveFormat.VFAT, DriveFormat.NOCLOUD_VFAT)
        return Filesystem.VFAT if vfat else Filesystem.ISO9660

    @property
    def nocloud(self) -> bool:
        return self in (DriveFormat.NOCLOUD, DriveFormat.NOCLOUD_VFAT)

    @property
    def label(self) -> str:
        return NOCLOUD_LABEL if self.nocloud else CONFIG_DRIVE_LABEL


@dataclass(frozen=True)
class DriveContents:
    """What a drive image holds, as read back from the image file."""

    filesystem: Filesystem
    label: str
    files: dict[str, bytes]
    size: int


def write_image(
    tree: Mapping[str, bytes],
    out: BinaryIO,
    fmt: DriveFormat,
    *,
    vfat_size: int | None = None,
    publisher: str = "configdrive",
    timestamp: datetime | None = None,
    label: str | None = None,
) -> int:
    """Write ``tree`` as a ``fmt`` image to an open file; returns the image size.

    ``timestamp`` (default :func:`build_time`: ``SOURCE_DATE_EPOCH`` or now) dates everything
    on the image, whatever its filesystem. ``label`` replaces ``fmt``'s (re-mastering a
    drive someone else labelled)."""
    timestamp = build_time() if timestamp is None else timestamp
    label = fmt.label if label is None else label
    if fmt.filesystem is Filesystem.VFAT:
        return write_vfat(tree, out, label=label, size=vfat_size, timestamp=timestamp)
    if vfat_size is not None:
        raise DriveError("a fixed size applies to VFAT drives only; ISO9660 is sized to fit")
    return write_iso9660(tree, out, label=label, publisher=publisher, timestamp=timestamp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_drive(
    tree: Mapping[str, bytes],
    path: str | os.PathLike[str],
    fmt: DriveFormat,
    *,
    force: bool = False,
    vfat_size: int | None = None,
    publisher: str = "configdrive",
    timestamp: datetime | None = None,
    label: str | None = None,
) -> int:
    """Atomically write ``tree`` as a ``fmt`` drive at ``path`` (mode 0600).

    An existing ``path`` is kept unless ``force``; on any failure nothing is left behind.
    Returns the image size in bytes.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise DriveError(f"cannot write {target}: directory {directory} does not exist")
    if target.exists() and not force:
        raise DriveError(
            f"{target} already exists; a drive is not overwritten",
            hint="pass --force to replace it",
        )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, DRIVE_MODE)
        with os.fdopen(fd, "w+b") as out:
            size = write_image(
                tree,
                out,
                fmt,
                vfat_size=vfat_size,
                publisher=publisher,
                timestamp=timestamp,
                label=label,
            )
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(tmp, target)
        else:
            _link_no_clobber(tmp, target)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return size


def _link_no_clobber(tmp: Path, target: Path) -> None:
    # link(2) fails if the target appeared meanwhile, so no other writer is ever clobbered.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise DriveError(
            f"{target} already exists; a drive is not overwritten",
            hint="pass --force to replace it",
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        os.replace(tmp, target)  # filesystem without hard links: best effort
        return
    tmp.unlink()


def read_drive(path: str | os.PathLike[str]) -> DriveContents:
    """Read any ISO9660 or VFAT drive image (ours, genisoimage's, mkfs.vfat's)."""
    target = Path(path)
    try:
        f = target.open("rb")
    except OSError as exc:
        raise InvalidDrive(f"cannot read {target}: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if is_iso9660(f):
            f.seek(0)
            iso = read_iso9660(f)
            return DriveContents(Filesystem.ISO9660, iso.label, iso.files, size)
        f.seek(0)
        if is_vfat(f):
            f.seek(0)
            fat = read_vfat(f)
            return DriveContents(Filesystem.VFAT, fat.label, fat.files, size)
    raise InvalidDrive(f"{target} is neither an ISO9660 nor a VFAT image")
