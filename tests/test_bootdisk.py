"""The cloud-shaped boot disk (configdrive.guest.bootdisk), judged by sfdisk, blkid, e2fsck,
fsck.vfat and mtools, and booted by SeaBIOS and OVMF from the disk itself (no -kernel) with the project's QEMU argv, on
pc and q35, a config drive in nova's slot beside it.

The GRUB modules are Debian's (grub-pc-bin, grub-efi-amd64-bin, installed by
scripts/setup --system); the boots run under TCG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from configdrive.guest import bootdisk
from configdrive.guest.bootdisk import BootDiskError
from configdrive.virt.domain import Firmware, GuestSpec, qemu_argv
from configdrive.virt.qemu import qmp_execute

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


def _boot(image: Path, firmware: Firmware, machine: str, tmp_path: Path) -> str:
    """Boot the disk with the project's own QEMU argv (configdrive.virt.domain.qemu_argv)."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 missing: run scripts/setup --system"
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image),
                    str(qcow2)], check=True)  # fmt: skip
    drive = tmp_path / "disk.config"
    drive.write_bytes(b"\0" * 2048 * 16)  # the slot is what matters here, not the contents
    nvram = None
    if firmware is Firmware.UEFI:
        assert OVMF_CODE.is_file(), "OVMF missing: run scripts/setup --system"
        nvram = tmp_path / "nvram.fd"
        shutil.copyfile(OVMF_VARS, nvram)
    spec = GuestSpec(
        name="bootdisk", uuid="6f0d2a3e-1111-4222-8333-944455556666", vcpus=1, ram_mb=512,
        machine=machine, accel="tcg", disk=qcow2, console_log=tmp_path / "console.log",
        config_drive=drive, firmware=firmware,
        uefi_code=OVMF_CODE if nvram else None, uefi_vars=nvram,
    )  # fmt: skip
    # a hang guard, not a speed check: GRUB's `reboot` ends QEMU (-no-reboot)
    subprocess.run(qemu_argv(spec, qemu), check=True, timeout=120, capture_output=True)
    return spec.console_log.read_bytes().decode("utf-8", "replace")


@pytest.mark.vm
@pytest.mark.parametrize(
    ("firmware", "machine"),
    [(Firmware.BIOS, "pc"), (Firmware.UEFI, "q35"), (Firmware.UEFI, "pc"), (Firmware.BIOS, "q35")],
)
def test_the_disk_boots_grub_under_each_firmware(
    disk: tuple[Path, bootdisk.DiskLayout], firmware: Firmware, machine: str, tmp_path: Path
) -> None:
    image, _ = disk
    text = _boot(image, firmware, machine, tmp_path)
    platform = {Firmware.BIOS: "pc", Firmware.UEFI: "efi"}[firmware]
    assert f"CONFIGDRIVE-GRUB platform={platform}" in text, text[-2000:]
    assert f"CONFIGDRIVE-GRUB platform={platform} root=hd0,gpt1" in text, text[-2000:]
    assert f"CONFIGDRIVE-GRUB marker={MARKER}" in text, text[-2000:]
    assert "CONFIGDRIVE-GRUB end" in text
    assert "error:" not in text, text[-2000:]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


def _image_dir(image: Path, tmp_path: Path, firmware: str) -> Path:
    """An image directory as `configdrive image build` lays one out, for the test disk."""
    directory = tmp_path / "image"
    directory.mkdir()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(image),
                    str(directory / "disk.qcow2")], check=True)  # fmt: skip
    manifest = {"qcow2": "disk.qcow2", "firmware": firmware, "key": f"bootdisk-{firmware}"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder libvirt's QEMU (another user) can reach: pytest's tmp_path is under a 0700
    directory."""
    path = Path(tempfile.mkdtemp(prefix="configdrive-fw-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _host_conf(tmp_path: Path, backend: str, machine: str, **extra: str) -> Path:
    conf = tmp_path / "host.conf"
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    instances = tmp_path / "instances"
    conf.write_text(
        f"[DEFAULT]\ninstances_path = {instances}\nforce_config_drive = true\n"
        f"[libvirt]\nvirt_type = qemu\nhw_machine_type = {machine}\n"
        f"[configdrive]\nbackend = {backend}\n{lines}"
    )
    os.chmod(tmp_path, 0o755)
    return conf


@pytest.mark.vm
@pytest.mark.parametrize(
    ("backend", "machine", "manifest_firmware", "flag"),
    [("qemu", "q35", "uefi", None), ("libvirt", "q35", "bios", "uefi"),
     ("qemu", "pc", "uefi", "bios")],
)  # fmt: skip
def test_boot_takes_the_firmware_from_the_manifest_or_the_flag(
    disk: tuple[Path, bootdisk.DiskLayout],
    shared_dir: Path,
    backend: str,
    machine: str,
    manifest_firmware: str,
    flag: str | None,
    libvirtd: str,
) -> None:
    image, _ = disk
    conf = _host_conf(shared_dir, backend, machine)
    name = f"fw-{backend}-{machine}"
    args = ["boot", "--image", str(_image_dir(image, shared_dir, manifest_firmware)),
            "--host-config", str(conf), "--json", name]  # fmt: skip
    if flag:
        args += ["--firmware", flag]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    directory = Path(record["path"])
    try:
        want = flag or manifest_firmware
        nvram = directory / "nvram.fd"
        assert nvram.is_file() == (want == "uefi")
        console = directory / "console.log"
        platform = {"bios": "pc", "uefi": "efi"}[want]
        deadline = time.monotonic() + 180  # a hang guard, not a speed check
        while "CONFIGDRIVE-GRUB end" not in console.read_text(errors="replace"):
            assert time.monotonic() < deadline, console.read_text(errors="replace")[-2000:]
            time.sleep(1)
        assert f"platform={platform} root=hd0,gpt1" in console.read_text(errors="replace")
    finally:
        deleted = _cli("delete", name, "--host-config", str(conf))
    assert deleted.returncode == 0, deleted.stderr
    assert not directory.exists()  # the variable store goes with the instance


@pytest.mark.tools
def test_uefi_on_a_host_without_ovmf_is_refused_and_leaves_nothing(
    disk: tuple[Path, bootdisk.DiskLayout], tmp_path: Path
) -> None:
    image, _ = disk
    missing = tmp_path / "no-such-OVMF_CODE.fd"
    conf = _host_conf(tmp_path, "qemu", "q35", uefi_code=str(missing))
    proc = _cli("boot", "--image", str(_image_dir(image, tmp_path, "uefi")),
                "--host-config", str(conf), "no-ovmf")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: firmware: uefi needs OVMF, but uefi_code {missing}")
    assert "apt-get install ovmf" in lines[-1]
    instances = tmp_path / "instances"
    assert not instances.exists() or not [p for p in instances.iterdir() if p.name != "_base"]


@pytest.mark.tools
def test_plain_qemu_runs_and_answers_qmp_under_an_instances_path_longer_than_a_socket_path(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    conf = tmp_path / "host.conf"
    conf.write_text(f"[DEFAULT]\ninstances_path = {deep}\nforce_config_drive = true\n"
                    "[libvirt]\nvirt_type = qemu\n[configdrive]\nbackend = qemu\n")  # fmt: skip
    blank = tmp_path / "blank.qcow2"  # SeaBIOS finds nothing to boot and waits: QEMU stays up
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    proc = _cli("boot", "--image", str(blank), "--host-config", str(conf), "--json", "deep")
    assert proc.returncode == 0, proc.stderr
    directory = Path(json.loads(proc.stdout)["path"])
    try:
        socket_path = directory / "qmp.sock"
        assert len(os.fsencode(socket_path)) > 108
        assert qmp_execute(socket_path, "query-status")["status"] in {"running", "prelaunch"}
        files = {b["inserted"]["file"] for b in qmp_execute(socket_path, "query-block")
                 if "inserted" in b}  # fmt: skip
        assert str(directory / "disk.config") in files  # this guest's monitor, not another's
    finally:
        deleted = _cli("delete", "deep", "--host-config", str(conf))
    assert deleted.returncode == 0, deleted.stderr
    assert not directory.exists()


@pytest.mark.tools
def test_append_on_an_image_that_boots_from_its_disk_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "host.conf"
    instances = tmp_path / "instances"
    conf.write_text(f"[DEFAULT]\ninstances_path = {instances}\n[libvirt]\nvirt_type = qemu\n"
                    "[configdrive]\nbackend = qemu\n")  # fmt: skip
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    proc = _cli("boot", "--image", str(blank), "--host-config", str(conf), "--append",
                "quiet", "appended")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: append: this image boots from its own disk"), last
    assert not instances.exists() or not [p for p in instances.iterdir() if p.name != "_base"]
