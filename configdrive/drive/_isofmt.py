"""On-disc structures of ISO9660 (Ecma-119 2nd ed.), Joliet, SUSP (IEEE P1281) and RRIP.

One small function (or FMT string) per structure, each citing the clause that defines it.
``iso9660`` lays out a tree with these and reads images back; nothing here does I/O.

References: Ecma-119 2nd edition (= ISO 9660:1988); "Joliet Specification" (Microsoft, 1995);
System Use Sharing Protocol 1.12 (IEEE P1281, "SUSP"); Rock Ridge Interchange Protocol 1.09 as
mkisofs/genisoimage write it ("RRIP", ER identifier RRIP_1991A; clause numbers are shared with
RRIP 1.12 / IEEE P1282).
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import NamedTuple

BLOCK = 2048  # Ecma-119 6.1.2: logical sector size; logical block size (6.2) chosen equal
SYSTEM_AREA_BLOCKS = 16  # Ecma-119 6.2: logical sectors 0-15 are the System Area (zeros here)
MAX_RECORD = 254  # Ecma-119 9.1.1 (one byte), kept even like mkisofs so 9.1.13 stays aligned
STD_ID = b"CD001"  # Ecma-119 8.1.2 Standard Identifier
JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")  # Joliet spec, SVD escape sequences: UCS-2 level 1-3

# Ecma-119 9.1.6 File Flags
FLAG_HIDDEN = 0x01
FLAG_DIRECTORY = 0x02
FLAG_ASSOCIATED = 0x04
FLAG_MULTI_EXTENT = 0x80


# -- Ecma-119 7.2 / 7.3 numerical values ------------------------------------------------------
def both16(value: int) -> bytes:
    """Ecma-119 7.2.3: 16-bit value recorded little-endian then big-endian (4 bytes)."""
    return struct.pack("<H", value) + struct.pack(">H", value)


def both32(value: int) -> bytes:
    """Ecma-119 7.3.3: 32-bit value recorded little-endian then big-endian (8 bytes)."""
    return struct.pack("<I", value) + struct.pack(">I", value)


def read_both32(buf: bytes, off: int) -> tuple[int, int]:
    """Ecma-119 7.3.3 read back: (little-endian half, big-endian half); callers compare them."""
    return struct.unpack_from("<I", buf, off)[0], struct.unpack_from(">I", buf, off + 4)[0]


# -- Ecma-119 8.4.26.1 / 9.1.5 dates ----------------------------------------------------------
def vd_date(ts: datetime) -> bytes:
    """Ecma-119 8.4.26.1: 16 digits YYYYMMDDHHMMSScc + offset from GMT in 15 min units (0)."""
    return b"%04d%02d%02d%02d%02d%02d%02d\x00" % (
        ts.year,
        ts.month,
        ts.day,
        ts.hour,
        ts.minute,
        ts.second,
        ts.microsecond // 10000,
    )


VD_DATE_UNSET = b"0" * 16 + b"\x00"  # Ecma-119 8.4.26.1: all digits zero = "not specified"


def dir_date(ts: datetime) -> bytes:
    """Ecma-119 9.1.5: years since 1900, month, day, hour, minute, second, GMT offset (0)."""
    return bytes((ts.year - 1900, ts.month, ts.day, ts.hour, ts.minute, ts.second, 0))


# -- Ecma-119 8 volume descriptors ------------------------------------------------------------
# Ecma-119 8.4 Primary / 8.5 Supplementary Volume Descriptor (same layout; 8.5 adds flags and
# escape sequences). Both-endian numbers are passed pre-encoded (7.2.3 / 7.3.3) as "Ns" fields.
VD_FMT = (
    "<B5sBB"  # 8.4.1 type, 8.4.2 standard id, 8.4.3 version, 8.5.3 volume flags
    "32s32s8s"  # 8.4.5 system id, 8.4.6 volume id, 8.4.7 unused
    "8s32s"  # 8.4.8 volume space size (733), 8.5.6 escape sequences (zeros in a PVD)
    "4s4s4s"  # 8.4.10 volume set size, 8.4.11 sequence number, 8.4.12 block size (723 each)
    "8sI4s4s4s"  # 8.4.13 path table size (733), 8.4.14-17 L, optional L, M, optional M
    "34s128s128s128s128s"  # 8.4.18 root record, 8.4.19-22 set, publisher, preparer, application
    "37s37s37s"  # 8.4.23-25 copyright, abstract, bibliographic file ids
    "17s17s17s17s"  # 8.4.26-29 creation, modification, expiration, effective dates
    "BB512s653s"  # 8.4.31 file structure version, reserved, 8.4.32 application use, reserved
)
assert struct.calcsize(VD_FMT) == BLOCK

VD_PRIMARY = 1  # Ecma-119 8.4.1
VD_SUPPLEMENTARY = 2  # Ecma-119 8.5.1
VD_TERMINATOR = 255  # Ecma-119 8.3.1


def a_field(text: str, size: int) -> bytes:
    """Ecma-119 7.4: an a-/d-character field, left-justified, padded with spaces."""
    return text.encode("ascii").ljust(size, b" ")[:size]


def ucs2_field(text: str, size: int) -> bytes:
    """Joliet spec: an SVD character field in UCS-2 big-endian, padded with UCS-2 spaces."""
    raw = text.encode("utf-16-be")[: size - size % 2]
    return raw + (b"\x00 " * size)[: size - len(raw)]


class VolumeFields(NamedTuple):
    """Encoded character fields of a PVD (8.4, a-characters) or Joliet SVD (8.5, UCS-2)."""

    system_id: bytes  # 32 bytes
    volume_id: bytes  # 32 bytes
    publisher: bytes  # 128 bytes
    application: bytes  # 128 bytes
    blank128: bytes  # volume set / data preparer ids: blank
    blank37: bytes  # copyright / abstract / bibliographic file ids: blank


def pack_volume_descriptor(
    vd_type: int,
    fields: VolumeFields,
    escapes: bytes,
    space_blocks: int,
    pt_size: int,
    pt_l: int,
    pt_m: int,
    root_record: bytes,
    created: bytes,
) -> bytes:
    """Ecma-119 8.4 (PVD, vd_type 1) or 8.5 (SVD, vd_type 2; Joliet when escapes is %/E)."""
    return struct.pack(
        VD_FMT,
        vd_type,
        STD_ID,
        1,
        0,
        fields.system_id,
        fields.volume_id,
        b"",
        both32(space_blocks),
        escapes,
        both16(1),
        both16(1),
        both16(BLOCK),
        both32(pt_size),
        pt_l,
        b"",
        struct.pack(">I", pt_m),
        b"",
        root_record,
        fields.blank128,
        fields.publisher,
        fields.blank128,
        fields.application,
        fields.blank37,
        fields.blank37,
        fields.blank37,
        created,
        created,
        VD_DATE_UNSET,
        created,
        1,
        0,
        b"",
        b"",
    )


def pack_terminator() -> bytes:
    """Ecma-119 8.3: Volume Descriptor Set Terminator (type 255, zeros after the version)."""
    return struct.pack("<B5sB", VD_TERMINATOR, STD_ID, 1).ljust(BLOCK, b"\x00")


# -- Ecma-119 9.1 directory record ------------------------------------------------------------
# 9.1.1 length, 9.1.2 extended attribute length, 9.1.3 extent (733), 9.1.4 data length (733),
# 9.1.5 date, 9.1.6 flags, 9.1.7 file unit size, 9.1.8 interleave gap, 9.1.9 volume sequence
# number (723), 9.1.10 identifier length; 9.1.11 identifier, 9.1.12 padding, 9.1.13 system use.
DR_FMT = "<BBI4sI4s7sBBB4sB"
DR_HEADER = struct.calcsize(DR_FMT)  # 33
assert DR_HEADER == 33
_SEQ1 = both16(1)


def dr_fixed_len(ident_len: int) -> int:
    """Bytes before the System Use field: header, identifier, 9.1.12 pad to an even offset."""
    return DR_HEADER + ident_len + (1 - ident_len % 2)


def pack_dir_record(
    extent: int, size: int, date: bytes, flags: int, ident: bytes, system_use: bytes
) -> bytes:
    """Ecma-119 9.1 directory record, padded to an even total length."""
    head = dr_fixed_len(len(ident))
    total = head + len(system_use)
    total += total % 2
    return (
        struct.pack(
            DR_FMT,
            total,
            0,
            extent,
            struct.pack(">I", extent),
            size,
            struct.pack(">I", size),
            date,
            flags,
            0,
            0,
            _SEQ1,
            len(ident),
        )
        + ident
        + b"\x00" * (head - DR_HEADER - len(ident))
        + system_use
        + b"\x00" * (total - head - len(system_use))
    )


class DirRecord(NamedTuple):
    """A parsed Ecma-119 9.1 directory record (only the fields the reader uses)."""

    length: int
    ext_attr_len: int
    extent: int
    size: int
    flags: int
    unit_size: int
    ident: bytes
    system_use: bytes


def parse_dir_record(buf: bytes, off: int) -> DirRecord | str:
    """Parse the record at ``off``; a string result says what is wrong with it."""
    length = buf[off]
    if length < DR_HEADER + 1 or off + length > len(buf):
        return f"directory record length {length} is out of range"
    (_, xattr, ext_le, ext_be, size_le, size_be, _, flags, unit, _, _, id_len) = struct.unpack_from(
        DR_FMT, buf, off
    )
    if ext_le != struct.unpack(">I", ext_be)[0] or size_le != struct.unpack(">I", size_be)[0]:
        return "directory record both-endian extent/size halves disagree (Ecma-119 7.3.3)"
    head = dr_fixed_len(id_len)
    if DR_HEADER + id_len > length:
        return f"directory record identifier length {id_len} exceeds record length {length}"
    ident = buf[off + DR_HEADER : off + DR_HEADER + id_len]
    return DirRecord(
        length,
        xattr,
        ext_le,
        size_le,
        flags,
        unit,
        ident,
        buf[off + min(head, length) : off + length],
    )


# -- Ecma-119 9.4 path table record -----------------------------------------------------------
PT_FMT_L = "<BBIH"  # 9.4.1 identifier length, 9.4.2 xattr length, 9.4.3 extent, 9.4.4 parent
PT_FMT_M = ">BBIH"  # same record, type M path table (7.2.2 / 7.3.2 big-endian)


def pack_path_record(ident: bytes, extent: int, parent: int, big_endian: bool) -> bytes:
    """Ecma-119 9.4: path table record; 9.4.6 pads the identifier to an even length."""
    fmt = PT_FMT_M if big_endian else PT_FMT_L
    return struct.pack(fmt, len(ident), 0, extent, parent) + ident + b"\x00" * (len(ident) % 2)


# -- SUSP (IEEE P1281) and RRIP (IEEE P1282) system use entries -------------------------------
# SUSP 4.1: every entry is signature (2 bytes), length (BP3), version (BP4), data.
SUSP_VERSION = 1
CE_LEN = 28
RR_PX, RR_NM, RR_TF = 0x01, 0x08, 0x80  # RRIP 1.09 "RR" entry flag bits (dropped in RRIP 1.10)
NM_CONTINUE, NM_CURRENT, NM_PARENT = 0x01, 0x02, 0x04  # RRIP 4.1.4 NM flags
MAX_NM_CHUNK = 255 - 5

ER_ID = b"RRIP_1991A"
ER_DESCRIPTION = (
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS"
)
ER_SOURCE = (
    b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN "
    b"PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION."
)
RRIP_IDS = frozenset({b"RRIP_1991A", b"IEEE_P1282", b"IEEE_1282"})


def su_sp() -> bytes:
    """SUSP 5.3: SP "SUSP indicator" (check bytes BE EF, LEN_SKP 0); first entry of root '.'."""
    return struct.pack("<2sBBBBB", b"SP", 7, SUSP_VERSION, 0xBE, 0xEF, 0)


def su_ce(block: int, offset: int, length: int) -> bytes:
    """SUSP 5.1: CE continuation area: block (733), offset (733), length (733)."""
    return (
        struct.pack("<2sBB", b"CE", CE_LEN, SUSP_VERSION)
        + both32(block)
        + both32(offset)
        + both32(length)
    )


def su_er() -> bytes:
    """SUSP 5.5: ER extensions reference naming RRIP (identifier, description, source, ext 1)."""
    head = struct.pack(
        "<2sBBBBBB",
        b"ER",
        8 + len(ER_ID) + len(ER_DESCRIPTION) + len(ER_SOURCE),
        SUSP_VERSION,
        len(ER_ID),
        len(ER_DESCRIPTION),
        len(ER_SOURCE),
        1,
    )
    return head + ER_ID + ER_DESCRIPTION + ER_SOURCE


def rr_rr(flags: int) -> bytes:
    """RRIP 1.09 "RR" entry (as mkisofs writes it): which RRIP entries this record carries."""
    return struct.pack("<2sBBB", b"RR", 5, SUSP_VERSION, flags)


def rr_px(mode: int, nlink: int) -> bytes:
    """RRIP 4.1.1: PX POSIX attributes, 1.09 form (36 bytes): mode, links, uid, gid (733)."""
    return (
        struct.pack("<2sBB", b"PX", 36, SUSP_VERSION)
        + both32(mode)
        + both32(nlink)
        + both32(0)
        + both32(0)
    )


TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES = 0x02, 0x04, 0x08  # RRIP 4.1.6 TF flags


def rr_tf(date: bytes) -> bytes:
    """RRIP 4.1.6: TF time stamps, short (9.1.5) form: modify, access, attribute change."""
    return (
        struct.pack("<2sBBB", b"TF", 5 + 3 * 7, SUSP_VERSION, TF_MODIFY | TF_ACCESS | TF_ATTRIBUTES)
        + date * 3
    )


def rr_nm(name: bytes) -> list[bytes]:
    """RRIP 4.1.4: NM alternate name, split over entries flagged CONTINUE when over 250 bytes."""
    chunks = [name[i : i + MAX_NM_CHUNK] for i in range(0, len(name), MAX_NM_CHUNK)] or [b""]
    last = len(chunks) - 1
    return [
        struct.pack("<2sBBB", b"NM", 5 + len(c), SUSP_VERSION, NM_CONTINUE if i < last else 0) + c
        for i, c in enumerate(chunks)
    ]
