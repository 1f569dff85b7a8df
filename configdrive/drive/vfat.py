"""VFAT (FAT12/FAT16 with long names) images, written and read in-process: no mkfs, no mount.

Nova's legacy ``config_drive_format=vfat`` makes a 64 MiB sparse file, runs
``mkfs -t vfat -n config-2`` on it, loop-mounts it and copies the metadata tree in; NoCloud seeds
(``cloud-localds``) are small FAT12 images labelled ``cidata``. :func:`write_vfat` lays the same
tree out directly: it builds the metadata areas (boot sector, both FATs, root directory, the
subdirectories) in memory, writes the file bytes at their cluster offsets and seeks over every
zero region, so a 64 MiB image costs a few blocks of disk.

Every on-disk structure cites its section of Microsoft's "FAT: General Overview of On-Disk
Format" (fatgen103, v1.03) and has one small class with a ``struct`` format string. Choices that
the specification leaves open follow mkfs.fat 4.2 (dosfstools): OEM name ``mkfs.fat``, media 0xF8,
two FATs, 512 root entries, 2 KiB clusters for fixed sizes up to 128 MiB, a data area aligned to
the cluster size, and the volume label kept in the case given (``-n config-2`` stays lowercase).
"""

from __future__ import annotations

import io
import struct
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, ClassVar

from configdrive.drive.timestamps import DosStamp, build_time, volume_serial
from configdrive.errors import DriveError, InvalidDrive

__all__ = ["NOVA_VFAT_SIZE", "VfatContents", "is_vfat", "read_vfat", "vfat_image", "write_vfat"]

NOVA_VFAT_SIZE = 64 * 1024 * 1024
"""Size of nova's vfat config drive (``CONFIGDRIVESIZE_BYTES`` in nova/virt/configdrive.py)."""

SECTOR = 512
_FAT12_CLUSTERS = 4085  # fatgen103 "FAT Type Determination": fewer clusters than this → FAT12
_FAT16_CLUSTERS = 65525  # ... fewer than this → FAT16, otherwise FAT32 (not produced here)
_MAX_DIR_ENTRIES = 65536  # fatgen103 "FAT Directory Structure": at most 65,536 32-byte entries
_MAX_NAME_UNITS = 255  # fatgen103 "FAT Long Directory Entries": names of up to 255 UCS-2 chars
_ROOT_ENTRIES = 512  # mkfs.fat's default for hard-disk media; fatgen103 recommends 512 for FAT16
_ATTR_READ_ONLY, _ATTR_HIDDEN, _ATTR_SYSTEM = 0x01, 0x02, 0x04
_ATTR_VOLUME_ID, _ATTR_DIRECTORY, _ATTR_ARCHIVE = 0x08, 0x10, 0x20
_ATTR_LONG_NAME = _ATTR_READ_ONLY | _ATTR_HIDDEN | _ATTR_SYSTEM | _ATTR_VOLUME_ID
_NT_LOWER_BASE, _NT_LOWER_EXT = 0x08, 0x10  # DIR_NTRes case bits (Windows NT, Linux, mtools)
# fatgen103 "FAT Directory Structure", DIR_Name: bytes legal in a short name (ASCII subset).
_SHORT_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")
# fatgen103 "FAT Long Directory Entries": illegal in long names besides the short-name set.
_LONG_BAD = frozenset('"*/:<>?\\|') | frozenset(chr(c) for c in range(32))
_LABEL_BAD = frozenset(b'"*+,./:;<=>?[\\]|\x7f') | frozenset(range(32))
_NO_NAME = b"NO NAME    "


# --- fatgen103 "Boot Sector and BPB Structure" ---------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Where everything is: the BPB numbers plus the quantities fatgen103 derives from them."""

    total_sectors: int
    sectors_per_cluster: int
    reserved_sectors: int
    fat_sectors: int
    root_entries: int
    num_fats: int = 2
    bytes_per_sector: int = SECTOR

    @property
    def cluster_size(self) -> int:
        return self.sectors_per_cluster * self.bytes_per_sector

    @property
    def root_sectors(self) -> int:  # "RootDirSectors" in "FAT Data Structure"
        return (self.root_entries * 32 + self.bytes_per_sector - 1) // self.bytes_per_sector

    @property
    def root_offset(self) -> int:
        return (self.reserved_sectors + self.num_fats * self.fat_sectors) * self.bytes_per_sector

    @property
    def data_sector(self) -> int:  # "FirstDataSector"
        return self.reserved_sectors + self.num_fats * self.fat_sectors + self.root_sectors

    @property
    def clusters(self) -> int:  # "CountofClusters" in "FAT Type Determination"
        return max(0, self.total_sectors - self.data_sector) // self.sectors_per_cluster

    @property
    def fat_bits(self) -> int:  # "FAT Type Determination": the cluster count alone decides
        if self.clusters < _FAT12_CLUSTERS:
            return 12
        return 16 if self.clusters < _FAT16_CLUSTERS else 32

    def fat_offset(self, copy: int) -> int:
        return (self.reserved_sectors + copy * self.fat_sectors) * self.bytes_per_sector

    def cluster_offset(self, cluster: int) -> int:  # "FirstSectorofCluster"
        sector = self.data_sector + (cluster - 2) * self.sectors_per_cluster
        return sector * self.bytes_per_sector


@dataclass(frozen=True)
class _BootSector:
    """fatgen103 "Boot Sector and BPB Structure" (offsets 0-35) followed by "FAT12 and FAT16
    Structure Starting at Offset 36" (the extended BPB), boot code, and the 0x55AA signature."""

    BPB_FMT: ClassVar[str] = "<3s8sHBHBHHBHHHII"  # BS_jmpBoot .. BPB_TotSec32
    EBPB_FMT: ClassVar[str] = "<BBBI11s8s"  # BS_DrvNum .. BS_FilSysType, at offset 36
    JUMP: ClassVar[bytes] = b"\xeb\x3c\x90"  # jmp short 0x3E; nop
    # At 0x3E: int 0x18 (BIOS "no bootable disk": try the next device), then hang.
    BOOT_CODE: ClassVar[bytes] = b"\xcd\x18\xeb\xfe"

    geometry: _Geometry
    volume_id: int
    label: bytes  # 11 bytes, space padded
    media: int = 0xF8
    oem: bytes = b"mkfs.fat"
    sectors_per_track: int = 32
    heads: int = 64
    jump: bytes = JUMP

    def pack(self) -> bytes:
        g = self.geometry
        small = g.total_sectors < 0x10000
        bpb = struct.pack(
            self.BPB_FMT, self.jump, self.oem, g.bytes_per_sector, g.sectors_per_cluster,
            g.reserved_sectors, g.num_fats, g.root_entries, g.total_sectors if small else 0,
            self.media, g.fat_sectors, self.sectors_per_track, self.heads, 0,
            0 if small else g.total_sectors,
        )  # fmt: skip
        fs_type = b"FAT12   " if g.fat_bits == 12 else b"FAT16   "
        ebpb = struct.pack(self.EBPB_FMT, 0x80, 0, 0x29, self.volume_id, self.label, fs_type)
        code = self.BOOT_CODE.ljust(510 - len(bpb) - len(ebpb), b"\0")
        return bpb + ebpb + code + b"\x55\xaa"

    @classmethod
    def unpack(cls, data: bytes) -> _BootSector:
        if len(data) < SECTOR:
            raise InvalidDrive(f"not a FAT image: only {len(data)} bytes, a boot sector has 512")
        (jump, oem, bps, spc, reserved, nfats, root_entries, tot16, media, fatsz16, spt, heads,
         _hidden, tot32) = struct.unpack_from(cls.BPB_FMT, data)  # fmt: skip
        if data[510:512] != b"\x55\xaa":
            raise InvalidDrive("not a FAT image: boot sector lacks the 0x55AA signature")
        if jump[0] not in (0xEB, 0xE9):
            raise InvalidDrive(f"not a FAT image: BS_jmpBoot starts with {jump[0]:#04x}")
        if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or spc > 128:
            raise InvalidDrive(f"not a FAT image: {bps} bytes/sector, {spc} sectors/cluster")
        if reserved == 0 or nfats == 0 or (media < 0xF8 and media != 0xF0):
            raise InvalidDrive("not a FAT image: BPB has no reserved sectors, FATs or media byte")
        if fatsz16 == 0 or root_entries == 0:
            raise InvalidDrive("FAT32 volumes are not supported (only FAT12/FAT16)")
        total = tot16 or tot32
        label, volume_id = _NO_NAME, 0
        _drv, _res, boot_sig, vol_id, vol_label, _fs = struct.unpack_from(cls.EBPB_FMT, data, 36)
        if boot_sig == 0x29:
            label, volume_id = vol_label, vol_id
        geo = _Geometry(total, spc, reserved, fatsz16, root_entries, nfats, bps)
        if geo.clusters == 0:
            raise InvalidDrive(f"not a FAT image: {total} sectors leave no data clusters")
        if geo.fat_bits == 32:
            raise InvalidDrive(f"{geo.clusters} clusters make this FAT32, which is not supported")
        if fatsz16 * bps * 8 // geo.fat_bits < geo.clusters + 2:
            raise InvalidDrive(f"FAT of {fatsz16} sectors cannot map {geo.clusters} clusters")
        return cls(geo, volume_id, label, media, oem, spt, heads, jump)


def _layout(total: int, spc: int, root_entries: int) -> _Geometry | None:
    """The geometry of ``total`` sectors with ``spc``-sector clusters, or None if that is no
    valid FAT12/FAT16 volume. FATs are sized per "FAT Data Structure" (entries for every
    cluster plus the two reserved ones); reserved sectors pad the data area to a cluster
    boundary, as mkfs.fat 4.2 does."""
    root_sectors = (root_entries * 32 + SECTOR - 1) // SECTOR
    for bits in (12, 16):
        fat = 1
        while True:
            reserved = 1 + (-(1 + 2 * fat + root_sectors)) % spc
            data = total - reserved - 2 * fat - root_sectors
            if data < spc:
                return None
            need = ((data // spc + 2) * bits + 8 * SECTOR - 1) // (8 * SECTOR)
            if need <= fat:
                break
            fat = need
        geo = _Geometry(total, spc, reserved, fat, root_entries)
        if geo.fat_bits == bits:
            return geo
    return None


# --- fatgen103 "FAT Data Structure" --------------------------------------------------------------


class _Fat:
    """The allocation table: one 12- or 16-bit entry per cluster. Entry 0 holds the media byte,
    entry 1 the end-of-chain mark with the clean-shutdown/no-error bits set."""

    FMT16: ClassVar[str] = "<{n}H"  # n FAT16 entries; FAT12 packs entry pairs into 3 bytes

    def __init__(self, bits: int, media: int = 0xF8) -> None:
        self.bits = bits
        self.eoc = 0xFFF if bits == 12 else 0xFFFF
        self.entries = array("H", [(0xF00 if bits == 12 else 0xFF00) | media, self.eoc])

    def chain(self, first: int, count: int) -> None:
        """Link ``count`` contiguous clusters from ``first``, ending with end-of-chain."""
        end = first + count
        if len(self.entries) < end:
            self.entries.extend(array("H", bytes(2 * (end - len(self.entries)))))
        self.entries[first : end - 1] = array("H", range(first + 1, end))
        self.entries[end - 1] = self.eoc

    def encode(self) -> bytes:
        """The used prefix of the table; the rest of the FAT sectors stay zero (free)."""
        e = self.entries
        if self.bits == 16:
            return struct.pack(self.FMT16.format(n=len(e)), *e)
        if len(e) % 2:
            e = e + array("H", [0])
        return b"".join((e[i] | e[i + 1] << 12).to_bytes(3, "little") for i in range(0, len(e), 2))

    @classmethod
    def decode(cls, raw: bytes, bits: int, count: int) -> Sequence[int]:
        """Entries 0..count-1 of an on-disk table."""
        if bits == 16:
            return struct.unpack_from(cls.FMT16.format(n=count), raw)
        out = array("H", bytes(2 * count))
        for n in range(count):
            off = n + n // 2
            v = raw[off] | raw[off + 1] << 8
            out[n] = v >> 4 if n & 1 else v & 0xFFF
        return out


# --- fatgen103 "FAT Directory Structure" (its dates: configdrive.drive.timestamps) -------------


class _DirEntry:
    """fatgen103 "FAT Directory Structure": one 32-byte short (8.3) directory entry."""

    FMT: ClassVar[str] = "<11sBBBHHHHHHHI"  # Name, Attr, NTRes, CrtTimeTenth, CrtTime, CrtDate,
    #                                         LstAccDate, FstClusHI, WrtTime, WrtDate, FstClusLO,
    #                                         FileSize
    STRUCT: ClassVar[struct.Struct] = struct.Struct(FMT)

    @classmethod
    def pack_into(
        cls, buf: bytearray, off: int, name: bytes, attr: int, cluster: int, size: int,
        stamp: DosStamp,
    ) -> None:  # fmt: skip
        cls.STRUCT.pack_into(
            buf, off, name, attr, 0, stamp.tenth, stamp.time, stamp.date, stamp.date,
            cluster >> 16, stamp.time, stamp.date, cluster & 0xFFFF, size,
        )  # fmt: skip


def _lfn_checksum(short: bytes) -> int:
    """fatgen103 "FAT Long Directory Entries": ChkSum() over the 11-byte short name."""
    s = 0
    for b in short:
        s = (((s & 1) << 7) + (s >> 1) + b) & 0xFF
    return s


class _LfnEntry:
    """fatgen103 "FAT Long Directory Entries": 13 UCS-2 characters per 32-byte entry, stored
    last-first before the short entry; the final one has LAST_LONG_ENTRY (0x40) in LDIR_Ord.
    The name ends with a NUL unless it fills the last entry exactly, then 0xFFFF padding."""

    FMT: ClassVar[str] = "<B10sBBB12sH4s"  # Ord, Name1, Attr, Type, Chksum, Name2, FstClusLO, Name3
    STRUCT: ClassVar[struct.Struct] = struct.Struct(FMT)

    @classmethod
    def encode(cls, name: str, short: bytes) -> bytes:
        units = name.encode("utf-16-le", "surrogatepass")
        if len(units) % 26:
            units += b"\0\0"
            units += b"\xff" * ((-len(units)) % 26)
        checksum = _lfn_checksum(short)
        count = len(units) // 26
        out = []
        for ordinal in range(count, 0, -1):
            part = units[(ordinal - 1) * 26 : ordinal * 26]
            seq = ordinal | (0x40 if ordinal == count else 0)
            out.append(cls.STRUCT.pack(seq, part[:10], _ATTR_LONG_NAME, 0, checksum, part[10:22],
                                       0, part[22:]))  # fmt: skip
        return b"".join(out)


# --- names: fatgen103 "The Basis-Name Generation Algorithm" and "Numeric-Tail Generation" --------


def _basis_name(name: str) -> tuple[str, str, bool]:
    """(primary, extension, lossy): uppercase, strip spaces and leading periods, map characters
    that are illegal in short names to "_", keep 8 + 3; lossy if anything but case changed."""
    stripped = name.replace(" ", "").lstrip(".")
    lossy = stripped != name
    dot = stripped.rfind(".")
    primary, ext = (stripped[:dot], stripped[dot + 1 :]) if dot >= 0 else (stripped, "")
    if "." in primary:
        primary, lossy = primary.replace(".", ""), True
    conv: list[str] = []
    for part in (primary, ext):
        chars = []
        for ch in part:
            up = ch.upper() if ch.isascii() else "_"
            if len(up) != 1 or ord(up) not in _SHORT_OK:
                up, lossy = "_", True
            chars.append(up)
        conv.append("".join(chars))
    primary, ext = conv
    if len(primary) > 8 or len(ext) > 3 or not primary:
        lossy = True
    return (primary[:8] or "_"), ext[:3], lossy


def _short_bytes(primary: str, ext: str) -> bytes:
    return (primary.ljust(8) + ext.ljust(3)).encode("ascii")


class _ShortNames:
    """Unique 8.3 names of one directory. Names that already are valid uppercase 8.3 names are
    reserved first (they need no long entries); the others get basis names with "~n" tails."""

    def __init__(self) -> None:
        self.used: set[bytes] = set()
        self.next_tail: dict[tuple[str, str], int] = {}

    def exact(self, name: str) -> bytes | None:
        primary, ext, lossy = _basis_name(name)
        if lossy or name != (f"{primary}.{ext}" if ext else primary):
            return None
        short = _short_bytes(primary, ext)
        self.used.add(short)
        return short

    def generate(self, name: str) -> bytes:
        primary, ext, lossy = _basis_name(name)
        short = _short_bytes(primary, ext)
        if not lossy and short not in self.used:
            self.used.add(short)
            return short
        n = self.next_tail.get((primary, ext), 1)
        while True:
            tail = f"~{n}"
            short = _short_bytes(primary[: 8 - len(tail)] + tail, ext)
            n += 1
            if short not in self.used:
                self.next_tail[(primary, ext)] = n
                self.used.add(short)
                return short


# --- the tree to write ----------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    data: bytes | None = None  # None for a directory
    children: dict[str, _Node] = field(default_factory=dict)
    short: bytes = b""
    lfn: bytes = b""
    entries: int = 0  # directories: 32-byte entries, dot entries / label included
    first_cluster: int = 0
    nclusters: int = 0

    def walk(self) -> Iterator[_Node]:
        """Pre-order: a directory, then its files, then its subdirectories."""
        yield self
        subdirs = []
        for child in self.children.values():
            if child.data is None:
                subdirs.append(child)
            else:
                yield child
        for d in subdirs:
            yield from d.walk()


def _check_name(path: str, name: str) -> None:
    if name in ("", ".", ".."):
        raise DriveError(f"{path!r}: empty, '.' and '..' path components are not allowed")
    bad = sorted(set(name) & _LONG_BAD)
    if bad:
        raise DriveError(f"{path!r}: FAT names cannot contain {''.join(bad)!r}")
    if name[-1] in ". ":
        raise DriveError(f"{path!r}: FAT long names cannot end with a period or space")
    if max(map(ord, name)) > 0xFFFF or any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        raise DriveError(f"{path!r}: FAT long names are UCS-2; characters beyond U+FFFF and "
                         "surrogates are not representable")  # fmt: skip
    if len(name) > _MAX_NAME_UNITS:
        raise DriveError(f"{path!r}: FAT long names hold at most 255 characters, not {len(name)}")


def _build_tree(tree: Mapping[str, bytes], has_label: bool) -> _Node:
    root = _Node("", None)
    folded: dict[tuple[int, str], str] = {}  # (id(dir), lowercased name) -> name, per directory
    for path in sorted(tree):
        data = tree[path]
        if path.startswith("/"):
            raise DriveError(f"{path!r}: paths must be relative")
        parts = path.split("/")
        node = root
        for i, part in enumerate(parts):
            _check_name(path, part)
            key = (id(node), part.lower())
            if folded.setdefault(key, part) != part:
                raise DriveError(f"{path!r}: {part!r} and {folded[key]!r} are the same FAT name")
            child = node.children.get(part)
            last = i == len(parts) - 1
            if child is None:
                child = _Node(part, data if last else None)
                node.children[part] = child
            elif last or child.data is not None:
                raise DriveError(f"{path!r}: a path is both a file and a directory")
            node = child
        if len(data) > 0xFFFFFFFF:
            raise DriveError(f"{path!r}: FAT files hold at most 4 GiB - 1 bytes")
    for d in root.walk():
        if d.data is not None:
            continue
        names = _ShortNames()
        pending = []
        for child in d.children.values():
            exact = names.exact(child.name)
            if exact is None:
                pending.append(child)
            else:
                child.short = exact
        for child in pending:
            child.short = names.generate(child.name)
            child.lfn = _LfnEntry.encode(child.name, child.short)
        own = (1 if has_label else 0) if d is root else 2  # volume label, or "." and ".."
        d.entries = own + sum(1 + len(c.lfn) // 32 for c in d.children.values())
        if d.entries > _MAX_DIR_ENTRIES:
            raise DriveError(f"directory {d.name!r} needs {d.entries} entries, FAT allows 65536")
    return root


# --- choosing the geometry -----------------------------------------------------------------------


def _clusters_needed(lengths: list[int], cluster_size: int) -> int:
    return sum((n + cluster_size - 1) // cluster_size for n in lengths)


def _fit(lengths: list[int], root_entries: int, slack: bool) -> _Geometry:
    """The smallest geometry over all cluster sizes that holds ``lengths`` (bytes per chain)."""
    best: tuple[int, int, _Geometry] | None = None
    root_sectors = root_entries * 32 // SECTOR
    for spc in (1, 2, 4, 8, 16, 32, 64):
        need = _clusters_needed(lengths, spc * SECTOR)
        want = need + (need // 16 + 2 if slack else 0)
        for bits, low, high in ((12, 1, _FAT12_CLUSTERS), (16, _FAT12_CLUSTERS, _FAT16_CLUSTERS)):
            clusters = max(want, low)
            if clusters >= high:
                continue
            fat = ((clusters + 2) * bits + 8 * SECTOR - 1) // (8 * SECTOR)
            meta = 1 + 2 * fat + root_sectors
            total = meta + (-meta) % spc + clusters * spc
            if slack:
                total += -total % 8  # whole 4 KiB blocks
            for _ in range(64):
                geo = _layout(total, spc, root_entries)
                if geo is not None and geo.clusters >= need:
                    if best is None or (total, -spc) < best[:2]:
                        best = (total, -spc, geo)
                    break
                total += spc
    if best is None:
        raise DriveError("the tree does not fit in a FAT16 volume (2 GiB); FAT32 is not supported")
    return best[2]


def _fixed(size: int, lengths: list[int], root_entries: int) -> _Geometry:
    if size % SECTOR:
        raise DriveError(f"image size {size} is not a multiple of {SECTOR} bytes")
    total = size // SECTOR
    # mkfs.fat 4.2: 2 KiB clusters up to 128 MiB, larger ones as FAT16 runs out of clusters;
    # smaller ones only when nothing else fits.
    valid = [g for spc in (4, 8, 16, 32, 64, 2, 1) if (g := _layout(total, spc, root_entries))]
    if not valid:
        raise DriveError(f"image size {size} is no valid FAT12/FAT16 volume (too small or > 2 GiB)")
    for geo in [valid[0], *sorted(valid[1:], key=lambda g: g.sectors_per_cluster)]:
        if _clusters_needed(lengths, geo.cluster_size) <= geo.clusters:
            return geo
    need = _fit(lengths, root_entries, slack=False).total_sectors * SECTOR
    raise DriveError(
        f"the tree does not fit in a {size}-byte FAT image: it needs at least {need} bytes",
        hint="omit the size to get the smallest image that fits, or give a larger one",
    )


# --- writing --------------------------------------------------------------------------------------


def _check_label(label: str) -> bytes:
    if not label.isascii():
        raise DriveError(f"volume label {label!r} must be ASCII")
    raw = label.encode("ascii")
    if len(raw) > 11:
        raise DriveError(f"volume label {label!r} is longer than 11 bytes")
    if set(raw) & _LABEL_BAD or label != label.strip(" "):
        raise DriveError(f"volume label {label!r} has characters FAT labels cannot hold")
    return raw.ljust(11) if raw else b""


def _dir_bytes(d: _Node, parent: _Node | None, size: int, label: bytes, st: DosStamp) -> bytes:
    buf = bytearray(size)
    off = 0
    if parent is None:
        if label:
            _DirEntry.pack_into(buf, 0, label, _ATTR_VOLUME_ID, 0, 0, st)
            off = 32
    else:  # ".." of a directory in the root points at cluster 0 ("FAT Directory Structure")
        _DirEntry.pack_into(buf, 0, b".          ", _ATTR_DIRECTORY, d.first_cluster, 0, st)
        _DirEntry.pack_into(buf, 32, b"..         ", _ATTR_DIRECTORY, parent.first_cluster, 0, st)
        off = 64
    for c in d.children.values():
        if c.lfn:
            buf[off : off + len(c.lfn)] = c.lfn
            off += len(c.lfn)
        is_dir = c.data is None
        attr = _ATTR_DIRECTORY if is_dir else _ATTR_ARCHIVE
        length = 0 if c.data is None else len(c.data)
        _DirEntry.pack_into(buf, off, c.short, attr, c.first_cluster, length, st)
        off += 32
    return bytes(buf)


def write_vfat(
    tree: Mapping[str, bytes],
    out: BinaryIO,
    *,
    label: str,
    size: int | None = None,
    timestamp: datetime | None = None,
) -> int:
    """Write ``tree`` (relative POSIX path -> bytes; directories implied) as a FAT12/FAT16 image
    with long names to the seekable ``out``, from offset 0, sparsely, and return its size.

    ``size=None`` makes the smallest image that fits plus a little slack; a given ``size`` is
    used exactly (DriveError if the tree does not fit). Every entry date and the volume serial
    come from ``timestamp`` (aware values are taken in UTC; default :func:`build_time`:
    ``SOURCE_DATE_EPOCH`` or now), so equal inputs give equal bytes.
    """
    label_bytes = _check_label(label)
    root = _build_tree(tree, bool(label_bytes))
    root_entries = max(_ROOT_ENTRIES, (root.entries + 15) // 16 * 16)
    if root_entries > 0xFFF0:
        raise DriveError(f"the root directory needs {root.entries} entries, FAT16 allows 65520")
    nodes = list(root.walk())[1:]
    lengths = [len(n.data) if n.data is not None else n.entries * 32 for n in nodes]
    geo = _fit(lengths, root_entries, True) if size is None else _fixed(size, lengths, root_entries)
    cs = geo.cluster_size
    fat = _Fat(geo.fat_bits)
    cluster = 2
    for node, length in zip(nodes, lengths, strict=True):
        node.nclusters = (length + cs - 1) // cs
        if node.nclusters:
            node.first_cluster = cluster
            fat.chain(cluster, node.nclusters)
            cluster += node.nclusters
    ts = build_time() if timestamp is None else timestamp
    stamp = DosStamp.of(ts)
    spt = 32
    while geo.total_sectors % spt:  # mtools refuses images whose size is no whole track
        spt //= 2
    volume_id = volume_serial(label_bytes, ts)
    boot = _BootSector(geo, volume_id, label_bytes or _NO_NAME, sectors_per_track=spt)

    if not out.seekable():
        raise DriveError("the output must be seekable (a file or BytesIO, not a pipe)")
    image_size = geo.total_sectors * SECTOR
    out.seek(0)
    out.truncate(0)  # stale bytes must not survive in the regions we seek over

    def put(offset: int, data: bytes) -> None:
        if data:
            out.seek(offset)
            out.write(data)

    put(0, boot.pack())
    fat_bytes = fat.encode()
    put(geo.fat_offset(0), fat_bytes)
    put(geo.fat_offset(1), fat_bytes)
    put(geo.root_offset, _dir_bytes(root, None, root.entries * 32, label_bytes, stamp))
    parents = {id(c): n for n in [root, *nodes] for c in n.children.values()}
    for node in nodes:
        if node.data is None:
            parent = parents[id(node)]
            body = _dir_bytes(node, parent, node.nclusters * cs, label_bytes, stamp)
            put(geo.cluster_offset(node.first_cluster), body)
        else:
            put(geo.cluster_offset(node.first_cluster), node.data)
    out.truncate(image_size)
    if out.seek(0, io.SEEK_END) < image_size:  # BytesIO.truncate() does not extend
        out.seek(image_size - 1)
        out.write(b"\0")
    out.seek(image_size)
    return image_size


def vfat_image(
    tree: Mapping[str, bytes],
    *,
    label: str,
    size: int | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    """:func:`write_vfat` into memory."""
    buf = io.BytesIO()
    write_vfat(tree, buf, label=label, size=size, timestamp=timestamp)
    return buf.getvalue()


# --- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VfatContents:
    """What a guest sees: the volume label, every file by path, and the FAT type."""

    label: str
    files: dict[str, bytes]
    fat_bits: int


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        f.seek(0)
        self.boot = _BootSector.unpack(f.read(SECTOR))
        self.geo = g = self.boot.geometry
        length = f.seek(0, io.SEEK_END)
        if length < g.total_sectors * g.bytes_per_sector:
            raise InvalidDrive(f"truncated FAT image: {length} bytes, the boot sector says "
                               f"{g.total_sectors * g.bytes_per_sector}")  # fmt: skip
        raw = self.read_at(g.fat_offset(0), g.fat_sectors * g.bytes_per_sector)
        self.fat = _Fat.decode(raw, g.fat_bits, g.clusters + 2)
        self.eoc = 0xFF8 if g.fat_bits == 12 else 0xFFF8

    def read_at(self, offset: int, length: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise InvalidDrive(f"truncated FAT image: no {length} bytes at offset {offset}")
        return data

    def chain(self, first: int, what: str) -> bytes:
        """The bytes of the cluster chain from ``first``, read run by run."""
        g, last = self.geo, self.geo.clusters + 1
        runs: list[list[int]] = []
        c, seen = first, 0
        while True:
            if not 2 <= c <= last:
                raise InvalidDrive(f"{what}: cluster chain reaches invalid cluster {c:#x}")
            seen += 1
            if seen > g.clusters:
                raise InvalidDrive(f"{what}: cluster chain loops")
            if runs and runs[-1][0] + runs[-1][1] == c:
                runs[-1][1] += 1
            else:
                runs.append([c, 1])
            c = self.fat[c]
            if c >= self.eoc:
                break
        return b"".join(self.read_at(g.cluster_offset(s), n * g.cluster_size) for s, n in runs)

    def walk(self, data: bytes, prefix: str, files: dict[str, bytes], seen: set[int]) -> str:
        """Collect the files below one directory; return the volume label found in it."""
        label = ""
        parts: list[bytes] = []
        expect, checksum = 0, -1
        for off in range(0, len(data) - 31, 32):
            first = data[off]
            if first == 0:
                break
            if first == 0xE5:
                parts, expect = [], 0
                continue
            (name, attr, ntres, _t, _ct, _cd, _ad, _hi, _wt, _wd, cluster,
             length) = _DirEntry.STRUCT.unpack_from(data, off)  # fmt: skip
            if attr & 0x3F == _ATTR_LONG_NAME:
                seq, n1, _a, _ty, chk, n2, _z, n3 = _LfnEntry.STRUCT.unpack_from(data, off)
                if seq & 0x40:
                    parts, expect, checksum = [], seq & 0x3F, chk
                elif seq != expect or chk != checksum:
                    parts, expect = [], 0
                    continue
                parts.append(n1 + n2 + n3)
                expect -= 1
                continue
            long_name = None
            if parts and expect == 0 and checksum == _lfn_checksum(name):
                text = b"".join(reversed(parts)).decode("utf-16-le", "surrogatepass")
                long_name = text.split("\0", 1)[0].rstrip("\uffff") or None
            parts, expect = [], 0
            if attr & _ATTR_VOLUME_ID:
                if not prefix and not label:
                    label = name.decode("cp437").rstrip(" ")
                continue
            if name[0] == 0x2E:  # "." and ".."
                continue
            fname = long_name or _short_display(name, ntres)
            path = prefix + fname
            if attr & _ATTR_DIRECTORY:
                if cluster in seen or cluster == 0:
                    raise InvalidDrive(f"{path!r}: directory cluster {cluster} loops or is 0")
                seen.add(cluster)
                self.walk(self.chain(cluster, path), path + "/", files, seen)
                continue
            if path in files:
                raise InvalidDrive(f"{path!r}: the name occurs twice")
            if length == 0:
                files[path] = b""
                continue
            body = self.chain(cluster, path)
            if len(body) < length:
                raise InvalidDrive(f"{path!r}: {length} bytes but a chain of {len(body)}")
            files[path] = body[:length]
        return label


def _short_display(name: bytes, ntres: int) -> str:
    if name[0] == 0x05:  # "FAT Directory Structure": 0x05 stands for a leading 0xE5
        name = b"\xe5" + name[1:]
    base, ext = name[:8].decode("cp437").rstrip(" "), name[8:].decode("cp437").rstrip(" ")
    if ntres & _NT_LOWER_BASE:
        base = base.lower()
    if ntres & _NT_LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def read_vfat(f: BinaryIO) -> VfatContents:
    """Read a FAT12/FAT16 image: label (root volume-label entry, else the boot sector), files
    under their long names (checksum verified) or 8.3 names. InvalidDrive if it is no such image."""
    r = _Reader(f)
    g = r.geo
    root = r.read_at(g.root_offset, g.root_entries * 32)
    files: dict[str, bytes] = {}
    label = r.walk(root, "", files, set())
    if not label and r.boot.label != _NO_NAME:
        label = r.boot.label.decode("cp437").rstrip(" ")
    return VfatContents(label=label, files=files, fat_bits=g.fat_bits)


def is_vfat(f: BinaryIO) -> bool:
    """True if ``f`` holds a FAT12/FAT16 boot sector and is as long as it says; keeps position."""
    pos = f.tell()
    try:
        _Reader(f)
    except InvalidDrive:
        return False
    finally:
        f.seek(pos)
    return True
