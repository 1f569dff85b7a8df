"""The in-process VFAT writer and reader, judged by fsck.vfat, blkid and mtools."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configdrive.drive.vfat import (
    NOVA_VFAT_SIZE,
    VfatContents,
    is_vfat,
    read_vfat,
    vfat_image,
    write_vfat,
)
from configdrive.errors import DriveError, InvalidDrive, SpecError

Sh = Callable[..., subprocess.CompletedProcess[bytes]]
TS = datetime(2024, 5, 6, 7, 8, 10)
LONG_NAME = "a-name-that-is-exactly-one-hundred-characters-long-" + "x" * 49
MODES = {"fit": None, "nova": NOVA_VFAT_SIZE}


def config_tree() -> dict[str, bytes]:
    """A config drive as nova lays it out, plus the awkward cases."""
    tree = {
        "openstack/2012-08-10/meta_data.json": b'{"uuid": "0b4c5f3a", "name": "vm"}',
        "openstack/2012-08-10/user_data": b"#!/bin/sh\necho hi\n",
        "openstack/latest/meta_data.json": b'{"uuid": "0b4c5f3a", "hostname": "vm"}' * 20,
        "openstack/latest/network_data.json": b'{"links": [], "networks": []}',
        "openstack/latest/vendor_data2.json": b"{}",
        "openstack/latest/user_data": bytes(range(256)) * 3 + b"\x00\xff\xfe",
        "openstack/content/0000": b"injected file\n",
        "ec2/latest/meta-data.json": b'{"instance-id": "i-00000001"}',
        "ec2/2009-04-04/meta-data.json": b'{"ami-id": "ami-1"}',
        "openstack/latest/empty": b"",
        "big/seventy-kib.bin": bytes((i * 7 + i // 251) % 256 for i in range(70 * 1024)),
        "Mixed.Case.Name.With.Dots.TXT": b"mixed case, many dots",
        "archive.tar.gz": b"\x1f\x8b",
        "UPPER.lower.Mixed": b"three dots",
        "README": b"a valid uppercase 8.3 name",
        "Foo Bar.txt": b"space",
        "ünïcode-名前.txt": "ünï 名前\n".encode(),
        LONG_NAME: b"100 chars",
    }
    for i in range(300):
        tree[f"many/entry_number_{i:03d}.json"] = b'{"n": %d}' % i
    return tree


def directories(tree: dict[str, bytes]) -> set[str]:
    return {p.rsplit("/", i)[0] for p in tree for i in range(1, p.count("/") + 1)}


def make_image(tmp_path: Path, tree: dict[str, bytes], size: int | None, **kw: object) -> Path:
    img = tmp_path / "drive.img"
    with img.open("wb") as f:
        label = str(kw.get("label", "config-2"))
        n = write_vfat(tree, f, label=label, size=size, timestamp=TS)
    assert img.stat().st_size == n
    return img


def mcopy_extract(sh: Sh, img: Path, dest: Path) -> dict[str, bytes]:
    dest.mkdir()
    sh(["mcopy", "-s", "-n", "-i", str(img), "::/", str(dest)])
    return {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def fsck(sh: Sh, img: Path) -> str:
    proc = sh(["fsck.vfat", "-n", "-v", str(img)], check=False)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out
    complaints = [ln for ln in out.splitlines() if re.search(r"error|fix|differ|bad", ln, re.I)]
    assert not complaints, out
    return out


def blkid(sh: Sh, img: Path) -> dict[str, str]:
    out = sh(["blkid", "-p", "-o", "export", str(img)]).stdout.decode()
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def tree() -> dict[str, bytes]:
    return config_tree()


@pytest.fixture(params=list(MODES))
def image(request: pytest.FixtureRequest, tmp_path: Path, tree: dict[str, bytes]) -> Path:
    return make_image(tmp_path, tree, MODES[request.param])


# --- independent tools ------------------------------------------------------------------------


@pytest.mark.tools
def test_fsck_accepts_image_and_sees_every_entry(
    sh: Sh, image: Path, tree: dict[str, bytes]
) -> None:
    out = fsck(sh, image)
    entries = len(tree) + len(directories(tree)) + 1  # + the volume label entry
    assert re.search(rf": {entries} files, \d+/\d+ clusters", out), out


@pytest.mark.tools
def test_blkid_type_and_labels(sh: Sh, image: Path) -> None:
    info = blkid(sh, image)
    assert info["TYPE"] == "vfat"
    assert info["LABEL"] == "config-2"
    assert info["LABEL_FATBOOT"] == "config-2"
    size = image.stat().st_size
    assert info["VERSION"] == ("FAT16" if size == NOVA_VFAT_SIZE else "FAT12")


@pytest.mark.tools
def test_mcopy_extracts_the_tree_exactly(sh: Sh, image: Path, tree: dict[str, bytes]) -> None:
    got = mcopy_extract(sh, image, image.parent / "out")
    assert sorted(got) == sorted(tree)
    assert got == tree


@pytest.mark.tools
def test_mdir_shows_label_names_and_dates(sh: Sh, image: Path) -> None:
    root = sh(["mdir", "-i", str(image), "::"]).stdout.decode()
    assert "Volume in drive : is config-2" in root
    assert LONG_NAME in root and "Mixed.Case.Name.With.Dots.TXT" in root
    # README is a valid uppercase 8.3 name: a short entry only, no long name after it
    assert re.search(r"^README\s+\d+ 2024-05-06\s+7:08\s*$", root, re.M), root
    listing = sh(["mdir", "-/", "-i", str(image), "::"]).stdout.decode()
    assert "Directory for ::/openstack/latest" in listing
    assert listing.count(" 2024-05-06 ") >= 300


@pytest.mark.tools
def test_short_names_are_unique_with_numeric_tails(sh: Sh, image: Path) -> None:
    out = sh(["mdir", "-i", str(image), "::/many"]).stdout.decode()
    rows = [ln for ln in out.splitlines() if "entry_number_" in ln]
    assert len(rows) == 300
    shorts = [ln[:12] for ln in rows]
    assert len(set(shorts)) == 300
    assert all(s == s.upper() for s in shorts)
    assert "ENTRY_~1 JSO" in shorts and "ENTRY~10 JSO" in shorts and "ENTR~100 JSO" in shorts


@pytest.mark.tools
def test_directory_of_300_files_spans_clusters(
    sh: Sh, tmp_path: Path, tree: dict[str, bytes]
) -> None:
    img = make_image(tmp_path, tree, NOVA_VFAT_SIZE)
    cluster = int(re.search(r"(\d+) bytes per cluster", fsck(sh, img)).group(1))  # type: ignore[union-attr]
    assert 300 * 2 * 32 > 4 * cluster  # 300 long + short entries: several clusters
    got = mcopy_extract(sh, img, tmp_path / "out")
    assert {p: d for p, d in got.items() if p.startswith("many/")} == {
        p: d for p, d in tree.items() if p.startswith("many/")
    }


@pytest.mark.tools
@pytest.mark.parametrize("size", [None, NOVA_VFAT_SIZE])
def test_file_of_several_mib(sh: Sh, tmp_path: Path, size: int | None) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    tree = {"blob/large.bin": data, "small": b"s"}
    img = make_image(tmp_path, tree, size)
    fsck(sh, img)
    assert mcopy_extract(sh, img, tmp_path / "out") == tree


@pytest.mark.tools
def test_nocloud_seed_is_small_fat12_cidata(sh: Sh, tmp_path: Path) -> None:
    tree = {"meta-data": b"instance-id: iid-1\n", "user-data": b"#cloud-config\n"}
    img = make_image(tmp_path, tree, None, label="cidata")
    info = blkid(sh, img)
    assert (info["TYPE"], info["LABEL"], info["LABEL_FATBOOT"]) == ("vfat", "cidata", "cidata")
    assert info["VERSION"] == "FAT12"
    assert img.stat().st_size <= 128 * 1024  # no larger than cloud-localds's image
    fsck(sh, img)
    assert mcopy_extract(sh, img, tmp_path / "out") == tree


@pytest.mark.tools
def test_fit_size_leaves_a_little_slack(sh: Sh, tmp_path: Path, tree: dict[str, bytes]) -> None:
    img = make_image(tmp_path, tree, None)
    m = re.search(r": \d+ files, (\d+)/(\d+) clusters", fsck(sh, img))
    assert m, "fsck printed no summary"
    used, total = int(m.group(1)), int(m.group(2))
    assert used < total <= used * 1.25 + 16
    # every file takes at least one 512-byte sector; the rest is FATs, directories and slack
    floor = sum(-(-len(d) // 512) * 512 for d in tree.values())
    assert img.stat().st_size < floor * 1.25 + 64 * 1024


@pytest.mark.tools
def test_nova_geometry_matches_mkfs_vfat(sh: Sh, tmp_path: Path, tree: dict[str, bytes]) -> None:
    """nova runs ``mkfs -t vfat -n config-2`` on a 64 MiB file: same BPB layout as fsck sees it."""
    ours = make_image(tmp_path, tree, NOVA_VFAT_SIZE)
    theirs = tmp_path / "mkfs.img"
    sh(["mkfs.vfat", "-n", "config-2", "-C", str(theirs), str(NOVA_VFAT_SIZE // 1024)])
    keys = re.compile(r"per cluster|reserved|FATs|per FAT|[Rr]oot directory|Data area|"
                      r"data clusters|sectors total|Media byte")  # fmt: skip

    def layout(img: Path) -> list[str]:
        return [ln.strip() for ln in fsck(sh, img).splitlines() if keys.search(ln)]

    assert len(layout(theirs)) == 10
    assert layout(ours) == layout(theirs)


@pytest.mark.tools
def test_empty_label_means_no_label(sh: Sh, tmp_path: Path) -> None:
    img = make_image(tmp_path, {"a": b"a"}, None, label="")
    info = blkid(sh, img)
    assert info["TYPE"] == "vfat" and "LABEL" not in info and "LABEL_FATBOOT" not in info
    assert fsck(sh, img).count(" files, ") == 1
    assert "has no label" in sh(["mdir", "-i", str(img), "::"]).stdout.decode()
    with img.open("rb") as f:
        assert read_vfat(f).label == ""


@pytest.mark.tools
def test_reader_reads_mkfs_and_mcopy_image(sh: Sh, tmp_path: Path, tree: dict[str, bytes]) -> None:
    src = tmp_path / "src"
    for path, data in tree.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    img = tmp_path / "mkfs.img"
    sh(["mkfs.vfat", "-n", "config-2", "-C", str(img), "1024"])
    sh(["mcopy", "-s", "-i", str(img), *sorted(str(p) for p in src.iterdir()), "::/"])
    with img.open("rb") as f:
        assert is_vfat(f)
        got = read_vfat(f)
    assert got.label == "config-2"
    assert got.fat_bits == 12
    assert got.files == tree


@pytest.mark.tools
def test_given_size_too_small_says_what_fits(
    sh: Sh, tmp_path: Path, tree: dict[str, bytes]
) -> None:
    with pytest.raises(DriveError, match=r"needs at least (\d+) bytes") as exc:
        vfat_image(tree, label="config-2", size=256 * 1024)
    need = int(re.search(r"needs at least (\d+) bytes", str(exc.value)).group(1))  # type: ignore[union-attr]
    assert 256 * 1024 < need < 2 * 1024 * 1024
    img = make_image(tmp_path, tree, need)  # the size the message names is enough
    fsck(sh, img)
    assert mcopy_extract(sh, img, tmp_path / "out") == tree
    with pytest.raises(DriveError):
        vfat_image(tree, label="config-2", size=need - 4096)


@pytest.mark.tools
def test_sparse_nova_image_costs_little_disk(
    sh: Sh, tmp_path: Path, tree: dict[str, bytes]
) -> None:
    img = make_image(tmp_path, tree, NOVA_VFAT_SIZE)
    st_ = img.stat()
    assert st_.st_size == NOVA_VFAT_SIZE
    assert st_.st_blocks * 512 < 4 * 1024 * 1024, st_.st_blocks
    # fsck's first step reads the last sector: the sparse tail is really part of the image
    assert "Checking we can access the last sector" in fsck(sh, img)


@pytest.mark.tools
def test_timestamps_and_serial_come_from_timestamp(sh: Sh, tmp_path: Path) -> None:
    tree = {"a.txt": b"a"}
    a = vfat_image(tree, label="config-2", timestamp=datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC))
    img = tmp_path / "a.img"
    img.write_bytes(a)
    out = sh(["mdir", "-i", str(img), "::"]).stdout.decode()
    assert re.search(r"a\.txt\s*$", out, re.M) and "2031-02-03   4:05" in out, out
    serial = re.search(r"Serial Number is (\S+)", out).group(1)  # type: ignore[union-attr]
    assert blkid(sh, img)["UUID"] == serial
    b = vfat_image({"b": b"b"}, label="config-2", timestamp=datetime(2031, 2, 3, 4, 5, 6))
    assert b[39:43] == a[39:43]  # BS_VolID: same timestamp, same serial


DATED_TREE = {
    "openstack/latest/meta_data.json": b"{}",
    "openstack/content/0000": b"x",
    "ec2/latest/meta-data.json": b"{}",
    "top.txt": b"t",
}
DATED_DIRS, DATED_FILES = 5, 4
PLUS_90 = timezone(timedelta(hours=1, minutes=30))


def _dos(date: int, time: int = 0) -> datetime:
    """fatgen103 "Date and Time Formats", decoded here: the test's own reading."""
    return datetime(1980 + (date >> 9), date >> 5 & 15, date & 31,
                    time >> 11, time >> 5 & 63, 2 * (time & 31))  # fmt: skip


@pytest.mark.tools
@pytest.mark.parametrize(
    ("ts", "created", "written"),
    [  # (timestamp, creation time kept to 10 ms, write time in 2-second units)
        (
            datetime(2031, 2, 3, 4, 5, 7, tzinfo=UTC),
            datetime(2031, 2, 3, 4, 5, 7),
            datetime(2031, 2, 3, 4, 5, 6),
        ),
        (
            datetime(2031, 2, 3, 4, 5, 8, 370000),
            datetime(2031, 2, 3, 4, 5, 8, 370000),
            datetime(2031, 2, 3, 4, 5, 8),
        ),
        (
            datetime(2031, 2, 3, 5, 35, 9, tzinfo=PLUS_90),
            datetime(2031, 2, 3, 4, 5, 9),
            datetime(2031, 2, 3, 4, 5, 8),
        ),
        (datetime(1970, 1, 1, tzinfo=UTC), datetime(1980, 1, 1), datetime(1980, 1, 1)),
        (
            datetime(2200, 1, 1, tzinfo=UTC),
            datetime(2107, 12, 31, 23, 59, 59),
            datetime(2107, 12, 31, 23, 59, 58),
        ),
    ],  # fmt: skip
    ids=["odd-second", "hundredths", "offset", "before-1980", "after-2107"],
)
def test_dos_dates_and_seconds_read_back(
    tool: Callable[[str], str], tmp_path: Path, ts: datetime, created: datetime, written: datetime
) -> None:
    img = tmp_path / "dated.img"
    img.write_bytes(vfat_image(DATED_TREE, label="config-2", timestamp=ts))
    # mtools decodes DIR_WrtDate/DIR_WrtTime: mdir prints the date and the minute of every
    # entry, mcopy -m sets each extracted entry's mtime from them (its seconds are checked as
    # the time of day: mtools counts 2100 as a leap year, so its dates after February 2100 are
    # a day late)
    env = {**os.environ, "TZ": "UTC"}
    listing = subprocess.run([tool("mdir"), "-/", "-i", str(img), "::"], capture_output=True,
                             env=env, check=True).stdout.decode()  # fmt: skip
    shown = re.findall(r" (\d{4}-\d\d-\d\d) +(\d+):(\d\d) ", listing)
    assert len(shown) == 3 * DATED_DIRS + DATED_FILES, listing  # ".", ".." and entries
    assert set(shown) == {(f"{written:%Y-%m-%d}", str(written.hour), f"{written:%M}")}, listing
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([tool("mcopy"), "-s", "-m", "-n", "-i", str(img), "::/", str(out)],
                          capture_output=True, env=env, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    mtimes = {str(p.relative_to(out)): p.stat().st_mtime % 86400 for p in out.rglob("*")}
    assert len(mtimes) == DATED_DIRS + DATED_FILES, mtimes
    of_day = written.hour * 3600 + written.minute * 60 + written.second
    assert mtimes == dict.fromkeys(mtimes, of_day), mtimes
    # every short entry (the label, ".", "..", directories, files), decoded at fatgen103's
    # offsets: CrtTimeTenth 13, CrtTime 14, CrtDate 16, LstAccDate 18, WrtTime 22, WrtDate 24
    raw = img.read_bytes()
    entries = [raw[o : o + 32] for o in range(0, len(raw), 32)
               if raw[o] not in (0, 0xE5) and raw[o + 11] in (0x08, 0x10, 0x20)]  # fmt: skip
    assert len(entries) == 1 + 3 * DATED_DIRS + DATED_FILES, len(entries)
    for e in entries:
        tenth, ctime, cdate, adate = e[13], *struct.unpack_from("<HHH", e, 14)
        wtime, wdate = struct.unpack_from("<HH", e, 22)
        assert _dos(wdate, wtime) == written, e
        assert _dos(cdate, ctime) + timedelta(milliseconds=10 * tenth) == created, e
        assert 0 <= tenth <= 199 and _dos(adate) == written.replace(hour=0, minute=0, second=0)


@pytest.mark.tools
def test_corrupt_lfn_checksum_falls_back_to_short_name(sh: Sh, tmp_path: Path) -> None:
    data = bytearray(vfat_image({"lower-case-name.txt": b"x"}, label="config-2"))
    with io.BytesIO(bytes(data)) as f:
        assert list(read_vfat(f).files) == ["lower-case-name.txt"]
    root = data.index(b"config-2   \x08")  # the volume label entry opens the root directory
    lfn = root + 32
    assert data[lfn + 11] == 0x0F  # LDIR_Attr == ATTR_LONG_NAME
    data[lfn + 13] ^= 0xFF  # LDIR_Chksum
    img = tmp_path / "bad.img"
    img.write_bytes(data)
    shown = sh(["mdir", "-i", str(img), "::"]).stdout.decode()
    assert "lower-case-name.txt" not in shown
    with img.open("rb") as f:
        assert list(read_vfat(f).files) == ["LOWER-~1.TXT"]
    assert "LOWER-~1 TXT" in shown


@settings(
    max_examples=int(os.environ.get("VFAT_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.lists(
            st.text(st.sampled_from("abcXYZ019_-~.+,;=[] é名"), min_size=1, max_size=40).filter(
                lambda s: s.rstrip(". ") == s
            ),
            min_size=1,
            max_size=3,
        ).map("/".join),
        st.binary(max_size=3000),
        max_size=25,
    ),
    st.sampled_from([None, 1024 * 1024]),
)
@pytest.mark.tools
def test_random_trees_extract_exactly(sh: Sh, tree: dict[str, bytes], size: int | None) -> None:
    try:
        image = vfat_image(tree, label="cidata", size=size)
    except DriveError as exc:  # only case-folded duplicates and file/dir clashes are refused
        assert "same FAT name" in str(exc) or "both a file and a directory" in str(exc)
        return
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "r.img"
        img.write_bytes(image)
        fsck(sh, img)
        assert mcopy_extract(sh, img, Path(tmp) / "out") == tree
        assert read_vfat(io.BytesIO(image)).files == tree


# --- the reader and the writer's rules --------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_reader_reads_own_image(tree: dict[str, bytes], mode: str) -> None:
    image = vfat_image(tree, label="config-2", size=MODES[mode], timestamp=TS)
    got = read_vfat(io.BytesIO(image))
    assert got == VfatContents("config-2", tree, 16 if mode == "nova" else 12)


def test_deterministic(tree: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    a = vfat_image(tree, label="config-2", timestamp=TS)
    b = vfat_image(dict(reversed(list(tree.items()))), label="config-2", timestamp=TS)
    assert a == b
    assert vfat_image(tree, label="config-2", timestamp=datetime(2024, 5, 7)) != a
    # no timestamp: SOURCE_DATE_EPOCH, the build time the whole drive shares
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(TS.replace(tzinfo=UTC).timestamp())))
    assert vfat_image(tree, label="config-2") == a
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1714979290.5")
    with pytest.raises(SpecError, match="SOURCE_DATE_EPOCH: '1714979290.5' is not a whole"):
        vfat_image(tree, label="config-2")


class Counting(io.BytesIO):
    """An output that counts the bytes written to it (seeks over holes are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, b: object) -> int:
        n = super().write(b)  # type: ignore[arg-type]
        self.written += n
        return n


def test_write_is_sparse_and_returns_size(tree: dict[str, bytes]) -> None:
    out = Counting()
    assert write_vfat(tree, out, label="config-2", size=NOVA_VFAT_SIZE) == NOVA_VFAT_SIZE
    assert len(out.getvalue()) == NOVA_VFAT_SIZE
    assert out.written < 2 * 1024 * 1024


def test_fit_mode_writes_the_tree_not_a_blank_volume() -> None:
    """What made fit mode slow would be writing (or zeroing) more than the tree needs: only
    the metadata areas and the file bytes are written, and the volume is sized to the tree."""
    tree = {f"openstack/v{v}/file{i}.json": b"x" * 1024 for v in range(3) for i in range(20)}

    out = Counting()
    size = write_vfat(tree, out, label="config-2", timestamp=TS)
    data = sum(map(len, tree.values()))  # 60 KiB in 60 files of one 2 KiB cluster or less
    assert size < 4 * data  # not 64 MiB: sized to fit, clusters and slack included
    metadata = 512 + 2 * 512 + 512 * 32 + 4 * 2048  # boot, FATs (< 1 sector), root, 4 dirs
    assert data + metadata < size  # so a writer that zero-fills the volume fails below
    assert data <= out.written <= data + metadata, (out.written, data, metadata)


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "a//b", "a/", "./a", "a/../b", "..", "a*b", "a:b", 'a"b', "a<b", "a>b",
     "a?b", "a\\b", "a|b", "a\x01b", "a\tb", "x" * 256, "dot.", "space ", "emoji-\U0001f600"],
)  # fmt: skip
def test_bad_paths_rejected(path: str) -> None:
    with pytest.raises(DriveError):
        vfat_image({path: b"x"}, label="config-2")


@pytest.mark.parametrize(
    "tree",
    [{"Readme": b"", "README": b""}, {"a": b"", "a/b": b""}, {"d/x": b"", "D/y": b""}],
)
def test_clashing_paths_rejected(tree: dict[str, bytes]) -> None:
    with pytest.raises(DriveError):
        vfat_image(tree, label="config-2")


@pytest.mark.parametrize("label", ["twelve-bytes", "kõnfig", "a.b", " lead", "a*b"])
def test_bad_labels_rejected(label: str) -> None:
    with pytest.raises(DriveError, match="label"):
        vfat_image({}, label=label)


def test_255_character_names_round_trip() -> None:
    tree = {"n" * 255: b"1", "d" * 255 + "/" + "é" * 255: b"2", "x" * 13: b"3", "y" * 26: b"4"}
    assert read_vfat(io.BytesIO(vfat_image(tree, label="config-2"))).files == tree


def test_unsupported_sizes_rejected() -> None:
    with pytest.raises(DriveError, match="multiple of 512"):
        vfat_image({}, label="config-2", size=NOVA_VFAT_SIZE + 1)
    with pytest.raises(DriveError, match="no valid FAT12/FAT16"):
        vfat_image({}, label="config-2", size=4096)


def _junk() -> dict[str, bytes]:
    good = vfat_image(config_tree(), label="config-2", size=2 * 1024 * 1024)
    no_sig = bytearray(good)
    no_sig[510:512] = b"\0\0"
    fat32 = bytearray(good)
    fat32[22:24] = b"\0\0"  # BPB_FATSz16 = 0 means FAT32
    return {
        "empty": b"",
        "zeros": bytes(64 * 1024),
        "random": bytes((i * 131 + 7) % 256 for i in range(64 * 1024)),
        "short": good[:300],
        "truncated": good[: len(good) // 2],
        "no-signature": bytes(no_sig),
        "fat32": bytes(fat32),
        "iso": bytes(32768) + b"\x01CD001\x01" + bytes(4096),
    }


@pytest.mark.parametrize("name", list(_junk()))
def test_reader_rejects_junk(name: str) -> None:
    f = io.BytesIO(_junk()[name])
    assert not is_vfat(f)
    assert f.tell() == 0
    with pytest.raises(InvalidDrive):
        read_vfat(f)


@pytest.mark.parametrize(
    ("cluster", "error"), [(2, "loops"), (0, "invalid cluster"), (4000, "invalid cluster")]
)
def test_reader_rejects_broken_cluster_chain(cluster: int, error: str) -> None:
    image = bytearray(vfat_image({"a.bin": bytes(5000)}, label="config-2", size=1024 * 1024))
    assert read_vfat(io.BytesIO(bytes(image))).fat_bits == 12
    fat = 512 * int.from_bytes(image[14:16], "little")  # BPB_RsvdSecCnt
    # "a.bin" starts at cluster 2: FAT12 entry 2 is the low 12 bits of FAT bytes 3..4
    old = int.from_bytes(image[fat + 3 : fat + 5], "little")
    assert old & 0xFFF == 3
    image[fat + 3 : fat + 5] = ((old & 0xF000) | (cluster & 0xFFF)).to_bytes(2, "little")
    with pytest.raises(InvalidDrive, match=error):
        read_vfat(io.BytesIO(bytes(image)))


def test_is_vfat_keeps_position(tree: dict[str, bytes]) -> None:
    f = io.BytesIO(vfat_image(tree, label="config-2"))
    f.seek(77)
    assert is_vfat(f)
    assert f.tell() == 77


def test_long_name_entries_follow_the_spec() -> None:
    """fatgen103 "FAT Long Directory Entries", checked on the raw bytes: entries stored last
    first, LAST_LONG_ENTRY on the first, NUL then 0xFFFF padding, checksum of the short name."""
    name = "a-long-name-of-30-characters.x"  # 30 UCS-2 chars: 3 entries, NUL + 8 x 0xFFFF
    image = vfat_image({name: b"x"}, label="config-2")
    root = image.index(b"config-2   \x08") + 32
    entries = [image[root + 32 * i : root + 32 * (i + 1)] for i in range(4)]
    assert [e[0] for e in entries[:3]] == [0x43, 0x02, 0x01]
    assert all(e[11] == 0x0F and e[12] == 0 and e[26:28] == b"\0\0" for e in entries[:3])
    short = entries[3][:11]
    assert short == b"A-LONG~1X  "
    chk = 0
    for b in short:
        chk = (((chk & 1) << 7) + (chk >> 1) + b) & 0xFF
    assert {e[13] for e in entries[:3]} == {chk}
    units = b"".join(e[1:11] + e[14:26] + e[28:32] for e in reversed(entries[:3]))
    assert units == name.encode("utf-16-le") + b"\0\0" + b"\xff\xff" * 8
