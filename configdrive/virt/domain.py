"""Pure builders: a guest description -> libvirt domain XML, or a QEMU argv.

Both carry the config drive as nova's libvirt driver does (``nova/virt/libvirt/blockinfo.py``):
an ISO drive is a ``cdrom`` on ``ide`` (``pc``) or ``sata`` (``q35``, which has no IDE), unless
the image's ``hw_cdrom_bus`` says otherwise; a VFAT drive is a ``disk`` on ``virtio``
(``hw_disk_bus``). Driver ``qemu``, type ``raw``, ``cache="none"`` (writethrough where the
filesystem refuses O_DIRECT). The drive is the last local disk.

Guests never reach beyond this machine: no NIC by default, and the only network allowed is
QEMU user networking with ``restrict=on`` whose ``guestfwd`` rules point at loopback. Every
argv and XML built here passes :func:`check_isolated`.

Firmware: SeaBIOS (``bios``, QEMU's default) or OVMF (``uefi``): OVMF's code read-only on the
first pflash unit and the instance's own copy of its variable store on the second, in libvirt
an explicit ``<loader type="pflash">`` and ``<nvram>`` (so the host's firmware descriptors do
not choose for us).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from configdrive.errors import ConfigDriveError

__all__ = [
    "DriveSlot",
    "Firmware",
    "GuestFwd",
    "GuestSpec",
    "IsolationError",
    "check_isolated",
    "check_isolated_xml",
    "config_drive_slot",
    "domain_xml",
    "drivers_for",
    "qemu_argv",
    "quote_optarg",
]


class Firmware(enum.StrEnum):
    """What the guest boots with: SeaBIOS, or OVMF (UEFI)."""

    BIOS = "bios"
    UEFI = "uefi"


VALID_CDROM_BUSES = frozenset({"ide", "sata", "scsi", "usb", "virtio"})
VALID_DISK_BUSES = frozenset({"virtio", "ide", "sata", "scsi", "usb"})
PREFIX = {"ide": "hd", "sata": "sd", "scsi": "sd", "usb": "sd", "virtio": "vd"}


class IsolationError(ConfigDriveError):
    """A guest definition would let the guest reach beyond this machine."""


@dataclass(frozen=True)
class DriveSlot:
    """Where the config drive goes: device type, bus and target name."""

    device: str  # "cdrom" | "disk"
    bus: str
    dev: str


def config_drive_slot(
    machine: str, vfat: bool, *, cdrom_bus: str | None = None, disk_bus: str | None = None
) -> DriveSlot:
    """nova's choice of bus and device for the config drive (root disk is ``vda``)."""
    if vfat:
        bus = disk_bus if disk_bus in VALID_DISK_BUSES else "virtio"
        device = "disk"
    else:
        if cdrom_bus in VALID_CDROM_BUSES:
            bus = cdrom_bus
        elif "q35" in machine:
            bus = "sata"
        else:
            bus = "ide"
        device = "cdrom"
    # next free name on that prefix; the root disk holds vda
    dev = PREFIX[bus] + ("b" if bus == "virtio" else "a")
    return DriveSlot(device, bus, dev)


# the Linux driver each bus needs to show the guest the drive
BUS_DRIVERS = {"ide": "ata_piix", "sata": "ahci", "scsi": "virtio_scsi", "virtio": "virtio_blk",
               "usb": "usb_storage"}  # fmt: skip


def drivers_for(slot: DriveSlot, vfat: bool) -> tuple[str, ...]:
    """The guest kernel drivers (module names) that must be built in or loadable for the guest
    to see and mount a config drive in ``slot``: the bus's, the device type's and the
    filesystem's."""
    device = ("sr_mod", "cdrom") if slot.device == "cdrom" else ()
    disk = ("sd_mod",) if slot.device == "disk" and slot.bus in ("scsi", "sata", "usb") else ()
    return (BUS_DRIVERS[slot.bus], *device, *disk, "vfat" if vfat else "isofs")


# QEMU user network of guests with a NIC: admits guestfwd to 169.254.169.254
USER_NET = ipaddress.ip_network("169.254.0.0/16")


@dataclass(frozen=True)
class GuestFwd:
    """A ``guestfwd`` rule: guest TCP ``guest_ip:guest_port`` -> host loopback ``host:port``.

    QEMU's ``tcp:`` target opens ONE connection when QEMU starts, which serves one guest
    connection only; ``per_connection`` (the default) uses a ``cmd:nc HOST PORT`` target, which
    QEMU starts for every guest connection. ``guest_ip`` must lie inside the user network
    (``net=169.254.0.0/16`` admits 169.254.169.254).
    """

    guest_ip: str
    guest_port: int
    host: str
    host_port: int
    per_connection: bool = True

    def option(self) -> str:
        target = (
            f"cmd:nc {self.host} {self.host_port}"
            if self.per_connection
            else f"tcp:{self.host}:{self.host_port}"
        )
        return f"guestfwd=tcp:{self.guest_ip}:{self.guest_port}-{target}"


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to define and start one guest."""

    name: str
    uuid: str
    vcpus: int
    ram_mb: int
    machine: str
    accel: str  # "kvm" | "tcg"
    disk: Path
    console_log: Path
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    config_drive: Path | None = None
    config_drive_vfat: bool = False
    cdrom_bus: str | None = None  # image property hw_cdrom_bus
    disk_bus: str | None = None  # image property hw_disk_bus
    cache_mode: str = "none"
    # network: None = no NIC; else user networking, restrict=on, only these guestfwd rules
    user_net: tuple[GuestFwd, ...] | None = None
    user_net_cidr: str = str(USER_NET)
    user_net_dhcp_start: str | None = None  # the address QEMU's DHCP server leases first
    nic_mac: str | None = None  # the instance's first port's MAC, as nova sets the VIF's
    ssh_port: int | None = None  # a host loopback port forwarded to the guest's port 22
    qmp_socket: Path | None = None  # QEMU runs in its directory and binds it by name
    pidfile: Path | None = None
    extra_cpu: str | None = field(default=None)  # e.g. "host,-arch-capabilities" for KVM
    firmware: Firmware = Firmware.BIOS
    uefi_code: Path | None = None  # OVMF's code (read-only); uefi only
    uefi_vars: Path | None = None  # this instance's copy of OVMF's variable store; uefi only

    def __post_init__(self) -> None:
        uefi = self.firmware is Firmware.UEFI
        if uefi and (self.uefi_code is None or self.uefi_vars is None):
            raise ValueError("firmware uefi needs uefi_code and uefi_vars")
        if not uefi and (self.uefi_code is not None or self.uefi_vars is not None):
            raise ValueError("uefi_code and uefi_vars are for firmware uefi only")


def quote_optarg(value: str) -> str:
    """QEMU option values double their commas."""
    return value.replace(",", ",,")


def _slot(spec: GuestSpec) -> DriveSlot:
    return config_drive_slot(
        spec.machine, spec.config_drive_vfat, cdrom_bus=spec.cdrom_bus, disk_bus=spec.disk_bus
    )


def _netdev(spec: GuestSpec) -> str:
    assert spec.user_net is not None
    parts = ["user", "id=net0", "restrict=on", f"net={spec.user_net_cidr}"]
    if spec.user_net_dhcp_start:
        parts.append(f"dhcpstart={spec.user_net_dhcp_start}")
    parts += [rule.option() for rule in spec.user_net]
    if spec.ssh_port is not None:  # into the guest only, from this machine's loopback
        parts.append(f"hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22")
    return ",".join(parts)


def _nic_device(spec: GuestSpec) -> str:
    mac = f",mac={spec.nic_mac}" if spec.nic_mac else ""
    return f"virtio-net-pci,netdev=net0{mac}"


# nova's libvirt driver (_get_guest_config_sysinfo): how a guest learns it runs on OpenStack;
# cloud-init's ds-identify and its OpenStack datasource read these DMI fields.
SMBIOS_SYSTEM = (
    ("manufacturer", "OpenStack Foundation"),
    ("product", "OpenStack Nova"),
    ("family", "Virtual Machine"),
)


def _smbios_fields(spec: GuestSpec) -> tuple[tuple[str, str], ...]:
    return (*SMBIOS_SYSTEM, ("serial", spec.uuid), ("uuid", spec.uuid))


def _cdrom_device(slot: DriveSlot, drive_id: str) -> list[str]:
    if slot.bus == "ide":
        return ["-device", f"ide-cd,bus=ide.0,unit=0,drive={drive_id},id={slot.dev}"]
    if slot.bus == "sata":  # q35's built-in AHCI controller
        return ["-device", f"ide-cd,bus=ide.0,drive={drive_id},id={slot.dev}"]
    if slot.bus == "scsi":
        return ["-device", "virtio-scsi-pci,id=scsi0",
                "-device", f"scsi-cd,bus=scsi0.0,drive={drive_id},id={slot.dev}"]  # fmt: skip
    if slot.bus == "virtio":
        return ["-device", f"virtio-blk-pci,drive={drive_id},id={slot.dev}"]
    return ["-device", "qemu-xhci,id=usb",
            "-device", f"usb-storage,drive={drive_id},id={slot.dev}"]  # fmt: skip


def _disk_device(slot: DriveSlot, drive_id: str) -> list[str]:
    if slot.bus == "virtio":
        return ["-device", f"virtio-blk-pci,drive={drive_id},id={slot.dev}"]
    unit = "" if slot.bus == "sata" else ",unit=0"
    return ["-device", f"ide-hd,bus=ide.0{unit},drive={drive_id},id={slot.dev}"]


def qemu_argv(spec: GuestSpec, qemu: str = "qemu-system-x86_64") -> list[str]:
    """The plain-QEMU command line for ``spec`` (no shell involved)."""
    smbios = ",".join(f"{k}={quote_optarg(v)}" for k, v in _smbios_fields(spec))
    argv = [
        qemu,
        "-name", f"guest={quote_optarg(spec.name)}",
        "-uuid", spec.uuid,
        "-smbios", f"type=1,{smbios}",
        "-machine", f"{spec.machine},accel={spec.accel}",
        "-m", str(spec.ram_mb),
        "-smp", str(spec.vcpus),
        "-nodefaults", "-no-user-config",
        "-display", "none", "-vga", "none",
        "-no-reboot",
    ]  # fmt: skip
    if spec.extra_cpu:
        argv += ["-cpu", spec.extra_cpu]
    if spec.firmware is Firmware.UEFI:
        assert spec.uefi_code is not None and spec.uefi_vars is not None
        code, nvram = quote_optarg(str(spec.uefi_code)), quote_optarg(str(spec.uefi_vars))
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}",
        ]  # fmt: skip
    if spec.kernel is not None:
        argv += ["-kernel", str(spec.kernel)]
        if spec.initrd is not None:
            argv += ["-initrd", str(spec.initrd)]
        argv += ["-append", spec.cmdline]
    disk = quote_optarg(str(spec.disk))
    argv += [
        "-drive", f"file={disk},format=qcow2,if=none,id=drive-virtio-disk0,cache={spec.cache_mode}",
        "-device", "virtio-blk-pci,drive=drive-virtio-disk0,id=virtio-disk0,bootindex=1",
    ]  # fmt: skip
    if spec.config_drive is not None:
        slot = _slot(spec)
        path = quote_optarg(str(spec.config_drive))
        drive_id = f"drive-{slot.dev}"
        common = f"file={path},format=raw,if=none,id={drive_id},cache={spec.cache_mode}"
        if slot.device == "cdrom":
            argv += ["-drive", f"{common},media=cdrom,readonly=on", *_cdrom_device(slot, drive_id)]
        else:
            argv += ["-drive", common, *_disk_device(slot, drive_id)]
    console = quote_optarg(str(spec.console_log))
    argv += ["-chardev", f"file,id=charserial0,path={console}",
             "-device", "isa-serial,chardev=charserial0,id=serial0"]  # fmt: skip
    if spec.user_net is None:
        argv += ["-nic", "none"]
    else:
        argv += ["-netdev", _netdev(spec), "-device", _nic_device(spec)]
    if spec.qmp_socket is not None:
        # by name, relative to QEMU's working directory (the backend starts it in the socket's
        # directory): a unix socket path has 108 bytes, an instances_path has no such limit
        argv += ["-qmp", f"unix:{quote_optarg(spec.qmp_socket.name)},server=on,wait=off"]
    if spec.pidfile is not None:
        argv += ["-pidfile", str(spec.pidfile), "-daemonize"]
    check_isolated(argv)
    return argv


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def domain_xml(spec: GuestSpec) -> str:
    """The libvirt domain XML for ``spec``, as nova's libvirt driver would write it."""
    domain = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    _sub(domain, "memory", str(spec.ram_mb * 1024), unit="KiB")
    _sub(domain, "vcpu", str(spec.vcpus))
    sysinfo = _sub(domain, "sysinfo", type="smbios")
    system = _sub(sysinfo, "system")
    for key, value in _smbios_fields(spec):
        _sub(system, "entry", value, name=key)
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=spec.machine)
    if spec.firmware is Firmware.UEFI:
        assert spec.uefi_code is not None and spec.uefi_vars is not None
        _sub(os_, "loader", str(spec.uefi_code), readonly="yes", type="pflash", secure="no")
        _sub(os_, "nvram", str(spec.uefi_vars))
    _sub(os_, "smbios", mode="sysinfo")
    if spec.kernel is not None:
        _sub(os_, "kernel", str(spec.kernel))
        if spec.initrd is not None:
            _sub(os_, "initrd", str(spec.initrd))
        _sub(os_, "cmdline", spec.cmdline)
    else:
        _sub(os_, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.extra_cpu and spec.accel == "kvm":
        _sub(domain, "cpu", mode="host-passthrough")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache=spec.cache_mode)
    _sub(disk, "source", file=str(spec.disk))
    _sub(disk, "target", bus="virtio", dev="vda")
    if spec.config_drive is not None:
        slot = _slot(spec)
        drive = _sub(devices, "disk", type="file", device=slot.device)
        _sub(drive, "driver", name="qemu", type="raw", cache=spec.cache_mode)
        _sub(drive, "source", file=str(spec.config_drive))
        _sub(drive, "target", bus=slot.bus, dev=slot.dev)
    if "q35" not in spec.machine:
        _sub(devices, "controller", type="ide", index="0")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(spec.console_log))
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=str(spec.console_log))
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "memballoon", model="none")
    if spec.user_net is not None:
        # libvirt has no restrict=on for user networking: pass the isolated netdev through.
        domain.set("xmlns:qemu", "http://libvirt.org/schemas/domain/qemu/1.0")
        cmd = _sub(domain, "qemu:commandline")
        for arg in ("-netdev", _netdev(spec), "-device", _nic_device(spec)):
            _sub(cmd, "qemu:arg", value=arg)
    ET.indent(domain)
    xml = ET.tostring(domain, encoding="unicode") + "\n"
    check_isolated_xml(xml)
    return xml


# ---------------------------------------------------------------------------------------------
# isolation rules

# the only guestfwd targets allowed: a loopback TCP port, directly or through `nc HOST PORT`
_HOSTFWD = re.compile(r"^tcp:(\[[0-9a-fA-F:]+\]|[0-9.]+):(\d+)-[0-9.]*:(\d+)$")
_GUESTFWD = re.compile(
    r"^tcp:([^:]+):(\d+)-(?:tcp:([^:]+):(\d+)|cmd:nc ([0-9.]+|\[?::1\]?) (\d+))$"
)


def _check_netdev(value: str) -> None:
    kind, _, rest = value.partition(",")
    if kind == "none":
        return
    if kind != "user":
        raise IsolationError(
            f"network backend {kind!r} is not allowed; only restricted user networking"
        )
    options = rest.split(",") if rest else []
    if "restrict=on" not in options and "restrict=yes" not in options:
        raise IsolationError("user networking without restrict=on would NAT the guest out")
    for option in options:
        key, _, val = option.partition("=")
        if key in ("smb", "tftp", "bootfile"):
            raise IsolationError(f"user networking option {key} is not allowed")
        if key == "hostfwd":  # host -> guest; listening anywhere but loopback would expose it
            forward = _HOSTFWD.match(val)
            if not forward or not ipaddress.ip_address(forward.group(1).strip("[]")).is_loopback:
                raise IsolationError(
                    f"hostfwd {val!r} must listen on a loopback address (tcp:127.0.0.1:PORT-:PORT)"
                )
        if key == "guestfwd":
            match = _GUESTFWD.match(val)
            if not match:
                raise IsolationError(
                    f"guestfwd {val!r} is not tcp:IP:PORT-tcp:HOST:PORT or -cmd:nc HOST PORT"
                )
            host = (match.group(3) or match.group(5)).strip("[]")
            if not ipaddress.ip_address(host).is_loopback:
                raise IsolationError(f"guestfwd target {host} is not a loopback address")


def check_isolated(argv: list[str]) -> None:
    """Raise IsolationError unless ``argv`` keeps the guest on this machine."""
    has_nic_option = False
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-nic", "-netdev"):
            has_nic_option = True
            _check_netdev(value)
        elif flag == "-net":
            raise IsolationError("legacy -net options are not allowed")
        elif flag == "-device" and value.split(",")[0] in NIC_MODELS and "netdev=" not in value:
            raise IsolationError(f"NIC {value!r} without a checked netdev")
    if not has_nic_option:
        raise IsolationError(
            f"no -nic none/-netdev given; QEMU would add a NATed NIC: {shlex.join(argv)}"
        )


NIC_MODELS = frozenset({"virtio-net-pci", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet"})


def check_isolated_xml(xml: str) -> None:
    """Raise IsolationError unless the domain XML keeps the guest on this machine."""
    root = ET.fromstring(xml)
    for iface in root.iter("interface"):
        raise IsolationError(
            f"<interface type={iface.get('type')!r}> is not allowed "
            "(libvirt's default network NATs the guest out)"
        )
    ns = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    args = [a.get("value", "") for a in root.iter(f"{ns}arg")]
    if args:
        check_isolated(["qemu", *args])
