"""The image cache's inventory and pruning: `configdrive image list` and `image prune`.

Entries are real folders holding real qcow2 files (qemu-img); an instance disk is a real
overlay on one of them, and a build in progress holds the entry's real lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configdrive.compute import InstanceRecord
from configdrive.guest.cloudimage import current_cache_names
from configdrive.guest.diskimage import qcow2_backing
from configdrive.guest.image import ImageVariant, cache_entries, image_key, prune_cache

pytestmark = pytest.mark.tools

CURRENT = f"tuned-{image_key(ImageVariant.TUNED)[:16]}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


def entry(cache: Path, name: str) -> Path:
    folder = cache / name
    folder.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(folder / "disk.qcow2"), "16M"],
                   check=True)  # fmt: skip
    (cache / f".{name}.lock").touch()
    return folder


def overlay(instances: Path, base: Path, *, relative: bool = False) -> Path:
    """An instance directory as boot leaves it: instance.json and a disk overlaid on ``base``."""
    directory = instances / ("rel" if relative else "abs")
    directory.mkdir(parents=True)
    disk = directory / "disk"
    backing = os.path.relpath(base, directory) if relative else str(base)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing,
                    str(disk)], check=True)  # fmt: skip
    record = InstanceRecord(
        name=directory.name, uuid="6f2a1c00-0000-4000-8000-000000000001", path=directory,
        backend="qemu", accel="tcg", accel_reason="test", machine="pc", flavor="m1.tiny",
        config_drive=None, created="2026-12-04T00:00:00+00:00", spec={"disk": str(disk)},
    )  # fmt: skip
    (directory / "instance.json").write_text(record.to_json())
    return disk


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    entry(root, CURRENT)
    entry(root, "tuned-0000000000000000")  # stale: no recipe builds it
    entry(root, "debian-12-fast-1111111111111111")  # stale, but an instance uses it
    entry(root, "debian-12-stock-2222222222222222")  # stale, but a build holds its lock
    return root


def test_the_current_names_are_what_the_builders_name_their_entries() -> None:
    names = current_cache_names()
    assert CURRENT in names
    assert any(n.startswith("debian-13-fast-minus-ssh-keys-") for n in names)
    assert len(names) == len(ImageVariant) + 2 * (4 + 6)  # 4 cloud variants, 6 fast-minus


def test_qcow2_backing_reads_the_header(tmp_path: Path) -> None:
    base = entry(tmp_path, "b") / "disk.qcow2"
    disk = overlay(tmp_path / "i", base, relative=True)
    found = qcow2_backing(disk)
    assert found is not None and found.resolve() == base
    assert qcow2_backing(base) is None  # no backing file
    (tmp_path / "raw").write_bytes(b"\0" * 4096)
    assert qcow2_backing(tmp_path / "raw") is None and qcow2_backing(tmp_path / "no") is None


def test_prune_keeps_current_used_and_locked_entries(cache: Path, tmp_path: Path) -> None:
    used = overlay(tmp_path / "instances", cache / "debian-12-fast-1111111111111111/disk.qcow2")
    entries = cache_entries(cache, current_cache_names(), [used])
    by_name = {e.name: e for e in entries}
    assert by_name[CURRENT].current and not by_name[CURRENT].prunable
    assert by_name["debian-12-fast-1111111111111111"].used_by == (str(used),)
    assert by_name["tuned-0000000000000000"].size > 0
    assert [e.name for e in prune_cache(cache, entries, dry_run=True)] == [
        "debian-12-stock-2222222222222222", "tuned-0000000000000000"
    ]  # fmt: skip
    assert all(e.path.is_dir() for e in entries)  # a dry run removes nothing
    fd = os.open(cache / ".debian-12-stock-2222222222222222.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a build of that image is running
        removed = prune_cache(cache, entries)
    finally:
        os.close(fd)
    assert [e.name for e in removed] == ["tuned-0000000000000000"]
    assert sorted(p.name for p in cache.iterdir()) == sorted([
        CURRENT, f".{CURRENT}.lock", "debian-12-fast-1111111111111111",
        ".debian-12-fast-1111111111111111.lock", "debian-12-stock-2222222222222222",
        ".debian-12-stock-2222222222222222.lock",
    ])  # fmt: skip
    # the overlay still opens: its backing file is there
    subprocess.run(["qemu-img", "info", "-U", str(used)], check=True, capture_output=True)


def test_cli_list_and_prune(cache: Path, tmp_path: Path) -> None:
    instances = tmp_path / "instances"
    overlay(instances, cache / "debian-12-fast-1111111111111111/disk.qcow2", relative=True)
    args = ("--cache-dir", str(cache), "--instances-path", str(instances))
    listed = cli("image", "list", *args, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows[CURRENT]["current"] and not rows["tuned-0000000000000000"]["current"]
    assert len(rows["debian-12-fast-1111111111111111"]["used_by"]) == 1
    dry = cli("image", "prune", *args, "--dry-run")
    assert dry.returncode == 0 and "2 image(s), would free" in dry.stdout, dry.stderr
    assert (cache / "tuned-0000000000000000").is_dir()
    pruned = cli("image", "prune", *args, "--json")
    assert pruned.returncode == 0, pruned.stderr
    gone = sorted(r["name"] for r in json.loads(pruned.stdout) if r["removed"])
    assert gone == ["debian-12-stock-2222222222222222", "tuned-0000000000000000"]
    assert not (cache / "tuned-0000000000000000").exists()
    assert (cache / "debian-12-fast-1111111111111111").is_dir() and (cache / CURRENT).is_dir()
    bad = cli("image", "prune", "--cache-dir", str(tmp_path / "none"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: cache-dir:"), bad.stderr
