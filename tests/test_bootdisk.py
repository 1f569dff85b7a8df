"""The cloud-shaped boot disk (configdrive.guest.bootdisk), judged by sfdisk, blkid, e2fsck,
fsck.vfat and mtools, and booted by SeaBIOS and OVMF from the disk itself (no -kernel).

The GRUB modules are Debian's (grub-pc-bin, grub-efi-amd64-bin, installed by
scripts/setup --system); the boots run under TCG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from configdrive.guest import bootdisk
from configdrive.guest.bootdisk import BootDiskError

Sh = Callable[..., subprocess.CompletedProcess[bytes]]
GRUB_LIB = Path("/usr/lib/grub")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MARKER = "root-filesystem-found-by-uuid"
SIZE = 512 * bootdisk.MIB


def _grub_cfg() -> str:
    # runs from the ext4 root: reading the marker shows that GRUB's embedded config found
    # the root filesystem by its UUID and loaded modules from it
    return (
        "echo CONFIGDRIVE-GRUB platform=$grub_platform root=$root\n"
        "cat /boot/marker\n"
        "echo CONFIGDRIVE-GRUB end\n"
        "reboot\n"
    )


@pytest.fixture(scope="module")
def disk(
    tmp_path_factory: pytest.TempPathFactory, tool: Callable[[str], str]
) -> tuple[Path, bootdisk.DiskLayout]:
    for name in ("grub-mkimage", "sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy"):
        tool(name)
    if not (GRUB_LIB / "i386-pc").is_dir() or not (GRUB_LIB / "x86_64-efi").is_dir():
        pytest.fail("GRUB modules missing: run scripts/setup --system", pytrace=False)
    work = tmp_path_factory.mktemp("bootdisk")
    tree = work / "tree"
    (tree / "boot/grub").mkdir(parents=True)
    for target in ("i386-pc", "x86_64-efi"):
        shutil.copytree(GRUB_LIB / target, tree / "boot/grub" / target)
    (tree / "boot/grub/grub.cfg").write_text(_grub_cfg())
    (tree / "boot/marker").write_text(f"CONFIGDRIVE-GRUB marker={MARKER}\n")
    layout = bootdisk.layout(SIZE, "test-disk")
    images = bootdisk.grub_images(GRUB_LIB, layout.root_fs_uuid, work)
    image = work / "disk.raw"
    bootdisk.make_disk(image, layout, tree, images, esp_files={"extra/hello.txt": b"hi\n"})
    return image, layout


@pytest.mark.tools
def test_the_partition_table_is_debians(disk: tuple[Path, bootdisk.DiskLayout], sh: Sh) -> None:
    image, layout = disk
    table = json.loads(sh(["sfdisk", "--json", str(image)]).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    assert table["id"].lower() == layout.disk_uuid
    parts = {int(p["node"].removeprefix(str(image))): p for p in table["partitions"]}
    assert sorted(parts) == [1, 14, 15]
    mib = 2048  # sectors
    assert (parts[14]["start"], parts[14]["size"]) == (1 * mib, 3 * mib)
    assert (parts[15]["start"], parts[15]["size"]) == (4 * mib, 124 * mib)
    assert parts[1]["start"] == 128 * mib
    assert parts[1]["start"] + parts[1]["size"] == SIZE // 512 - 33  # to the backup GPT
    assert parts[14]["type"] == "21686148-6449-6E6F-744E-656564454649"  # BIOS boot
    assert parts[15]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC3B9"  # EFI system
    assert parts[1]["type"] == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64)
    assert parts[1]["uuid"].lower() == layout.root.uuid


@pytest.mark.tools
def test_the_filesystems_pass_their_own_checkers(
    disk: tuple[Path, bootdisk.DiskLayout], sh: Sh
) -> None:
    image, layout = disk
    root = sh(["blkid", "-p", "-O", str(layout.root.offset), "-o", "export", str(image)])
    fields = dict(line.split("=", 1) for line in root.stdout.decode().split())
    assert fields["TYPE"] == "ext4"
    assert fields["UUID"] == layout.root_fs_uuid
    sh(["e2fsck", "-fn", f"{image}?offset={layout.root.offset}"])
    esp = sh(["blkid", "-p", "-O", str(layout.esp.offset), "-o", "export", str(image)])
    assert "TYPE=vfat" in esp.stdout.decode().split()
    # fsck.vfat has no offset option: check a copy of the partition
    part = image.with_name("esp.img")
    with open(image, "rb") as f:
        f.seek(layout.esp.offset)
        part.write_bytes(f.read(layout.esp.bytes))
    sh(["fsck.vfat", "-n", str(part)])
    efi = sh(["mtype", "-i", str(part), "::/EFI/BOOT/BOOTX64.EFI"]).stdout
    assert efi[:2] == b"MZ"  # a PE image
    assert sh(["mtype", "-i", str(part), "::/EFI/debian/grubx64.efi"]).stdout == efi
    assert sh(["mtype", "-i", str(part), "::/extra/hello.txt"]).stdout == b"hi\n"
    part.unlink()


@pytest.mark.tools
def test_the_same_seed_gives_the_same_ids_and_another_seed_other_ones() -> None:
    one, again, other = (bootdisk.layout(SIZE, s) for s in ("a", "a", "b"))
    assert one == again
    ids = lambda d: {d.root.uuid, d.esp.uuid, d.bios_boot.uuid, d.root_fs_uuid, d.disk_uuid}  # noqa: E731
    assert len(ids(one)) == 5
    assert not ids(one) & ids(other)


@pytest.mark.tools
@pytest.mark.parametrize("size", [100 * bootdisk.MIB, SIZE + 512])
def test_a_disk_size_debians_layout_cannot_take_is_refused(size: int) -> None:
    with pytest.raises(BootDiskError, match="whole number of MiB, at least 256 MiB"):
        bootdisk.layout(size, "x")


@pytest.mark.tools
def test_a_core_image_that_does_not_fit_or_is_not_grubs_is_refused(tmp_path: Path) -> None:
    layout = bootdisk.layout(SIZE, "x")
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 512)
    boot = (GRUB_LIB / "i386-pc/boot.img").read_bytes()
    core = (GRUB_LIB / "i386-pc/diskboot.img").read_bytes()
    with pytest.raises(BootDiskError, match="no partition table"):
        bootdisk.install_bios_boot(image, layout, boot, core)
    with pytest.raises(BootDiskError, match="does not start with GRUB's diskboot.img"):
        bootdisk.install_bios_boot(image, layout, boot, b"\0" * 1024)
    with pytest.raises(BootDiskError, match="the BIOS boot partition holds 3145728"):
        bootdisk.install_bios_boot(image, layout, boot, core + b"\0" * layout.bios_boot.bytes)
    assert image.read_bytes() == b"\0" * 512  # nothing written


def _boot(image: Path, firmware: str, tmp_path: Path) -> str:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 missing: run scripts/setup --system"
    console = tmp_path / f"{firmware}.log"
    argv = [qemu, "-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", f"file:{console}",
            "-drive", f"file={image},format=raw,if=virtio,snapshot=on"]  # fmt: skip
    if firmware == "uefi":
        assert OVMF_CODE.is_file(), "OVMF missing: run scripts/setup --system"
        vars_copy = tmp_path / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-machine", "q35",
                 "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]  # fmt: skip
    else:
        argv += ["-machine", "pc"]
    # a hang guard, not a speed check: GRUB's `reboot` ends QEMU (-no-reboot)
    subprocess.run(argv, check=True, timeout=120, env={**os.environ, "LC_ALL": "C"})
    return console.read_bytes().decode("utf-8", "replace")


@pytest.mark.vm
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_disk_boots_grub_under_each_firmware(
    disk: tuple[Path, bootdisk.DiskLayout], firmware: str, tmp_path: Path
) -> None:
    image, _ = disk
    text = _boot(image, firmware, tmp_path)
    platform = {"bios": "pc", "uefi": "efi"}[firmware]
    assert f"CONFIGDRIVE-GRUB platform={platform}" in text, text[-2000:]
    assert f"CONFIGDRIVE-GRUB platform={platform} root=hd0,gpt1" in text, text[-2000:]
    assert f"CONFIGDRIVE-GRUB marker={MARKER}" in text, text[-2000:]
    assert "CONFIGDRIVE-GRUB end" in text
    assert "error:" not in text, text[-2000:]
