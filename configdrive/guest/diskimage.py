"""Disk images, offline: find the ext filesystem in a raw disk (whole disk or an MBR/GPT
partition), and move qcow2 images to raw and back without losing their format settings.

Used by :mod:`configdrive.guest.tune`; nothing here mounts anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from configdrive.errors import ConfigDriveError
from configdrive.run import run

__all__ = [
    "FilesystemInfo",
    "qcow2_backing",
    "ImageError",
    "candidates",
    "locked",
    "qcow2_info",
    "qcow2_write_back",
    "temp_next_to",
]

log = logging.getLogger("configdrive.guest.tune")


class ImageError(ConfigDriveError):
    """A disk image cannot be tuned: not an image, no ext root filesystem, not cloud-init."""


_SECTOR = 512
_EXT_MAGIC = 0xEF53
_MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})
QCOW2_MAGIC = b"QFI\xfb"


def qcow2_backing(path: Path) -> Path | None:
    """The backing file a qcow2 image names in its header (relative names resolved against
    the image's folder), or None: no backing file, not a qcow2 image, or unreadable."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", head[8:20])
            if not offset or not 0 < size <= 1023:  # QEMU's limit on the name's length
                return None
            f.seek(offset)
            name = f.read(size).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    backing = Path(name)
    return backing if backing.is_absolute() else path.parent / backing


@dataclass(frozen=True)
class FilesystemInfo:
    """The root filesystem that was found (and edited) in an image."""

    type: str  # "ext2" | "ext3" | "ext4"
    offset: int  # bytes from the start of the (raw) disk
    size: int  # bytes
    partition: int | None  # partition number (1-based, as Linux numbers it); None: whole disk
    partition_table: str | None  # "gpt" | "dos" | None
    label: str
    uuid: str


@dataclass(frozen=True)
class _Partition:
    number: int
    offset: int
    size: int
    table: str


def _read_at(f: _Reader, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


class _Reader(Protocol):
    def seek(self, offset: int, whence: int = ..., /) -> int: ...

    def read(self, size: int = ..., /) -> bytes: ...


def _ext_superblock(f: _Reader, offset: int) -> bytes | None:
    sb = _read_at(f, offset + 1024, 1024)
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 56)[0] != _EXT_MAGIC:
        return None
    return sb


def _fs_info(sb: bytes, offset: int, part: _Partition | None) -> FilesystemInfo:
    log_block = struct.unpack_from("<I", sb, 24)[0]
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 92)
    blocks = struct.unpack_from("<I", sb, 4)[0]
    if incompat & 0x80:  # 64bit
        blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
    if incompat & ~0x1E or ro_compat & ~0x7:  # beyond filetype/recover/journal_dev/meta_bg
        kind = "ext4"
    elif compat & 0x4:  # has_journal
        kind = "ext3"
    else:
        kind = "ext2"
    u = sb[104:120].hex()
    return FilesystemInfo(
        type=kind,
        offset=offset,
        size=blocks * (1024 << log_block),
        partition=part.number if part else None,
        partition_table=part.table if part else None,
        label=sb[120:136].split(b"\0", 1)[0].decode("utf-8", "replace"),
        uuid=f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}",
    )


def _partitions(f: _Reader, disk_size: int) -> tuple[str | None, list[_Partition]]:
    """The MBR or GPT partitions of a raw disk (parsed here, no tool needed)."""
    mbr = _read_at(f, 0, _SECTOR)
    if len(mbr) < _SECTOR or mbr[510:512] != b"\x55\xaa":
        return None, []
    entries = [struct.unpack_from("<BBBBBBBBII", mbr, 446 + 16 * i) for i in range(4)]
    if any(e[4] == 0xEE for e in entries):
        for sector in (512, 4096):
            hdr = _read_at(f, sector, 92)
            if hdr[:8] == b"EFI PART":
                return "gpt", _gpt(f, hdr, sector, disk_size)
        return "gpt", []
    parts: list[_Partition] = []
    for i, e in enumerate(entries, start=1):
        ptype, start, count = e[4], e[8], e[9]
        if ptype == 0 or count == 0:
            continue
        if ptype in _MBR_EXTENDED:
            parts += _logical(f, start, disk_size)
        else:
            parts.append(_Partition(i, start * _SECTOR, count * _SECTOR, "dos"))
    return "dos", parts


def _gpt(f: _Reader, hdr: bytes, sector: int, disk_size: int) -> list[_Partition]:
    entries_lba, count, esize = struct.unpack_from("<QII", hdr, 72)
    if esize < 128 or count > 1024:
        return []
    table = _read_at(f, entries_lba * sector, count * esize)
    parts = []
    for i in range(len(table) // esize):
        raw = table[i * esize : (i + 1) * esize]
        if raw[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", raw, 32)
        if last < first or first * sector >= disk_size:
            continue
        parts.append(_Partition(i + 1, first * sector, (last - first + 1) * sector, "gpt"))
    return parts


def _logical(f: _Reader, ext_start: int, disk_size: int) -> list[_Partition]:
    parts: list[_Partition] = []
    ebr, seen = ext_start, set()
    while ebr not in seen and len(parts) < 128 and ebr * _SECTOR < disk_size:
        seen.add(ebr)
        data = _read_at(f, ebr * _SECTOR, _SECTOR)
        if len(data) < _SECTOR or data[510:512] != b"\x55\xaa":
            break
        e1 = struct.unpack_from("<BBBBBBBBII", data, 446)
        e2 = struct.unpack_from("<BBBBBBBBII", data, 462)
        if e1[4] and e1[9]:
            parts.append(
                _Partition(5 + len(parts), (ebr + e1[8]) * _SECTOR, e1[9] * _SECTOR, "dos")
            )
        if not e2[4] or not e2[8]:
            break
        ebr = ext_start + e2[8]
    return parts


def candidates(raw: Path) -> list[tuple[FilesystemInfo, bytes]]:
    """Every ext2/3/4 filesystem on ``raw``: the whole disk, or its partitions."""
    size = raw.stat().st_size
    with raw.open("rb") as f:
        sb = _ext_superblock(f, 0)
        if sb is not None:
            return [(_fs_info(sb, 0, None), sb)]
        table, parts = _partitions(f, size)
        if table is None:
            raise ImageError(
                f"{raw} is not a disk image: a raw image must hold an ext2/3/4 filesystem or an "
                "MBR/GPT partition table, and a qcow2 image starts with 'QFI\\xfb'"
            )
        found = []
        for part in parts:
            sb = _ext_superblock(f, part.offset)
            if sb is not None:
                found.append((_fs_info(sb, part.offset, part), sb))
    if not found:
        raise ImageError(
            f"no ext2/3/4 filesystem found: none of the {len(parts)} partition(s) of the "
            f"{table.upper()} table holds one (the root filesystem must be ext2/3/4)"
        )
    return found


@contextmanager
def temp_next_to(image: Path, suffix: str) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=f".{image.name}.", suffix=suffix, dir=image.parent)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        with suppress(FileNotFoundError):
            path.unlink()


@contextmanager
def locked(image: Path, locked: bool) -> Iterator[None]:
    """Take QEMU's "write permission" lock byte of the image (byte 101, exclusively).

    A QEMU that has the image open read-write holds a shared lock there, so this fails while a
    guest runs on it, and keeps one from starting meanwhile; read-only users (qemu-img -U)
    do not conflict. ``locked=False`` (dry runs) takes no lock."""
    if not locked:
        yield
        return
    try:
        fd = os.open(image, os.O_RDWR)
    except PermissionError as e:
        raise ImageError(f"{image} is not writable: tuning edits the image in place") from e
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 101)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ImageError(
                f"{image} is in use (another process, e.g. a running QEMU, holds a lock on it): "
                "images are tuned offline only; shut the guest down first"
            ) from e
        yield
    finally:
        os.close(fd)


def qcow2_info(qemu_img: str, image: Path, share: list[str]) -> dict[str, object]:
    try:
        proc = run([qemu_img, "info", *share, "--output=json", "-f", "qcow2", image])
    except ConfigDriveError as e:
        raise ImageError(
            f"{image} starts like a qcow2 image but qemu-img cannot read it: {e}"
        ) from e
    info: dict[str, object] = json.loads(proc.stdout)
    if info.get("encrypted"):
        raise ImageError(f"{image} is an encrypted qcow2 image: only unencrypted images are tuned")
    data = _format_data(info)
    if data.get("data-file"):
        raise ImageError(f"{image} keeps its data in an external file: not supported")
    return info


def _format_data(info: dict[str, object]) -> dict[str, object]:
    spec = info.get("format-specific")
    data = spec.get("data") if isinstance(spec, dict) else None
    return data if isinstance(data, dict) else {}


def qcow2_write_back(qemu_img: str, raw: Path, image: Path, info: dict[str, object]) -> None:
    """Convert ``raw`` to qcow2 with the original's compat level/cluster size and backing file,
    then replace ``image`` atomically (keeping its permissions and owner)."""
    opts = []
    compat = _format_data(info).get("compat")
    if isinstance(compat, str):
        opts.append(f"compat={compat}")
    cluster = info.get("cluster-size")
    if isinstance(cluster, int):
        opts.append(f"cluster_size={cluster}")
    argv: list[str | Path] = [qemu_img, "convert", "-f", "raw", "-O", "qcow2"]
    if opts:
        argv += ["-o", ",".join(opts)]
    backing = info.get("backing-filename")
    if isinstance(backing, str) and backing:
        argv += ["-B", backing]
        bfmt = info.get("backing-filename-format")
        if isinstance(bfmt, str) and bfmt:
            argv += ["-F", bfmt]
    st = image.stat()
    with temp_next_to(image, ".qcow2") as out:
        run([*argv, raw, out], cwd=image.parent)
        os.chmod(out, stat.S_IMODE(st.st_mode))
        try:
            os.chown(out, st.st_uid, st.st_gid)
        except PermissionError:
            log.warning("%s: cannot keep owner %d:%d", image, st.st_uid, st.st_gid)
        with open(out, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(out, image)
    dirfd = os.open(image.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
