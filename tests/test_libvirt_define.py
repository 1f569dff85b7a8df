"""libvirtd itself accepts the domain XML we build (define, read back, undefine; no boot)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from configdrive.virt.domain import Firmware, GuestFwd, GuestSpec, domain_xml

pytestmark = pytest.mark.tools
Run = Callable[..., subprocess.CompletedProcess[bytes]]


def _define_and_read_back(
    guest: GuestSpec, tmp_path: Path, sh: Run, libvirtd: str, *undefine: str
) -> ET.Element:
    """Define our XML for ``guest`` in libvirtd, read back what libvirt kept, undefine it."""
    xml_file = tmp_path / "libvirt.xml"
    xml_file.write_text(domain_xml(guest))
    sh(["virsh", "-c", libvirtd, "define", str(xml_file)])
    try:
        dumped = sh(["virsh", "-c", libvirtd, "dumpxml", guest.uuid]).stdout.decode()
    finally:
        sh(["virsh", "-c", libvirtd, "undefine", *undefine, guest.uuid])
    return ET.fromstring(dumped)


@pytest.mark.parametrize(
    ("machine", "vfat", "net"),
    [("pc", False, None), ("q35", False, None), ("pc", True, None),
     ("q35", False, (GuestFwd("169.254.169.254", 80, "127.0.0.1", 18775),))],
)  # fmt: skip
def test_libvirt_accepts_our_domain(
    tmp_path: Path,
    sh: Run,
    libvirtd: str,
    machine: str,
    vfat: bool,
    net: tuple[GuestFwd, ...] | None,
) -> None:
    for name in ("disk", "disk.config", "vmlinuz", "initrd.img", "console.log"):
        (tmp_path / name).write_bytes(b"")
    guest = GuestSpec(
        name=f"cd-define-{uuid.uuid4().hex[:8]}", uuid=str(uuid.uuid4()), vcpus=1, ram_mb=256,
        machine=machine, accel="tcg", disk=tmp_path / "disk", console_log=tmp_path / "console.log",
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img", cmdline="console=ttyS0",
        config_drive=tmp_path / "disk.config", config_drive_vfat=vfat, user_net=net,
    )  # fmt: skip
    root = _define_and_read_back(guest, tmp_path, sh, libvirtd)
    drive = root.findall("./devices/disk")[1]
    expected = (
        ("disk", "virtio", "vdb")
        if vfat
        else ("cdrom", "sata" if machine == "q35" else "ide", "sda" if machine == "q35" else "hda")
    )
    target = drive.find("target")
    assert (
        target is not None
        and (drive.get("device"), target.get("bus"), target.get("dev")) == expected
    )
    driver = drive.find("driver")
    assert driver is not None and driver.get("type") == "raw" and driver.get("cache") == "none"
    assert root.find("./devices/interface") is None
    if net is not None:
        args = [
            a.get("value") for a in root.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg")
        ]
        assert any(a and "restrict=on" in a for a in args)


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_libvirt_accepts_a_uefi_domain_and_keeps_its_loader_and_nvram(
    tmp_path: Path, sh: Run, libvirtd: str, machine: str
) -> None:
    for name in ("disk", "disk.config", "console.log", "nvram.fd"):
        (tmp_path / name).write_bytes(b"")
    code = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    assert code.is_file(), "OVMF missing: run scripts/setup --system"
    guest = GuestSpec(
        name=f"cd-define-{uuid.uuid4().hex[:8]}", uuid=str(uuid.uuid4()), vcpus=1, ram_mb=256,
        machine=machine, accel="tcg", disk=tmp_path / "disk", console_log=tmp_path / "console.log",
        config_drive=tmp_path / "disk.config", firmware=Firmware.UEFI, uefi_code=code,
        uefi_vars=tmp_path / "nvram.fd",
    )  # fmt: skip
    # --keep-nvram: the variable store is the test's file, not libvirt's to delete
    os_ = _define_and_read_back(guest, tmp_path, sh, libvirtd, "--keep-nvram").find("./os")
    assert os_ is not None
    loader, nvram = os_.find("loader"), os_.find("nvram")
    assert loader is not None and loader.text == str(code) and loader.get("type") == "pflash"
    assert loader.get("readonly") == "yes"
    assert nvram is not None and nvram.text == str(tmp_path / "nvram.fd")
