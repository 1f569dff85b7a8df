"""Cloud-shaped Debian 12 and 13 images (configdrive.guest.cloudimage).

Fast: the recipe, the files it derives and the CLI's refusals. ``tools``: the built disk read
by tools that are not the builder's (sfdisk, debugfs, e2fsck, fsck.vfat, mtools): Debian's
genericcloud layout, its root filesystem's settings, the fast variant's tuning. ``vm``: the disk
boots with its own GRUB under SeaBIOS and OVMF, ds-identify finds the config drive, cloud-init
configures from it, and the root partition and filesystem have grown to the flavor's disk
(checked from the host on the powered-off disk).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_boot_network import assert_fallback_dhcp

from configdrive.compute import BootImage, check_drivers, console_stages, guest_mac
from configdrive.errors import SpecError
from configdrive.guest import cloudimage
from configdrive.guest.cloudimage import CloudOS, CloudVariant
from configdrive.guest.image import parse_check_report
from configdrive.login import Login
from configdrive.spec import instance_from_mapping
from configdrive.virt.domain import config_drive_slot
from configdrive.virt.qemu import pid_alive, qmp_execute, read_pid

OSES = [pytest.param("debian-12", id="debian12"), pytest.param("debian-13", id="debian13")]
CLOUD_INIT = {"debian-12": "22.4.", "debian-13": "25.1."}
BOOT_TIMEOUT = float(os.environ.get("CONFIGDRIVE_VM_TIMEOUT", "1200"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


# ---------------------------------------------------------------------------------------------
# fast


def test_recipe_is_stable_and_tells_releases_and_variants_apart() -> None:
    keys = {
        (os_, v): cloudimage._key(os_, v) for os_ in CloudOS for v in CloudVariant
    }  # fmt: skip
    assert len(set(keys.values())) == len(keys)
    assert keys == {(os_, v): cloudimage._key(os_, v) for os_ in CloudOS for v in CloudVariant}
    assert cloudimage.cloud_recipe(CloudOS.DEBIAN_13)["suite"] == "trixie"
    twelve = set(cloudimage.cloud_recipe(CloudOS.DEBIAN_12)["packages"])
    thirteen = set(cloudimage.cloud_recipe(CloudOS.DEBIAN_13)["packages"])
    # the releases' documented differences: bookworm drops libnss-resolve, trixie adds three
    assert thirteen - twelve == {"libnss-resolve", "linux-sysctl-defaults", "dosfstools"}
    assert not {"ifupdown", "isc-dhcp-client", "network-manager"} & thirteen


@pytest.mark.parametrize("os_", OSES)
def test_fstab_and_grub_name_the_partitions_of_the_layout(os_: str) -> None:
    release = CloudOS(os_)
    disk = cloudimage._layout(release)
    lines = [line.split() for line in cloudimage.fstab(release).splitlines()]
    assert lines[0][:3] == [f"PARTUUID={disk.root.uuid}", "/", "ext4"]
    assert "x-systemd.growfs" in lines[0][3].split(",")
    assert lines[1][:3] == [f"PARTUUID={disk.esp.uuid}", "/boot/efi", "vfat"]
    cfg = cloudimage.grub_cfg(release, "6.1.0-1-cloud-amd64")
    assert f"--fs-uuid --set=root {disk.root_fs_uuid}" in cfg
    assert f"linux /boot/vmlinuz-6.1.0-1-cloud-amd64 root=PARTUUID={disk.root.uuid} ro " in cfg
    assert "set timeout=0" in cfg


def test_driver_inventory_reads_builtin_and_loadable_modules(tmp_path: Path) -> None:
    base = tmp_path / "lib" / "modules" / "6.1.0-1-cloud-amd64"
    base.mkdir(parents=True)
    (base / "modules.builtin").write_text(
        "kernel/fs/isofs/isofs.ko\nkernel/drivers/cdrom/cdrom.ko\n"
    )
    (base / "modules.dep").write_text(
        "kernel/drivers/scsi/sr_mod.ko.xz: kernel/drivers/cdrom/cdrom.ko.xz\n"
        "kernel/drivers/ata/ata_piix.ko.xz: kernel/drivers/ata/libata.ko.xz\n"
        "kernel/drivers/scsi/virtio_scsi.ko.xz:\nkernel/fs/fat/vfat.ko.xz:\n"
        "kernel/drivers/block/virtio_blk.ko.xz:\n"
    )
    found = cloudimage.driver_inventory(tmp_path, "6.1.0-1-cloud-amd64")
    assert found == {"ahci": "missing", "ata_piix": "module", "sr_mod": "module",
                     "cdrom": "builtin", "sd_mod": "missing", "usb_storage": "missing",
                     "virtio_scsi": "module", "virtio_blk": "module", "isofs": "builtin",
                     "vfat": "module"}  # fmt: skip
    (base / "modules.dep").write_text("")
    with pytest.raises(cloudimage.ConfigDriveError, match="depmod did not run"):
        cloudimage.driver_inventory(tmp_path, "6.1.0-1-cloud-amd64")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--os", "debian-13"], "error: os: --boot kernel images are debian-12 only"),
        (["--boot", "bios", "--variant", "tuned"], "error: variant: tuned is for --boot kernel"),
        (["--boot", "uefi", "--variant", "pollinate"], "error: variant: pollinate is for"),
        (["--variant", "stock"], "error: variant: stock is for --boot bios|uefi"),
    ],
)
def test_image_build_refuses_a_boot_os_or_variant_that_do_not_go_together(
    tmp_path: Path, args: list[str], message: str
) -> None:
    cache = tmp_path / "cache"
    proc = _cli("image", "build", *args, "--cache-dir", str(cache))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert not cache.exists()


def test_driver_check_names_what_the_guest_kernel_lacks_for_the_drive_slot() -> None:
    kernel = {d: "module" for d in cloudimage.DRIVERS} | {"ahci": "missing"}
    image = BootImage(disk=Path("/nonexistent"), drivers=kernel, kernel_version="6.1.0-1-cloud")
    sata = config_drive_slot("pc-q35-7.2", vfat=False)
    with pytest.raises(SpecError) as caught:
        check_drivers(image, sata, vfat=False)
    assert str(caught.value).startswith(
        "image: the guest's kernel 6.1.0-1-cloud has no ahci (neither built in nor a module), "
        "so the guest could not see its config drive (iso9660 cdrom on the sata bus)"
    )
    assert "hw_cdrom_bus=scsi" in (caught.value.hint or "")
    scsi = config_drive_slot("pc-q35-7.2", vfat=False, cdrom_bus="scsi")
    assert check_drivers(image, scsi, vfat=False) == ["virtio_scsi", "sr_mod", "cdrom", "isofs"]
    vfat_disk = config_drive_slot("pc", vfat=True)
    assert check_drivers(image, vfat_disk, vfat=True) == ["virtio_blk", "vfat"]
    no_vfat = BootImage(disk=Path("/x"), drivers=kernel | {"vfat": "missing"})
    with pytest.raises(SpecError, match="has no vfat .* could not mount") as caught:
        check_drivers(no_vfat, vfat_disk, vfat=True)
    assert caught.value.hint == "use an image whose kernel has it, or config_drive_format iso9660"
    assert check_drivers(BootImage(disk=Path("/x")), sata, vfat=False) == []  # not known


def test_console_stages_are_read_off_cloud_inits_own_lines() -> None:
    text = (
        "[   14.1] cloud-init[230]: Cloud-init v. 22.4.2 running 'init-local' at Wed, 02 Dec "
        "2026 16:56:00 +0000. Up 13.97 seconds.\n"
        "[   73.0] cloud-init[300]: Cloud-init v. 22.4.2 running 'init' at Wed, 02 Dec 2026 "
        "16:56:59 +0000. Up 72.90 seconds.\n"
        "[  130.5] cloud-init[412]: Cloud-init v. 22.4.2 running 'modules:config' at Wed, 02 "
        "Dec 2026 16:57:16 +0000. Up 129.50 seconds.\n"
        "[  165.0] cloud-init[500]: Cloud-init v. 22.4.2 finished at Wed, 02 Dec 2026 16:57:51 "
        "+0000. Datasource DataSourceConfigDrive [net,ver=2][source=/dev/sr0].  Up 164.75 "
        "seconds\n"
    )
    assert console_stages(text) == {"init-local": 13.97, "init": 72.9, "modules:config": 129.5,
                                    "finished": 164.75}  # fmt: skip
    assert console_stages("no cloud-init here\n") == {}


def test_wait_ssh_without_a_private_key_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    instances = tmp_path / "instances"
    host = tmp_path / "host.conf"
    host.write_text(f"[DEFAULT]\ninstances_path = {instances}\n[configdrive]\nbackend = qemu\n")
    public = tmp_path / "only.pub"  # no private key beside it
    public.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1uZGVub3RhcmVhbGtleWF0YWxsMDAwMDA= x\n"
    )
    for extra in ([], ["--key-file", str(public)]):
        proc = _cli("boot", "nokey", "--image", str(tmp_path / "any.qcow2"), "--wait", "ssh",
                    "--host-config", str(host), *extra)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert (
            proc.stderr.strip()
            .splitlines()[-1]
            .startswith("error: --wait ssh logs in over SSH: give --identity FILE")
        )
    assert not instances.exists()


# ---------------------------------------------------------------------------------------------
# tools: the built disk, read by other tools


@pytest.fixture(scope="module")
def raw_disks() -> Iterator[RawDisks]:
    """Raw copies of the built disks, made once per module."""
    disks = RawDisks(Path(tempfile.mkdtemp(prefix="configdrive-cloudraw-", dir="/var/tmp")))
    yield disks
    shutil.rmtree(disks.work, ignore_errors=True)


class RawDisks:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.made: dict[str, Path] = {}

    def __call__(self, image: Any) -> Path:
        name = f"{image.os}-{image.variant}.raw"
        if name not in self.made:
            path = self.work / name
            subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                            str(image.qcow2), str(path)], check=True)  # fmt: skip
            self.made[name] = path
        return self.made[name]


def _partitions(raw: Path) -> dict[int, dict[str, Any]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]  # fmt: skip
    assert table["label"] == "gpt"
    return {int(p["node"].rsplit(str(raw), 1)[-1]): p for p in table["partitions"]}


def _debugfs(raw: Path, offset: int, command: str) -> str:
    proc = subprocess.run(["debugfs", "-R", command, f"{raw}?offset={offset}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return proc.stdout


@pytest.mark.tools
@pytest.mark.parametrize("os_", OSES)
def test_disk_has_debians_genericcloud_layout(
    os_: str, cloud_image: Any, raw_disks: RawDisks
) -> None:
    image = cloud_image(os_)
    raw = raw_disks(image)
    parts = _partitions(raw)
    assert sorted(parts) == [1, 14, 15]
    assert (parts[14]["start"], parts[14]["size"]) == (2048, 6144)
    assert parts[14]["type"] == "21686148-6449-6E6F-744E-656564454649"  # BIOS boot
    assert (parts[15]["start"], parts[15]["size"]) == (8192, 253952)
    assert parts[15]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC3B9"  # EFI system
    assert parts[1]["start"] == 262144
    assert parts[1]["type"] == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64)
    root_offset = parts[1]["start"] * 512
    fstab = _debugfs(raw, root_offset, "cat /etc/fstab").split("\n")
    assert fstab[0].split()[:2] == [f"PARTUUID={parts[1]['uuid'].lower()}", "/"]
    assert fstab[1].split()[:2] == [f"PARTUUID={parts[15]['uuid'].lower()}", "/boot/efi"]
    grub = _debugfs(raw, root_offset, "cat /boot/grub/grub.cfg")
    assert f"root=PARTUUID={parts[1]['uuid'].lower()} " in grub
    for platform in ("i386-pc", "x86_64-efi"):  # where grub-install puts GRUB's modules
        assert "normal.mod" in _debugfs(raw, root_offset, f"ls -l /boot/grub/{platform}")
    fsck = subprocess.run(["e2fsck", "-fn", f"{raw}?offset={root_offset}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    esp = f"{raw}@@{parts[15]['start'] * 512}"
    listing = subprocess.run(["mdir", "-b", "-i", esp, "::/EFI/BOOT"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert "BOOTX64.EFI" in listing.upper()
    with open(raw, "rb") as f:  # GRUB's boot.img in the protective MBR, the table kept
        mbr = f.read(512)
    assert mbr[510:] == b"\x55\xaa" and mbr[0x1BE + 4] == 0xEE


@pytest.mark.tools
@pytest.mark.parametrize("os_", OSES)
def test_root_filesystem_is_set_up_as_debian_ships_it(
    os_: str, cloud_image: Any, raw_disks: RawDisks
) -> None:
    image = cloud_image(os_)
    raw = raw_disks(image)
    offset = _partitions(raw)[1]["start"] * 512

    def cat(path: str) -> str:
        return _debugfs(raw, offset, f"cat {path}")

    status = cat("/var/lib/dpkg/status")
    installed = {
        fields["Package"]: fields.get("Version", "")
        for fields in (
            dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and line[0] != " ")
            for para in status.split("\n\n")
        )
        if "Package" in fields and "install ok installed" in fields.get("Status", "")
    }  # fmt: skip
    assert installed["cloud-init"].startswith(CLOUD_INIT[os_])
    assert {"netplan.io", "systemd-resolved", "cloud-initramfs-growroot", "grub-cloud-amd64",
            "linux-image-cloud-amd64", "openssh-server"} <= set(installed)  # fmt: skip
    assert not {"ifupdown", "network-manager", "pollinate"} & set(installed)
    assert ("libnss-resolve" in installed) == (os_ == "debian-13")
    link = _debugfs(raw, offset, "stat /etc/resolv.conf")
    assert 'Fast link dest: "/run/systemd/resolve/resolv.conf"' in link
    wants = _debugfs(raw, offset, "ls -l /etc/systemd/system/multi-user.target.wants")
    assert "systemd-networkd.service" in wants
    assert "ssh_host_" not in _debugfs(raw, offset, "ls -l /etc/ssh")
    assert cat("/etc/machine-id") == "" and cat("/etc/hostname") == ""
    cfg = yaml.safe_load(cat("/etc/cloud/cloud.cfg.d/01_debian_cloud.cfg"))
    assert cfg["system_info"]["default_user"]["name"] == "debian"
    # stock: no datasource_list anywhere, so ds-identify decides
    listing = _debugfs(raw, offset, "ls /etc/cloud/cloud.cfg.d")
    assert "99_configdrive.cfg" not in listing
    assert "datasource_list" not in (yaml.safe_load(cat("/etc/cloud/cloud.cfg")) or {})


@pytest.mark.tools
def test_boot_refuses_debian12s_cloud_kernel_on_q35s_sata_before_creating_anything(
    cloud_image: Any, tmp_path: Path
) -> None:
    image = cloud_image("debian-12")
    instances = tmp_path / "instances"
    host = tmp_path / "host.conf"
    host.write_text(f"[DEFAULT]\ninstances_path = {instances}\nforce_config_drive = true\n"
                    "[libvirt]\nvirt_type = qemu\nhw_machine_type = q35\n"
                    "[configdrive]\nbackend = qemu\n")  # fmt: skip
    proc = _cli("boot", "sata", "--image", str(image.manifest("uefi")), "--host-config", str(host))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: image: the guest's kernel ") and "has no ahci" in last, last
    assert "-cloud-amd64" in last and "(hint: put the drive on a bus" in last
    assert not instances.exists() or not [p for p in instances.iterdir() if p.name != "_base"]


@pytest.mark.tools
def test_fast_variant_is_the_stock_disk_tuned_offline(
    cloud_image: Any, raw_disks: RawDisks
) -> None:
    stock, fast = cloud_image("debian-12"), cloud_image("debian-12", "fast")
    manifest = json.loads(fast.manifest("bios").read_text())
    assert manifest["stock_key"] == stock.key and manifest["variant"] == "fast"
    raw = raw_disks(fast)
    offset = _partitions(raw)[1]["start"] * 512
    cfg = yaml.safe_load(_debugfs(raw, offset, "cat /etc/cloud/cloud.cfg.d/99_configdrive.cfg"))
    assert cfg["datasource_list"][0] == "ConfigDrive"
    keys = _debugfs(raw, offset, "cat /etc/cloud/cloud.cfg.d/99_configdrive-ssh-keys.cfg")
    assert yaml.safe_load(keys) == {"ssh_genkeytypes": ["ed25519", "ecdsa"]}
    dropin = "/etc/systemd/system/systemd-networkd-wait-online.service.d/90-configdrive.conf"
    assert "--any --timeout=30" in _debugfs(raw, offset, f"cat {dropin}")
    assert manifest["tune_applied"], manifest

    # otherwise the same disk: the same partition table
    def table(disk: Path) -> list[tuple[Any, ...]]:
        return [
            (n, p["start"], p["size"], p["type"], p["uuid"])
            for n, p in sorted(_partitions(disk).items())
        ]

    assert table(raw) == table(raw_disks(stock))


# ---------------------------------------------------------------------------------------------
# vm: booted from the disk by its own GRUB


@pytest.fixture(scope="module")
def vm_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="configdrive-cloudvm-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.vm
@pytest.mark.parametrize(
    ("os_", "firmware", "machine", "cdrom_bus"),
    [
        pytest.param("debian-12", "bios", "pc", None, id="debian12-bios-pc-ide"),
        # Debian 12's cloud kernel has no AHCI: q35's CD-ROM goes on virtio-scsi
        pytest.param("debian-12", "uefi", "q35", "scsi", id="debian12-uefi-q35-scsi"),
        pytest.param("debian-13", "bios", "pc", None, id="debian13-bios-pc-ide"),
        pytest.param("debian-13", "uefi", "q35", None, id="debian13-uefi-q35-sata"),
    ],
)
def test_cloud_image_boots_from_its_disk_and_configures_from_the_drive(
    os_: str,
    firmware: str,
    machine: str,
    cdrom_bus: str | None,
    cloud_image: Any,
    vm_dir: Path,
) -> None:
    image = cloud_image(os_)
    work = vm_dir / f"{os_}-{firmware}"
    work.mkdir()
    host = work / "host.conf"
    host.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\nforce_config_drive = true\n"
        f"[libvirt]\nvirt_type = auto\nhw_machine_type = {machine}\n"
        "[configdrive]\nbackend = qemu\n"
    )
    name = f"cloud-{os_}"
    identity = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)],
                   check=True)  # fmt: skip
    user_data = work / "user-data"
    user_data.write_text(
        "#cloud-config\nruncmd:\n  - [sh, -c, 'echo ran > /var/tmp/runcmd-proof']\n"
    )
    injected = work / "motd"
    injected.write_text("injected by configdrive\n")
    # create to SSH login, the way a user does it: the instance's key is identity.pub
    args = ["boot", name, "--image", str(image.manifest(firmware)), "--host-config", str(host),
            "--wait", "cloud-init", "--identity", str(identity), "--user-data", str(user_data),
            "--file", f"/etc/configdrive-injected={injected}",
            "--timeout", str(BOOT_TIMEOUT), "--json"]  # fmt: skip
    if cdrom_bus:
        args += ["--property", f"hw_cdrom_bus={cdrom_bus}"]
    proc = _cli(*args)
    record = json.loads(proc.stdout) if proc.returncode == 0 else {}
    directory = Path(record.get("path") or work / "instances")
    overlay = work / "overlay.raw"
    try:
        assert proc.returncode == 0, proc.stderr
        assert 0 < record["ssh_s"] <= record["cloud_init_s"], record
        assert "status: done" in record["cloud_init_status"], record
        assert record["ssh"] == {"host": "127.0.0.1", "port": record["ssh_port"], "user": "debian"}
        assert record["stages"]["init-local"] < record["stages"]["finished"], record["stages"]
        login = Login(port=record["ssh_port"], identity=identity, user="debian")
        assert login.run(["hostname"]).stdout.strip() == name
        keys = login.run(["sudo", "cat", "/home/debian/.ssh/authorized_keys"]).stdout
        assert identity.with_name("id_ed25519.pub").read_text().split()[1] in keys
        assert login.run(["cat", "/var/tmp/runcmd-proof"]).stdout == "ran\n"  # user data ran
        shown = login.run(["sudo", "cat", "/etc/configdrive-injected"]).stdout  # 0660 root
        assert shown == injected.read_text()  # the injected file, as cloud-init wrote it
        console = directory / "console.log"
        deadline = time.monotonic() + BOOT_TIMEOUT  # a hang guard, not a speed check
        text = ""
        while "CONFIGDRIVE-CHECK end" not in text:
            assert time.monotonic() < deadline, text[-3000:]
            time.sleep(2)
            text = console.read_text(errors="replace")
        # a clean ACPI shutdown, so the disk holds what the guest wrote
        pid = read_pid(directory / "qemu.pid")  # QEMU removes its pidfile as it exits
        assert pid is not None
        qmp_execute(directory / "qmp.sock", "system_powerdown")
        stop = time.monotonic() + 300
        while pid_alive(pid):
            assert time.monotonic() < stop, "the guest did not power off"
            time.sleep(1)
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                        str(directory / "disk"), str(overlay)], check=True)  # fmt: skip
        instance = json.loads((directory / "instance.json").read_text())
    finally:
        deleted = _cli("delete", name, "--host-config", str(host))
    assert deleted.returncode == 0, deleted.stderr
    report = parse_check_report(text)
    assert report["complete"]
    # ds-identify (no datasource_list in a stock image) found the config drive by its label
    assert str(report["datasource"]).startswith("DataSourceConfigDrive"), report["datasource"]
    assert report["hostname"] == name
    assert report["cloud_init_result"] == [], report["cloud_init_result"]
    # no networks in the spec: the NIC (configdrive's own MAC for it) came up by cloud-init's
    # DHCP fallback, with a lease from QEMU's DHCP server (test_boot_network's other cases)
    mac = instance["spec"]["nic_mac"]
    assert mac == guest_mac(instance_from_mapping({"name": name, "uuid": instance["uuid"]}))
    assert_fallback_dhcp(report, mac)
    assert report["system_state"] == "running", report["failed_units"]
    assert "/etc/netplan/50-cloud-init.yaml" in (report["cloud_network"] or "")
    # GRUB found the root by PARTUUID; growroot and x-systemd.growfs grew it to the flavor's disk
    size = overlay.stat().st_size
    root = _partitions(overlay)[1]
    assert (root["start"] + root["size"]) * 512 > size - 2 * 1024 * 1024
    stats = _debugfs(overlay, root["start"] * 512, "stats")
    fields = dict(
        line.split(":", 1) for line in stats.splitlines() if ":" in line
    )  # fmt: skip
    blocks, block_size = int(fields["Block count"]), int(fields["Block size"])
    assert blocks * block_size > (root["size"] * 512) - 4 * 1024 * 1024
    assert size >= 4 * 1024**3  # m1.tiny's 4 GiB, larger than the image's 3 GiB
