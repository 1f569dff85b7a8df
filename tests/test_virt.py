"""Pure builders: nova's bus choice for the config drive, the domain XML and QEMU argv, and the
rule that no guest reaches beyond this machine."""

from __future__ import annotations

import itertools
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from configdrive.errors import SpecError
from configdrive.host import (
    FLAVORS,
    Accelerator,
    BackendKind,
    HostConfig,
    find_flavor,
    load_host_config,
)
from configdrive.virt.accel import probe_argv
from configdrive.virt.domain import (
    Firmware,
    GuestFwd,
    GuestSpec,
    IsolationError,
    check_isolated,
    check_isolated_xml,
    config_drive_slot,
    domain_xml,
    qemu_argv,
)


# nova test_blockinfo.py: config drive mapping
@pytest.mark.parametrize(
    ("machine", "vfat", "cdrom_bus", "disk_bus", "expected"),
    [
        ("pc", False, None, None, ("cdrom", "ide", "hda")),
        ("pc-i440fx-7.2", False, None, None, ("cdrom", "ide", "hda")),
        ("q35", False, None, None, ("cdrom", "sata", "sda")),
        ("pc-q35-7.2", False, None, None, ("cdrom", "sata", "sda")),
        ("pc", False, "sata", None, ("cdrom", "sata", "sda")),  # hw_cdrom_bus wins
        ("q35", False, "scsi", None, ("cdrom", "scsi", "sda")),
        ("q35", False, "floppy", None, ("cdrom", "sata", "sda")),  # invalid property ignored
        ("pc", True, None, None, ("disk", "virtio", "vdb")),  # vfat: root vda, drive vdb
        ("q35", True, None, "sata", ("disk", "sata", "sda")),
    ],
)
def test_config_drive_slot(machine: str, vfat: bool, cdrom_bus: str | None, disk_bus: str | None,
                           expected: tuple[str, str, str]) -> None:  # fmt: skip
    slot = config_drive_slot(machine, vfat, cdrom_bus=cdrom_bus, disk_bus=disk_bus)
    assert (slot.device, slot.bus, slot.dev) == expected


def spec(tmp: Path, **kw: object) -> GuestSpec:
    base: dict[str, object] = dict(
        name="myinstance", uuid="37bf37e7-fd38-4b31-aa1b-5dffa0c35abe", vcpus=1, ram_mb=768,
        machine="pc", accel="tcg", disk=tmp / "disk", console_log=tmp / "console.log",
        kernel=tmp / "vmlinuz", initrd=tmp / "initrd.img", cmdline="root=/dev/vda console=ttyS0",
        config_drive=tmp / "disk.config",
    )  # fmt: skip
    base.update(kw)
    return GuestSpec(**base)  # type: ignore[arg-type]


def test_domain_xml_carries_the_drive_as_the_seed_shows(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(tmp_path)))
    assert root.get("type") == "qemu"  # TCG
    disks = root.findall("./devices/disk")
    assert [d.get("device") for d in disks] == ["disk", "cdrom"]  # drive is the last local disk
    cd = disks[1]
    assert cd.get("type") == "file"
    assert cd.find("driver").attrib == {"name": "qemu", "type": "raw", "cache": "none"}  # type: ignore[union-attr]
    assert cd.find("source").get("file") == str(tmp_path / "disk.config")  # type: ignore[union-attr]
    assert cd.find("target").attrib == {"bus": "ide", "dev": "hda"}  # type: ignore[union-attr]
    assert root.find("./os/kernel").text == str(tmp_path / "vmlinuz")  # type: ignore[union-attr]
    assert root.find("./devices/serial/source").get("path") == str(tmp_path / "console.log")  # type: ignore[union-attr]
    assert root.find("./devices/interface") is None
    # nova's sysinfo: the guest's DMI says OpenStack Nova (ds-identify and cloud-init read it)
    entries = {e.get("name"): e.text for e in root.findall("./sysinfo/system/entry")}
    assert (
        entries["manufacturer"] == "OpenStack Foundation" and entries["product"] == "OpenStack Nova"
    )
    assert entries["uuid"] == "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"
    assert root.find("./os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]


def test_domain_xml_q35_vfat_and_kvm(tmp_path: Path) -> None:
    q35 = ET.fromstring(domain_xml(spec(tmp_path, machine="q35")))
    assert q35.find("./devices/disk[@device='cdrom']/target").attrib == {
        "bus": "sata",
        "dev": "sda",
    }  # type: ignore[union-attr]
    assert q35.find("./os/type").get("machine") == "q35"  # type: ignore[union-attr]
    vfat = ET.fromstring(
        domain_xml(spec(tmp_path, config_drive_vfat=True, accel="kvm", cache_mode="writethrough"))
    )
    drive = vfat.findall("./devices/disk")[1]
    assert drive.get("device") == "disk"
    assert drive.find("target").attrib == {"bus": "virtio", "dev": "vdb"}  # type: ignore[union-attr]
    assert drive.find("driver").get("cache") == "writethrough"  # type: ignore[union-attr]
    assert vfat.get("type") == "kvm"


def test_qemu_argv(tmp_path: Path) -> None:
    argv = qemu_argv(spec(tmp_path))
    joined = " ".join(argv)
    assert "-machine pc,accel=tcg" in joined
    assert (
        f"file={tmp_path}/disk.config,format=raw,if=none,id=drive-hda,cache=none,media=cdrom,readonly=on"
        in joined
    )
    assert "ide-cd,bus=ide.0,unit=0,drive=drive-hda,id=hda" in joined
    assert argv[argv.index("-nic") + 1] == "none"
    smbios = argv[argv.index("-smbios") + 1]
    assert smbios.startswith("type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,")
    q35 = " ".join(qemu_argv(spec(tmp_path, machine="q35")))
    assert "ide-cd,bus=ide.0,drive=drive-sda,id=sda" in q35  # q35's built-in AHCI
    vfat = " ".join(qemu_argv(spec(tmp_path, config_drive_vfat=True)))
    assert "virtio-blk-pci,drive=drive-vdb,id=vdb" in vfat
    commas = qemu_argv(spec(tmp_path, disk=tmp_path / "a,b" / "disk"))
    assert any("file=" + str(tmp_path) + "/a,,b/disk," in a for a in commas)


def test_uefi_guests_get_ovmf_code_read_only_and_their_own_variable_store(tmp_path: Path) -> None:
    code, nvram = tmp_path / "OVMF_CODE_4M.fd", tmp_path / "inst" / "nvram.fd"
    uefi = spec(tmp_path, machine="q35", firmware=Firmware.UEFI, uefi_code=code, uefi_vars=nvram)
    argv = qemu_argv(uefi)
    pflash = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive" and "pflash" in argv[i + 1]]
    assert pflash == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        f"if=pflash,format=raw,unit=1,file={nvram}",
    ]
    os_ = ET.fromstring(domain_xml(uefi)).find("./os")
    assert os_ is not None
    loader, store = os_.find("loader"), os_.find("nvram")
    assert loader is not None and loader.text == str(code)
    assert loader.attrib == {"readonly": "yes", "type": "pflash", "secure": "no"}
    assert store is not None and store.text == str(nvram)
    # BIOS (the default) has neither
    bios = spec(tmp_path)
    assert not any("pflash" in a for a in qemu_argv(bios))
    assert ET.fromstring(domain_xml(bios)).find("./os/loader") is None


def test_a_uefi_guest_without_its_firmware_files_cannot_be_described(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="firmware uefi needs uefi_code and uefi_vars"):
        spec(tmp_path, firmware=Firmware.UEFI, uefi_code=tmp_path / "code")
    with pytest.raises(ValueError, match="for firmware uefi only"):
        spec(tmp_path, uefi_vars=tmp_path / "vars")


# ---------------------------------------------------------------------------------------------
# Guests never reach beyond this machine

FWD = (GuestFwd("169.254.169.254", 80, "127.0.0.1", 18775),)


def every_guest(tmp: Path) -> list[GuestSpec]:
    specs = []
    for machine, vfat, accel, net, drive in itertools.product(
        ("pc", "q35"), (False, True), ("tcg", "kvm"), (None, (), FWD), (True, False)
    ):
        specs.append(spec(tmp, machine=machine, config_drive_vfat=vfat, accel=accel, user_net=net,
                          config_drive=tmp / "disk.config" if drive else None,
                          pidfile=tmp / "pid", qmp_socket=tmp / "qmp", nic_mac="fa:16:3e:00:00:01"))  # fmt: skip
    return specs


def test_every_argv_and_xml_the_project_builds_is_isolated(tmp_path: Path) -> None:
    for guest in every_guest(tmp_path):
        argv = qemu_argv(guest)
        check_isolated(argv)
        xml = domain_xml(guest)
        check_isolated_xml(xml)
        root = ET.fromstring(xml)
        assert root.find("./devices/interface") is None
        if guest.user_net is None:
            assert argv[argv.index("-nic") + 1] == "none" and "-netdev" not in argv
        else:
            netdev = argv[argv.index("-netdev") + 1]
            assert (
                argv[argv.index("-netdev") + 3]
                == "virtio-net-pci,netdev=net0,mac=fa:16:3e:00:00:01"
            )
            assert netdev.startswith("user,") and ",restrict=on," in netdev
            assert "hostfwd" not in netdev
            for rule in netdev.split(",")[4:]:
                assert rule.startswith("guestfwd=tcp:169.254.169.254:80-cmd:nc 127.0.0.1 ")
    leased = spec(tmp_path, user_net=FWD, user_net_dhcp_start="169.254.3.7")
    netdev = qemu_argv(leased)[qemu_argv(leased).index("-netdev") + 1]
    assert "dhcpstart=169.254.3.7" in netdev.split(",")
    check_isolated(qemu_argv(leased))
    check_isolated_xml(domain_xml(leased))
    ssh = spec(tmp_path, user_net=(), ssh_port=40022)
    netdev = qemu_argv(ssh)[qemu_argv(ssh).index("-netdev") + 1]
    assert netdev.split(",")[-1] == "hostfwd=tcp:127.0.0.1:40022-:22"
    check_isolated(qemu_argv(ssh))
    check_isolated_xml(domain_xml(ssh))
    for cpu in ("host", "host,-arch-capabilities"):
        check_isolated(
            probe_argv("qemu-system-x86_64", tmp_path / "vmlinuz", cpu, tmp_path / "log")
        )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["qemu"], "no -nic none"),
        (["qemu", "-nic", "user"], "without restrict=on"),
        (["qemu", "-nic", "user,restrict=off"], "without restrict=on"),
        (["qemu", "-netdev", "user,id=n,restrict=on,hostfwd=tcp::2222-:22"], "hostfwd"),
        (["qemu", "-netdev", "user,id=n,restrict=on,hostfwd=tcp:0.0.0.0:2222-:22"], "loopback"),
        (["qemu", "-netdev", "user,id=n,restrict=on,hostfwd=udp:127.0.0.1:53-:53"], "hostfwd"),
        (
            ["qemu", "-netdev", "user,id=n,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:10.1.1.1:80"],
            "not a loopback",
        ),
        (
            [
                "qemu",
                "-netdev",
                "user,id=n,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:nc 10.1.1.1 80",
            ],
            "not a loopback",
        ),
        (
            [
                "qemu",
                "-netdev",
                "user,id=n,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:curl http://x/",
            ],
            "is not tcp:IP:PORT",
        ),
        (
            [
                "qemu",
                "-netdev",
                "user,id=n,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:nc 127.0.0.1 80; nc 8.8.8.8 53",
            ],
            "is not tcp:IP:PORT",
        ),
        (["qemu", "-netdev", "tap,id=n"], "'tap' is not allowed"),
        (["qemu", "-netdev", "bridge,id=n,br=virbr0"], "'bridge' is not allowed"),
        (["qemu", "-nic", "none", "-net", "nic"], "legacy -net"),
        (["qemu", "-nic", "none", "-device", "e1000"], "without a checked netdev"),
    ],
)
def test_isolation_rejects(argv: list[str], reason: str) -> None:
    with pytest.raises(IsolationError, match=reason):
        check_isolated(argv)


def test_isolation_rejects_libvirt_networks() -> None:
    with pytest.raises(IsolationError, match="default network NATs"):
        check_isolated_xml(
            "<domain><devices><interface type='network'><source network='default'/></interface></devices></domain>"
        )
    with pytest.raises(IsolationError, match="without restrict=on"):
        check_isolated_xml(
            "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:commandline>"
            "<qemu:arg value='-netdev'/><qemu:arg value='user,id=n'/></qemu:commandline></domain>"
        )


# ---------------------------------------------------------------------------------------------
# host config and flavors


def test_host_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "host.conf"
    conf.write_text(
        "[DEFAULT]\nforce_config_drive = true\ninstances_path = /srv/instances\n"
        "config_drive_format = vfat\n[libvirt]\nvirt_type = qemu\nhw_machine_type = q35\n"
        "[configdrive]\nbackend = qemu\n"
    )
    host = load_host_config(conf)
    assert host.force_config_drive and host.instances_path == Path("/srv/instances")
    assert str(host.config_drive_format) == "vfat" and host.accelerator is Accelerator.TCG
    assert host.machine_type == "q35" and host.backend is BackendKind.QEMU
    assert load_host_config(None) == HostConfig() or Path("/etc/configdrive/host.conf").exists()
    conf.write_text("[DEFAULT]\nforce_config_drive = maybe\n")
    with pytest.raises(SpecError, match="force_config_drive: must be true or false"):
        load_host_config(conf)
    conf.write_text("[libvirt]\nvirt_type = xen\n")
    with pytest.raises(SpecError, match="virt_type: must be kvm, qemu"):
        load_host_config(conf)
    with pytest.raises(SpecError, match="host_config: cannot read"):
        load_host_config(tmp_path / "missing.conf")


def test_host_zone_is_nova_unless_the_host_config_names_one(tmp_path: Path) -> None:
    """[DEFAULT] default_availability_zone: what `configdrive boot` renders for an instance
    that asks for no zone (nova's default: nova)."""
    conf = tmp_path / "host.conf"
    conf.write_text("[DEFAULT]\ninstances_path = /srv/instances\n")
    assert load_host_config(conf).render_options().default_availability_zone == "nova"
    conf.write_text("[DEFAULT]\ndefault_availability_zone = rack-7\n")
    assert load_host_config(conf).render_options().default_availability_zone == "rack-7"
    conf.write_text("[DEFAULT]\ndefault_availability_zone = a:b\n")
    with pytest.raises(SpecError, match="default_availability_zone: 'a:b' is not a zone name"):
        load_host_config(conf)


def test_flavors() -> None:
    assert find_flavor("1") == find_flavor("m1.tiny") == FLAVORS[0]
    with pytest.raises(SpecError, match="unknown flavor 'm9.huge'"):
        find_flavor("m9.huge")
