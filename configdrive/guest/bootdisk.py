"""A cloud-shaped boot disk, made in an image file without mounting anything.

The layout is Debian's genericcloud amd64 image (one hybrid GPT disk that boots under BIOS and
UEFI alike, docs/guest-images.md):

    p14  1 MiB    3 MiB    BIOS boot partition: GRUB's i386-pc core.img, no filesystem
    p15  4 MiB    124 MiB  EFI system partition: FAT, GRUB's x86_64-efi image at the
                           removable path EFI/BOOT/BOOTX64.EFI (OVMF finds it with no NVRAM entry)
    p1   128 MiB  rest     Linux root (x86-64), ext4

Every step works on the image file itself: ``sfdisk`` writes the table, ``mkfs.ext4 -E
offset=`` and ``mkfs.vfat --offset`` write the filesystems in place, mtools copies into the
ESP, and :func:`install_bios_boot` does what ``grub-bios-setup`` does for a GPT disk with a
BIOS boot partition, in Python: ``grub-bios-setup`` insists on probing the device that holds
its module directory (the build host's own root disk), so it cannot be pointed at an image file.

Nothing here knows about Debian: :mod:`configdrive.guest` feeds it a root tree and GRUB's
module directories.
"""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from configdrive.errors import ConfigDriveError
from configdrive.run import find_tool, run

__all__ = [
    "BIOS_BOOT",
    "ESP",
    "LINUX_ROOT_X86_64",
    "DiskLayout",
    "GrubImages",
    "Partition",
    "early_config",
    "grub_images",
    "install_bios_boot",
    "layout",
    "make_disk",
]

SECTOR = 512
MIB = 1024 * 1024
# GPT partition type GUIDs (sfdisk spells them upper case)
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC3B9"
LINUX_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # UAPI discoverable partitions

# GRUB i386-pc boot.img fields (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h)
_BPB_START, _BPB_END = 0x03, 0x5A
_KERNEL_SECTOR = 0x5C  # uint64: LBA of core.img's first sector
_BOOT_DRIVE = 0x64  # 0xff: use the drive the BIOS booted from
_DRIVE_CHECK = 0x66  # a 2-byte jmp; nop'd for hard disks, as grub-bios-setup does
_MBR_TABLE_START, _MBR_TABLE_END = 0x1B8, 0x1FE  # disk signature + partition table
# diskboot.img (core.img's first sector) ends with one blocklist entry:
# uint64 start, uint16 sectors, uint16 segment
_BLOCKLIST = SECTOR - 12
_CORE_SEGMENT = 0x820


class BootDiskError(ConfigDriveError):
    """A boot disk cannot be made as asked (sizes, GRUB images that do not fit)."""


@dataclass(frozen=True)
class Partition:
    number: int  # as Linux numbers it (vda14)
    type_guid: str
    start: int  # sectors
    size: int  # sectors
    uuid: str  # PARTUUID

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def bytes(self) -> int:
        return self.size * SECTOR


@dataclass(frozen=True)
class DiskLayout:
    size: int  # bytes
    bios_boot: Partition
    esp: Partition
    root: Partition
    root_fs_uuid: str
    disk_uuid: str


def _derived(seed: str, what: str) -> str:
    """A stable UUID for one part of the disk (same recipe, same disk)."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"configdrive-disk:{seed}:{what}"))


def layout(size: int, seed: str) -> DiskLayout:
    """Debian's offsets on a disk of ``size`` bytes; UUIDs derived from ``seed`` (Debian draws
    them at random per build; derived ones keep a cached image's recipe reproducible)."""
    if size % MIB or size < 256 * MIB:
        raise BootDiskError(f"disk size {size}: must be a whole number of MiB, at least 256 MiB")
    last_usable = size // SECTOR - 34  # the backup GPT takes the last 33 sectors
    root_start = 128 * MIB // SECTOR
    return DiskLayout(
        size=size,
        bios_boot=Partition(14, BIOS_BOOT, 2048, 6144, _derived(seed, "bios-boot")),
        esp=Partition(15, ESP, 8192, 253952, _derived(seed, "esp")),
        root=Partition(
            1, LINUX_ROOT_X86_64, root_start, last_usable + 1 - root_start, _derived(seed, "root")
        ),
        root_fs_uuid=_derived(seed, "root-fs"),
        disk_uuid=_derived(seed, "disk"),
    )


def _sfdisk_script(disk: DiskLayout) -> bytes:
    lines = ["label: gpt", f"label-id: {disk.disk_uuid}", "unit: sectors", "first-lba: 2048"]
    for part in sorted((disk.root, disk.bios_boot, disk.esp), key=lambda p: p.number):
        lines.append(
            f"{part.number}: start={part.start}, size={part.size}, type={part.type_guid}, "
            f"uuid={part.uuid}"
        )
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class GrubImages:
    core_img: bytes  # i386-pc: diskboot.img + kernel, for the BIOS boot partition
    boot_img: bytes  # i386-pc: the 512-byte MBR code
    efi: bytes  # x86_64-efi: BOOTX64.EFI


def early_config(root_fs_uuid: str, platform: str) -> str:
    """The config built into a GRUB image (what grub-install's load.cfg holds): find the root
    filesystem by its UUID, as Debian's images do, and set the prefix there; GRUB's normal mode
    then reads /boot/grub/grub.cfg with its commands loadable. GRUB talks on the serial port
    from the start, so that a failure before grub.cfg shows on the console log. Under UEFI the
    firmware's console is often the serial port itself (OVMF's is), so GRUB writes to its own
    serial terminal only; under BIOS to the serial port and the screen."""
    outputs = "serial" if platform == "efi" else "serial console"
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        f"terminal_output {outputs}\n"
        f"search --no-floppy --fs-uuid --set=root {root_fs_uuid}\n"
        "set prefix=($root)/boot/grub\n"
    )


BIOS_MODULES = ("biosdisk", "part_gpt", "ext2", "search", "normal", "serial", "terminal", "echo")
EFI_MODULES = ("part_gpt", "ext2", "fat", "search", "normal", "serial", "terminal", "echo")


def grub_images(
    grub_lib: Path,
    root_fs_uuid: str,
    work: Path,
    *,
    mkimage: str | None = None,
    chroot: Path | None = None,
) -> GrubImages:
    """Build GRUB's BIOS and EFI images from ``grub_lib`` (a ``/usr/lib/grub`` holding
    ``i386-pc`` and ``x86_64-efi``) with ``grub-mkimage``.

    With ``chroot``, the guest's own ``grub-mkimage`` runs chrooted there (GRUB's image format
    follows its version, so its modules go with its mkimage), ``grub_lib`` is a path inside
    the guest and ``work`` a folder under ``chroot``."""
    if chroot is not None:
        tool = [find_tool("chroot"), str(chroot), mkimage or "grub-mkimage"]

        def inside(path: Path) -> str:
            return "/" + str(path.relative_to(chroot))

        lib = chroot / grub_lib.relative_to("/")
    else:
        tool = [mkimage or find_tool("grub-mkimage")]

        def inside(path: Path) -> str:
            return str(path)

        lib = grub_lib
    early = work / "grub-early.cfg"
    out: dict[str, bytes] = {}
    for target, modules, name in (
        ("i386-pc", BIOS_MODULES, "core.img"),
        ("x86_64-efi", EFI_MODULES, "BOOTX64.EFI"),
    ):
        early.write_text(early_config(root_fs_uuid, target.split("-")[-1]))
        if not (lib / target / "kernel.img").is_file():
            raise BootDiskError(f"{lib / target}: not a GRUB {target} module directory")
        dest = work / name
        run([*tool, "-O", target, "-d", str(grub_lib / target), "-c", inside(early),
             "-p", "/boot/grub", "-o", inside(dest), *modules])  # fmt: skip
        out[name] = dest.read_bytes()
        dest.unlink()
    early.unlink()
    boot_img = (lib / "i386-pc" / "boot.img").read_bytes()
    if len(boot_img) != SECTOR:
        raise BootDiskError(f"{lib}/i386-pc/boot.img: {len(boot_img)} bytes, not {SECTOR}")
    return GrubImages(core_img=out["core.img"], boot_img=boot_img, efi=out["BOOTX64.EFI"])


def install_bios_boot(image: Path, disk: DiskLayout, boot_img: bytes, core_img: bytes) -> None:
    """Embed GRUB for BIOS: core.img into the BIOS boot partition, boot.img into the
    protective MBR, keeping its partition table (what ``grub-bios-setup`` writes)."""
    part = disk.bios_boot
    sectors = -(-len(core_img) // SECTOR)
    if sectors > part.size:
        raise BootDiskError(
            f"core.img is {len(core_img)} bytes; the BIOS boot partition holds {part.bytes}"
        )
    if len(core_img) < SECTOR or core_img[_BLOCKLIST + 10 : SECTOR] != struct.pack(
        "<H", _CORE_SEGMENT
    ):
        raise BootDiskError("core.img does not start with GRUB's diskboot.img")
    core = bytearray(core_img.ljust(sectors * SECTOR, b"\0"))
    # the rest of core.img follows its first sector, contiguously
    struct.pack_into("<QHH", core, _BLOCKLIST, part.start + 1, sectors - 1, _CORE_SEGMENT)
    with open(image, "r+b") as f:
        mbr = f.read(SECTOR)
        if mbr[510:512] != b"\x55\xaa":
            raise BootDiskError(f"{image}: no partition table (write it first)")
        boot = bytearray(boot_img)
        boot[_BPB_START:_BPB_END] = mbr[_BPB_START:_BPB_END]
        boot[_MBR_TABLE_START:_MBR_TABLE_END] = mbr[_MBR_TABLE_START:_MBR_TABLE_END]
        struct.pack_into("<Q", boot, _KERNEL_SECTOR, part.start)
        boot[_BOOT_DRIVE] = 0xFF
        boot[_DRIVE_CHECK : _DRIVE_CHECK + 2] = b"\x90\x90"
        f.seek(part.offset)
        f.write(core)
        f.seek(0)
        f.write(boot)
        f.flush()
        os.fsync(f.fileno())


def make_disk(
    image: Path,
    disk: DiskLayout,
    root_tree: Path,
    grub: GrubImages,
    *,
    esp_files: Mapping[str, bytes] | None = None,
) -> None:
    """Write the whole disk into ``image`` (created, or truncated to ``disk.size``): table,
    ESP with GRUB's EFI image, ext4 root from ``root_tree``, GRUB in the BIOS boot area."""
    tools = {t: find_tool(t) for t in ("sfdisk", "mkfs.ext4", "mkfs.vfat", "mmd", "mcopy")}
    with open(image, "wb") as f:
        f.truncate(disk.size)
    run([tools["sfdisk"], "--quiet", "--no-reread", "--no-tell-kernel", image],
        input=_sfdisk_script(disk))  # fmt: skip
    esp = disk.esp
    serial = disk.esp.uuid.replace("-", "")[:8].upper()
    run([tools["mkfs.vfat"], "-F", "16", "-i", serial, f"--offset={esp.start}", image,
         str(esp.bytes // 1024)])  # fmt: skip
    target = f"{image}@@{esp.offset}"
    files = {"EFI/BOOT/BOOTX64.EFI": grub.efi, "EFI/debian/grubx64.efi": grub.efi}
    files.update(esp_files or {})
    staging = image.with_name(f".{image.name}.esp")
    made: set[str] = set()
    try:
        for path, data in sorted(files.items()):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    run([tools["mmd"], "-i", target, f"::/{folder}"])
                    made.add(folder)
            staging.write_bytes(data)
            run([tools["mcopy"], "-i", target, staging, f"::/{path}"])
    finally:
        staging.unlink(missing_ok=True)
    root = disk.root
    run([tools["mkfs.ext4"], "-q", "-F", "-U", disk.root_fs_uuid, "-d", root_tree,
         "-E", f"offset={root.offset}", image, f"{root.bytes // 1024}k"])  # fmt: skip
    install_bios_boot(image, disk, grub.boot_img, grub.core_img)
