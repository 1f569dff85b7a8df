"""ISO9660 images with Joliet and Rock Ridge, written and read in-process (no external tools).

The writer replaces nova's ``genisoimage -o OUT -ldots -allow-lowercase -allow-multidot -l
-publisher "OpenStack Nova X" -quiet -J -r -V config-2 DIR``: three hierarchies share one set of
file extents -

* primary (Ecma-119) names as genisoimage makes them with those flags (case kept, up to 31
  characters, ``;1`` on files, unique per directory),
* Joliet (UCS-2 names up to 64 characters, no version, like genisoimage),
* Rock Ridge (RRIP 1.09, ER ``RRIP_1991A``) on the primary records carrying the real name and
  ``-r`` attributes (directories 0555, files 0444, uid/gid 0).

Image layout, in 2048-byte blocks::

    0-15 system area (zeros) | 16 PVD | 17 Joliet SVD | 18 terminator | primary L, M path
    tables | Joliet L, M path tables | primary directories | Joliet directories | SUSP
    continuation areas | file data (each file starts on a block)

The reader takes Rock Ridge names if present (following CE continuation areas), else Joliet,
else primary names; it reads genisoimage's, xorriso's and this writer's images.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from configdrive.drive import _isofmt as fmt
from configdrive.drive.timestamps import build_time
from configdrive.errors import DriveError, InvalidDrive

__all__ = ["IsoContents", "is_iso9660", "iso9660_image", "read_iso9660", "write_iso9660"]

BLOCK = fmt.BLOCK
MAX_LABEL = 32  # Ecma-119 8.4.6: Volume Identifier is 32 characters
MAX_JOLIET_NAME = 64  # Joliet spec: file/directory identifiers up to 64 UCS-2 characters
MAX_PRIMARY_NAME = 31  # genisoimage -l: "full 31-character filenames" (before ";1")
MAX_DEPTH = 8  # Ecma-119 6.8.2.1: at most 8 levels of directories (no rr_moved relocation)
DIR_MODE = 0o40555  # what genisoimage -r records for directories
FILE_MODE = 0o100444  # ... and for regular files
SYSTEM_ID = "LINUX"
APPLICATION_ID = "CONFIGDRIVE"

_D_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")
_JOLIET_BAD = frozenset("*/:;?\\")  # Joliet spec: not allowed in identifiers


# ---------------------------------------------------------------------------------------------
# The tree to write
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Node:
    name: str
    parent: _Node | None
    data: bytes | None = None  # None for directories
    children: dict[str, _Node] = field(default_factory=dict)
    p_ident: bytes = b""  # Ecma-119 7.5 / 7.6 identifier (with ";1" on files)
    j_ident: bytes = b""  # Joliet UCS-2 identifier
    extent: int = 0  # files: data; directories: primary directory extent
    j_extent: int = 0  # directories: Joliet directory extent
    p_blocks: int = 0
    j_blocks: int = 0
    nlink: int = 2

    @property
    def is_dir(self) -> bool:
        return self.data is None


def _utf16_units(name: str) -> int:
    return len(name.encode("utf-16-be", "surrogatepass")) // 2


def _check_name(path: str, name: str) -> None:
    if name in ("", ".", ".."):
        what = "an empty component" if not name else f"a {name!r} component"
        raise DriveError(f"path {path!r} has {what}; paths are relative POSIX paths")
    if "\x00" in name:
        raise DriveError(f"path {path!r} contains a NUL character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DriveError(f"path {path!r} is not valid Unicode (lone surrogate)") from None
    if _utf16_units(name) > MAX_JOLIET_NAME:
        raise DriveError(
            f"name {name!r} in {path!r} is {_utf16_units(name)} UCS-2 characters long; "
            f"Joliet allows at most {MAX_JOLIET_NAME}"
        )


def _build_tree(tree: Mapping[str, bytes]) -> _Node:
    root = _Node("", None)
    for path, data in tree.items():
        if not isinstance(path, str) or not path:
            raise DriveError(f"path {path!r} is empty or not a string")
        if path.startswith("/"):
            raise DriveError(f"path {path!r} is absolute; paths are relative to the drive root")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DriveError(f"content of {path!r} is {type(data).__name__}, not bytes")
        parts = path.split("/")
        for name in parts:
            _check_name(path, name)
        if len(parts) - 1 > MAX_DEPTH - 1:
            raise DriveError(
                f"path {path!r} is nested {len(parts) - 1} directories deep; ISO9660 allows "
                f"{MAX_DEPTH - 1} below the root (Ecma-119 6.8.2.1)"
            )
        if len(data) >= 1 << 32:
            raise DriveError(f"file {path!r} is 4 GiB or larger; ISO9660 extents hold < 4 GiB")
        node = root
        for name in parts[:-1]:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Node(name, node)
            elif not child.is_dir:
                raise DriveError(f"path {path!r} needs {name!r} as a directory, but it is a file")
            node = child
        if parts[-1] in node.children:
            raise DriveError(f"path {path!r} is both a file and a directory")
        node.children[parts[-1]] = _Node(parts[-1], node, bytes(data))
    return root


# ---------------------------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------------------------
def _primary_candidate(name: str, is_dir: bool, tag: str) -> str:
    """genisoimage ``-l -allow-lowercase -allow-multidot -ldots`` naming, with a unique tag."""
    s = "".join(c if c in _D_CHARS else "_" for c in name)
    if not s.strip("."):
        s = "_" * len(s)
    if is_dir:
        return s[: MAX_PRIMARY_NAME - len(tag)] + tag
    base, dot, ext = s.rpartition(".")
    if not dot:
        base, ext = s, ""
    ext = ext[: min(MAX_PRIMARY_NAME - 2, max(MAX_PRIMARY_NAME - 1 - len(base), 8))]
    base = base[: MAX_PRIMARY_NAME - 1 - len(ext) - len(tag)] + tag
    return f"{base}.{ext}"


def _joliet_candidate(name: str, tag: str) -> str:
    s = "".join("_" if c in _JOLIET_BAD or c < " " else c for c in name)
    while _utf16_units(s) + len(tag) > MAX_JOLIET_NAME:
        s = s[:-1]
    return s + tag


def _assign_idents(directory: _Node) -> None:
    """Ecma-119 7.5/7.6 and Joliet identifiers, unique per directory (primary: ignoring case)."""
    p_seen: set[str] = set()
    j_seen: set[str] = set()
    for child in sorted(directory.children.values(), key=lambda c: c.name):
        n = 0
        while True:
            cand = _primary_candidate(child.name, child.is_dir, f"{n - 1:03d}" if n else "")
            if cand.upper() not in p_seen:
                break
            n += 1
        p_seen.add(cand.upper())
        child.p_ident = cand.encode("ascii") + (b"" if child.is_dir else b";1")
        n = 0
        while True:
            jcand = _joliet_candidate(child.name, f"~{n}" if n else "")
            if jcand not in j_seen:
                break
            n += 1
        j_seen.add(jcand)
        child.j_ident = jcand.encode("utf-16-be", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------
@dataclass
class _Record:
    """One directory record to serialise: target node, identifier, system use, CE payload."""

    node: _Node
    ident: bytes
    flags: int
    su: bytes = b""
    ce_payload: bytes = b""
    ce_block: int = 0  # index into the continuation-area blocks
    ce_offset: int = 0
    offset: int = 0  # within the directory extent


def _pack_records(records: list[_Record]) -> int:
    """Place records so none straddles a sector (Ecma-119 6.8.1.1); returns blocks used."""
    pos = 0
    for rec in records:
        length = fmt.dr_fixed_len(len(rec.ident)) + len(rec.su)
        length += fmt.CE_LEN if rec.ce_payload else 0
        length += length % 2
        if pos // BLOCK != (pos + length - 1) // BLOCK:
            pos = (pos // BLOCK + 1) * BLOCK
        rec.offset = pos
        pos += length
    return max(1, -(-pos // BLOCK))


class _Layout:
    def __init__(self, root: _Node, label: str, publisher: str, ts: datetime) -> None:
        self.root = root
        self.label = label
        self.publisher = publisher
        self.date = fmt.dir_date(ts)
        self.vd_date = fmt.vd_date(ts)
        tf = fmt.rr_tf(self.date)
        self._px_file = fmt.rr_px(FILE_MODE, 1) + tf
        self._tf = tf
        self._px_dir: dict[int, bytes] = {}
        # Ecma-119 6.9.1: path table order = breadth first, children in identifier order.
        self.p_dirs = self._bfs(lambda n: n.p_ident)
        self.j_dirs = self._bfs(lambda n: n.j_ident)
        self.ce_areas: list[list[_Record]] = [[]]
        self.ce_fill = 0
        self.p_records = {id(d): self._primary_records(d) for d in self.p_dirs}
        self.j_records = {id(d): self._joliet_records(d) for d in self.j_dirs}

    def _bfs(self, key: Callable[[_Node], bytes]) -> list[_Node]:
        order = [self.root]
        for d in order:  # grows while iterating: breadth first
            order.extend(sorted((c for c in d.children.values() if c.is_dir), key=key))
        return order

    def _px(self, node: _Node) -> bytes:
        if not node.is_dir:
            return self._px_file
        px = self._px_dir.get(node.nlink)
        if px is None:
            px = self._px_dir[node.nlink] = fmt.rr_px(DIR_MODE, node.nlink) + self._tf
        return px

    def _continue(self, rec: _Record, payload: bytes) -> None:
        """SUSP 5.1: move ``payload`` to a continuation area that does not cross a block."""
        if self.ce_fill + len(payload) > BLOCK:
            self.ce_areas.append([])
            self.ce_fill = 0
        rec.ce_payload = payload
        rec.ce_block = len(self.ce_areas) - 1
        rec.ce_offset = self.ce_fill
        self.ce_fill += len(payload)
        self.ce_areas[-1].append(rec)

    def _primary_records(self, d: _Node) -> list[_Record]:
        d.nlink = 2 + sum(1 for c in d.children.values() if c.is_dir)
        parent = d.parent or d
        dot = _Record(d, b"\x00", fmt.FLAG_DIRECTORY)
        if d is self.root:
            # SUSP 5.3: SP first in the root's "." record; SUSP 5.5 ER in a continuation area.
            dot.su = fmt.su_sp() + fmt.rr_rr(fmt.RR_PX | fmt.RR_TF) + self._px(d)
            self._continue(dot, fmt.su_er())
        else:
            dot.su = fmt.rr_rr(fmt.RR_PX | fmt.RR_TF) + self._px(d)
        dotdot = _Record(
            parent, b"\x01", fmt.FLAG_DIRECTORY, fmt.rr_rr(fmt.RR_PX | fmt.RR_TF) + self._px(parent)
        )
        records = [dot, dotdot]
        rr = fmt.rr_rr(fmt.RR_PX | fmt.RR_NM | fmt.RR_TF)
        for child in sorted(d.children.values(), key=lambda n: n.p_ident):
            if child.is_dir:
                child.nlink = 2 + sum(1 for c in child.children.values() if c.is_dir)
            rec = _Record(child, child.p_ident, fmt.FLAG_DIRECTORY if child.is_dir else 0)
            nm = b"".join(fmt.rr_nm(child.name.encode("utf-8")))
            px = self._px(child)
            if fmt.dr_fixed_len(len(child.p_ident)) + len(rr) + len(nm) + len(px) <= fmt.MAX_RECORD:
                rec.su = rr + nm + px
            else:  # long name: RR, PX, TF stay, NM moves to a continuation area
                rec.su = rr + px
                self._continue(rec, nm)
            records.append(rec)
        d.p_blocks = _pack_records(records)
        return records

    def _joliet_records(self, d: _Node) -> list[_Record]:
        records = [
            _Record(d, b"\x00", fmt.FLAG_DIRECTORY),
            _Record(d.parent or d, b"\x01", fmt.FLAG_DIRECTORY),
        ]
        for child in sorted(d.children.values(), key=lambda n: n.j_ident):
            records.append(_Record(child, child.j_ident, fmt.FLAG_DIRECTORY if child.is_dir else 0))
        d.j_blocks = _pack_records(records)
        return records

    def _path_table(self, dirs: list[_Node], joliet: bool, big_endian: bool) -> bytes:
        """Ecma-119 6.9 / 9.4: one record per directory, parents by 1-based path table number."""
        number = {id(d): i for i, d in enumerate(dirs, 1)}
        out = []
        for d in dirs:
            ident = b"\x00" if d.parent is None else d.j_ident if joliet else d.p_ident
            extent = d.j_extent if joliet else d.extent
            parent = number[id(d.parent)] if d.parent is not None else 1
            out.append(fmt.pack_path_record(ident, extent, parent, big_endian))
        return b"".join(out)

    def build(self) -> tuple[bytearray, list[tuple[bytes, int]]]:
        """Assign extents, return (all metadata blocks, [(file data, padding)] to append)."""
        if len(self.p_dirs) > 0xFFFF:
            raise DriveError("too many directories for a 16-bit path table parent number")
        pt_size = sum(
            8 + len(d.p_ident or b"\x00") + len(d.p_ident or b"\x00") % 2 for d in self.p_dirs
        )
        jpt_size = sum(
            8 + len(d.j_ident or b"\x00") + len(d.j_ident or b"\x00") % 2 for d in self.j_dirs
        )
        pt_blocks, jpt_blocks = -(-pt_size // BLOCK), -(-jpt_size // BLOCK)
        pos = fmt.SYSTEM_AREA_BLOCKS + 3
        pt_l, pt_m = pos, pos + pt_blocks
        jpt_l, jpt_m = pt_m + pt_blocks, pt_m + pt_blocks + jpt_blocks
        pos = jpt_m + jpt_blocks
        for d in self.p_dirs:
            d.extent, pos = pos, pos + d.p_blocks
        for d in self.j_dirs:
            d.j_extent, pos = pos, pos + d.j_blocks
        ce_start = pos
        pos += len(self.ce_areas)
        meta_blocks = pos
        files: list[tuple[bytes, int]] = []
        for d in self.p_dirs:
            for rec in self.p_records[id(d)][2:]:
                node = rec.node
                if not node.is_dir:
                    assert node.data is not None
                    node.extent = pos if node.data else 0
                    pad = -len(node.data) % BLOCK
                    pos += (len(node.data) + pad) // BLOCK
                    files.append((node.data, pad))
        total = pos
        if total >= 1 << 32:
            raise DriveError("image would exceed 2^32 blocks")

        img = bytearray(meta_blocks * BLOCK)
        date = self.date
        # Ecma-119 8.4.18: the root record inside each volume descriptor (34 bytes, no SU).
        p_root = fmt.pack_dir_record(
            self.root.extent, self.root.p_blocks * BLOCK, date, fmt.FLAG_DIRECTORY, b"\x00", b""
        )
        j_root = fmt.pack_dir_record(
            self.root.j_extent, self.root.j_blocks * BLOCK, date, fmt.FLAG_DIRECTORY, b"\x00", b""
        )
        p_fields = fmt.VolumeFields(
            fmt.a_field(SYSTEM_ID, 32),
            fmt.a_field(self.label, 32),
            fmt.a_field(self.publisher, 128),
            fmt.a_field(APPLICATION_ID, 128),
            b" " * 128,
            b" " * 37,
        )
        j_fields = fmt.VolumeFields(
            fmt.ucs2_field(SYSTEM_ID, 32),
            fmt.ucs2_field(self.label, 32),
            fmt.ucs2_field(self.publisher, 128),
            fmt.ucs2_field(APPLICATION_ID, 128),
            fmt.ucs2_field("", 128),
            fmt.ucs2_field("", 37),
        )
        at = fmt.SYSTEM_AREA_BLOCKS * BLOCK
        img[at : at + BLOCK] = fmt.pack_volume_descriptor(
            fmt.VD_PRIMARY, p_fields, b"", total, pt_size, pt_l, pt_m, p_root, self.vd_date
        )
        img[at + BLOCK : at + 2 * BLOCK] = fmt.pack_volume_descriptor(
            fmt.VD_SUPPLEMENTARY,
            j_fields,
            fmt.JOLIET_ESCAPES[2],
            total,
            jpt_size,
            jpt_l,
            jpt_m,
            j_root,
            self.vd_date,
        )
        img[at + 2 * BLOCK : at + 3 * BLOCK] = fmt.pack_terminator()
        for block, table in (
            (pt_l, self._path_table(self.p_dirs, False, False)),
            (pt_m, self._path_table(self.p_dirs, False, True)),
            (jpt_l, self._path_table(self.j_dirs, True, False)),
            (jpt_m, self._path_table(self.j_dirs, True, True)),
        ):
            img[block * BLOCK : block * BLOCK + len(table)] = table

        for d in self.p_dirs:
            base = d.extent * BLOCK
            for rec in self.p_records[id(d)]:
                su = rec.su
                if rec.ce_payload:
                    su += fmt.su_ce(ce_start + rec.ce_block, rec.ce_offset, len(rec.ce_payload))
                raw = self._record(rec, rec.node.extent, rec.node.p_blocks, su)
                img[base + rec.offset : base + rec.offset + len(raw)] = raw
        for d in self.j_dirs:
            base = d.j_extent * BLOCK
            for rec in self.j_records[id(d)]:
                raw = self._record(rec, rec.node.j_extent, rec.node.j_blocks, b"")
                img[base + rec.offset : base + rec.offset + len(raw)] = raw
        for i, area in enumerate(self.ce_areas):
            for rec in area:
                at = (ce_start + i) * BLOCK + rec.ce_offset
                img[at : at + len(rec.ce_payload)] = rec.ce_payload
        return img, files

    def _record(self, rec: _Record, dir_extent: int, dir_blocks: int, su: bytes) -> bytes:
        node = rec.node
        if node.is_dir:
            return fmt.pack_dir_record(
                dir_extent, dir_blocks * BLOCK, self.date, rec.flags, rec.ident, su
            )
        assert node.data is not None
        return fmt.pack_dir_record(node.extent, len(node.data), self.date, rec.flags, rec.ident, su)


def _check_text(what: str, value: str, limit: int) -> None:
    if not value:
        raise DriveError(f"{what} is empty")
    if len(value) > limit:
        raise DriveError(f"{what} {value!r} is {len(value)} characters; ISO9660 allows {limit}")
    if not value.isascii() or not value.isprintable():
        raise DriveError(f"{what} {value!r} must be printable ASCII")


def write_iso9660(
    tree: Mapping[str, bytes],
    out: BinaryIO,
    *,
    label: str,
    publisher: str = "configdrive",
    timestamp: datetime | None = None,
) -> int:
    """Write ``tree`` (relative POSIX path -> bytes) as an ISO9660 image to ``out``.

    Volume identifier ``label`` (1-32 printable ASCII characters, case kept; the Joliet copy
    holds its first 16) and ``publisher`` go in both volume descriptors; ``timestamp`` (naive
    values are UTC; default :func:`build_time`: ``SOURCE_DATE_EPOCH`` or now) is every date on
    the volume. Returns the number of bytes written.
    """
    _check_text("volume label", label, MAX_LABEL)
    _check_text("publisher", publisher, 128)
    ts = build_time() if timestamp is None else timestamp
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    if not 1900 <= ts.year <= 2155:
        raise DriveError(f"timestamp {ts.isoformat()} is outside ISO9660's years 1900-2155")
    root = _build_tree(tree)
    stack = [root]
    while stack:
        d = stack.pop()
        _assign_idents(d)
        stack.extend(c for c in d.children.values() if c.is_dir)
    img, files = _Layout(root, label, publisher, ts).build()
    out.write(img)
    written = len(img)
    zeros = bytes(BLOCK)
    for data, pad in files:
        out.write(data)
        out.write(zeros[:pad])
        written += len(data) + pad
    return written


def iso9660_image(
    tree: Mapping[str, bytes],
    *,
    label: str,
    publisher: str = "configdrive",
    timestamp: datetime | None = None,
) -> bytes:
    """The image :func:`write_iso9660` writes, as bytes."""
    buf = io.BytesIO()
    write_iso9660(tree, buf, label=label, publisher=publisher, timestamp=timestamp)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IsoContents:
    """What an ISO9660 image holds: volume label, files by relative POSIX path, extensions."""

    label: str
    files: dict[str, bytes]
    joliet: bool
    rock_ridge: bool
    publisher: str


def is_iso9660(f: BinaryIO) -> bool:
    """Cheap sniff: "CD001" at bytes 1-5 of sector 16 (Ecma-119 8.1.2). Keeps f's position."""
    pos = f.tell()
    try:
        f.seek(fmt.SYSTEM_AREA_BLOCKS * BLOCK + 1)
        return f.read(5) == fmt.STD_ID
    finally:
        f.seek(pos)


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        f.seek(0, io.SEEK_END)
        self.size = f.tell()
        self.block = BLOCK
        self.ce_hops = 0

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise InvalidDrive(
                f"{what} at byte {offset} (+{length}) lies beyond the end of the image "
                f"({self.size} bytes): truncated or corrupt"
            )
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise InvalidDrive(f"short read of {what} at byte {offset}: image truncated")
        return data

    def su_entries(self, su: bytes) -> Iterator[tuple[bytes, bytes]]:
        """SUSP 4 entries (signature, data) of a System Use field, following CE (SUSP 5.1)."""
        while True:
            pos, ce = 0, None
            while pos + 4 <= len(su):
                sig, length = su[pos : pos + 2], su[pos + 2]
                if length < 4 or pos + length > len(su):
                    break
                if sig == b"ST":  # SUSP 5.4 terminator
                    break
                if sig == b"CE" and length >= fmt.CE_LEN:
                    ce = (
                        fmt.read_both32(su, pos + 4)[0],
                        fmt.read_both32(su, pos + 12)[0],
                        fmt.read_both32(su, pos + 20)[0],
                    )
                else:
                    yield sig, su[pos + 4 : pos + length]
                pos += length
            if ce is None:
                return
            self.ce_hops += 1
            if self.ce_hops > 100_000:
                raise InvalidDrive("too many SUSP continuation areas (CE loop?)")
            su = self.read(ce[0] * self.block + ce[1], ce[2], "SUSP continuation area")


def _vd_text(raw: bytes, ucs2: bool) -> str:
    text = raw.decode("utf-16-be", "replace") if ucs2 else raw.decode("latin-1")
    return text.rstrip(" \x00")


def _strip_version(name: str) -> str:
    base, semi, version = name.rpartition(";")
    return base if semi and version.isdigit() else name


def read_iso9660(f: BinaryIO) -> IsoContents:
    """Read label and files of an ISO9660 image; raise InvalidDrive if it is not one."""
    r = _Reader(f)
    start = fmt.SYSTEM_AREA_BLOCKS * BLOCK
    if r.size < start + BLOCK:
        raise InvalidDrive(f"image is {r.size} bytes, too small for ISO9660 (needs > 34816)")
    pvd: bytes | None = None
    svd: bytes | None = None
    for n in range(fmt.SYSTEM_AREA_BLOCKS, fmt.SYSTEM_AREA_BLOCKS + 64):
        vd = r.read(n * BLOCK, BLOCK, f"volume descriptor {n}")
        if vd[1:6] != fmt.STD_ID:
            raise InvalidDrive(
                f"sector {n} is not an ISO9660 volume descriptor: standard identifier is "
                f"{vd[1:6]!r}, not b'CD001'"
            )
        if vd[0] == fmt.VD_TERMINATOR:
            break
        if vd[0] == fmt.VD_PRIMARY and pvd is None:
            pvd = vd
        elif vd[0] == fmt.VD_SUPPLEMENTARY and vd[88:91] in fmt.JOLIET_ESCAPES and svd is None:
            svd = vd
    else:
        raise InvalidDrive("no volume descriptor set terminator in sectors 16-79")
    if pvd is None:
        raise InvalidDrive("no primary volume descriptor (type 1)")
    (bs_le,) = struct.unpack_from("<H", pvd, 128)
    (bs_be,) = struct.unpack_from(">H", pvd, 130)
    if bs_le != bs_be or bs_le not in (512, 1024, 2048):
        raise InvalidDrive(f"logical block size {bs_le}/{bs_be} is not 512, 1024 or 2048")
    r.block = bs_le
    space = fmt.read_both32(pvd, 80)
    if space[0] != space[1]:
        raise InvalidDrive(f"volume space size halves disagree: {space[0]} vs {space[1]}")
    if space[0] * bs_le > r.size:
        raise InvalidDrive(
            f"image is truncated: volume space size is {space[0]} blocks "
            f"({space[0] * bs_le} bytes) but the image has {r.size} bytes"
        )
    label = _vd_text(pvd[40:72], False)
    publisher = _vd_text(pvd[318:446], False)

    p_root = fmt.parse_dir_record(pvd, 156)
    if isinstance(p_root, str):
        raise InvalidDrive(f"primary volume descriptor root record: {p_root}")
    rock_ridge, skip = _detect_rock_ridge(r, p_root)
    if rock_ridge:
        files = _walk(r, p_root, "rr", skip)
    elif svd is not None:
        j_root = fmt.parse_dir_record(svd, 156)
        if isinstance(j_root, str):
            raise InvalidDrive(f"Joliet volume descriptor root record: {j_root}")
        files = _walk(r, j_root, "joliet", 0)
    else:
        files = _walk(r, p_root, "plain", 0)
    return IsoContents(label, files, svd is not None, rock_ridge, publisher)


def _dir_records(r: _Reader, extent: int, size: int, what: str) -> Iterator[fmt.DirRecord]:
    """Ecma-119 6.8.1: records of a directory; a zero length byte skips to the next sector."""
    data = r.read(extent * r.block, size, f"directory {what}")
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos = (pos // BLOCK + 1) * BLOCK
            continue
        rec = fmt.parse_dir_record(data, pos)
        if isinstance(rec, str):
            raise InvalidDrive(f"directory {what}: {rec} (at byte {pos})")
        if pos // BLOCK != (pos + rec.length - 1) // BLOCK:
            raise InvalidDrive(f"directory {what}: record at byte {pos} crosses a sector")
        yield rec
        pos += rec.length


def _detect_rock_ridge(r: _Reader, root: fmt.DirRecord) -> tuple[bool, int]:
    """SUSP 5.3 SP in the root's "." record, then SUSP 5.5 ER naming RRIP; (present, LEN_SKP)."""
    first = next(_dir_records(r, root.extent + root.ext_attr_len, min(root.size, BLOCK), "/"), None)
    if first is None:
        raise InvalidDrive("root directory has no records")
    su = first.system_use
    if len(su) < 7 or su[0:2] != b"SP" or su[4:6] != b"\xbe\xef":
        return False, 0
    skip = su[6]
    found = False
    for sig, data in r.su_entries(su):
        if sig == b"ER" and len(data) >= 4 and data[4 : 4 + data[0]] in fmt.RRIP_IDS:
            found = True
        elif sig in (b"RR", b"PX", b"TF"):
            found = True
    return found, skip


def _entry_name(r: _Reader, rec: fmt.DirRecord, mode: str, skip: int) -> tuple[str, int | None]:
    """Name of a record and, for a Rock Ridge CL entry (RRIP 4.1.5.1), the real directory.

    Returns ("", None) for records to hide (RRIP 4.1.5.3 RE: relocated directory).
    """
    if mode == "joliet":
        return _strip_version(rec.ident.decode("utf-16-be", "replace")), None
    plain = _strip_version(rec.ident.decode("latin-1"))
    if not rec.flags & fmt.FLAG_DIRECTORY and plain.endswith(".") and len(plain) > 1:
        plain = plain[:-1]
    if mode != "rr":
        return plain, None
    nm: list[bytes] = []
    child: int | None = None
    for sig, data in r.su_entries(rec.system_use[skip:]):
        if sig == b"NM" and data:
            if not data[0] & (fmt.NM_CURRENT | fmt.NM_PARENT):
                nm.append(data[1:])
        elif sig == b"RE":
            return "", None
        elif sig == b"CL" and len(data) >= 8:
            child = fmt.read_both32(data, 0)[0]
    name = b"".join(nm).decode("utf-8", "surrogateescape") if nm else plain
    return name, child


def _walk(r: _Reader, root: fmt.DirRecord, mode: str, skip: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    seen: set[int] = set()
    stack: list[tuple[str, int, int | None]] = [("", root.extent + root.ext_attr_len, root.size)]
    while stack:
        prefix, extent, size = stack.pop()
        if extent in seen:
            raise InvalidDrive(f"directory loop: extent {extent} reached twice")
        seen.add(extent)
        if prefix.count("/") > 64:
            raise InvalidDrive("directory hierarchy deeper than 64 levels")
        what = "/" + prefix
        if size is None:  # CL target: its size is in its own "." record
            first = next(_dir_records(r, extent, r.block, what), None)
            if first is None:
                raise InvalidDrive(f"relocated directory {what} has no records")
            size = first.size
        pending: list[bytes] = []
        for rec in _dir_records(r, extent, size, what):
            if rec.ident in (b"\x00", b"\x01") or rec.flags & fmt.FLAG_ASSOCIATED:
                continue
            name, child = _entry_name(r, rec, mode, skip)
            if not name and child is None:
                continue
            if name in ("", ".", "..") or "/" in name or "\x00" in name:
                raise InvalidDrive(f"directory {what} has an entry named {name!r}")
            path = prefix + name
            if child is not None:
                stack.append((path + "/", child, None))
            elif rec.flags & fmt.FLAG_DIRECTORY:
                stack.append((path + "/", rec.extent + rec.ext_attr_len, rec.size))
            else:
                if rec.unit_size:
                    raise InvalidDrive(f"file {path!r} is interleaved (Ecma-119 9.1.7)")
                start = (rec.extent + rec.ext_attr_len) * r.block
                pending.append(r.read(start, rec.size, f"file {path!r}") if rec.size else b"")
                if not rec.flags & fmt.FLAG_MULTI_EXTENT:  # Ecma-119 9.1.6 bit 7
                    files[path] = b"".join(pending)
                    pending = []
    return files
