"""``nova boot`` on one host: instance directory, disk overlay, config drive, domain, start.

Layout, as nova's libvirt driver keeps it::

    <instances_path>/_base/<image key>/      hard links of the image's disk, kernels, initrds
    <instances_path>/<uuid>/disk             qcow2 overlay on the base image (qemu-img)
    <instances_path>/<uuid>/disk.config      the config drive (when required)
    <instances_path>/<uuid>/libvirt.xml      the domain definition
    <instances_path>/<uuid>/console.log      the serial console
    <instances_path>/<uuid>/instance.json    what configdrive needs to list/delete it
    <instances_path>/<uuid>/spec.json        the instance, as a self-contained spec (update
                                             rebuilds disk.config from it)

Everything that can be checked is checked before the directory is made; if a later step fails
the directory (and any domain) is removed again, so no half-made instance is left behind.

When the host config names a metadata service (``metadata_admin_url``), an instance booted
without a config drive (or every instance, ``metadata_register = always``) is registered with
its admin API just before the guest starts, so its first request finds its metadata; a refused
or failed registration fails the boot and removes everything again. ``delete`` unregisters.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configdrive.builder import build
from configdrive.drive import DriveFormat
from configdrive.errors import ConfigDriveError, SpecError
from configdrive.host import BackendKind, Flavor, HostConfig, RegisterPolicy
from configdrive.login import Login, free_loopback_port, wait_for_login
from configdrive.model import Instance, Networking
from configdrive.run import find_tool, run
from configdrive.virt import Backend, get_backend
from configdrive.virt.accel import ProbeResult, probe_accelerator
from configdrive.virt.domain import (
    USER_NET,
    DriveSlot,
    Firmware,
    GuestFwd,
    GuestSpec,
    config_drive_slot,
    drivers_for,
)

if TYPE_CHECKING:
    from configdrive.service.client import AdminClient

__all__ = [
    "BootImage",
    "BootRequest",
    "InstanceRecord",
    "boot",
    "check_drivers",
    "console_stages",
    "delete",
    "domain_name",
    "find_instance",
    "guest_mac",
    "list_instances",
    "load_image",
    "registers",
    "required_by",
    "wait_for_ssh",
]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BootImage:
    """A bootable image: a qcow2 disk, optionally kernels for direct kernel boot."""

    disk: Path
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_generic: Path | None = None  # a kernel with AHCI (q35's SATA CD-ROM)
    initrd_generic: Path | None = None
    cmdline: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    firmware: Firmware = Firmware.BIOS  # what the image boots with (its manifest's "firmware")
    # what its kernel carries of the drivers a config drive may need: name -> builtin | module
    # | missing (the manifest's "drivers"); None: not known, so not checked
    drivers: Mapping[str, str] | None = None
    kernel_version: str = ""
    login_user: str | None = None  # the image's default cloud-init user (manifest "login_user")
    cloud_init: str = ""  # the guest's cloud-init package version (manifest "packages"), if known
    # whether tune-image's reread-drive step is in the image (its manifest's tune changes):
    # cloud-init then reads an updated config-2 drive at the next boot; None: not known
    rereads_drive: bool | None = None

    def kernel_for(self, machine: str) -> tuple[Path | None, Path | None]:
        if "q35" in machine and self.kernel_generic is not None:
            return self.kernel_generic, self.initrd_generic
        return self.kernel, self.initrd


def _dhcp_address(inst: Instance) -> str | None:
    """The address QEMU's DHCP server should lease: the first port's first IPv4 on a DHCP
    subnet inside the user network, as neutron's DHCP agent hands out the port's fixed IP."""
    if not inst.ports:
        return None
    for subnet in inst.ports[0].subnets:
        for ip in subnet.ips:
            address = ipaddress.ip_address(ip)
            if address.version == 4 and address in USER_NET:
                return str(address)
    return None


def guest_mac(inst: Instance) -> str:
    """The MAC of the guest's one NIC: the first port's; for a NIC no spec describes
    (``networking: auto``), a nova-style ``fa:16:3e:…`` one derived from the instance UUID, so
    that guests on one host differ (QEMU's default would give them all 52:54:00:12:34:56)."""
    if inst.ports:
        return inst.ports[0].mac
    tail = hashlib.sha256(inst.uuid.encode()).digest()[:3]
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in tail)


def _rereads_drive(manifest: Mapping[str, Any]) -> bool | None:
    """From an image manifest's recipe: whether its tuning has the reread-drive unit (None: the
    manifest does not say how the image was tuned)."""
    from configdrive.guest.profile import REREAD_UNIT

    recipe = manifest.get("recipe")
    if not isinstance(recipe, dict):
        return None
    changes = recipe.get("tune_changes")
    if not isinstance(changes, list):
        return False  # a recipe without tuning: a stock image
    return any(isinstance(c, dict) and c.get("path") == REREAD_UNIT for c in changes)


def load_image(ref: str | os.PathLike[str]) -> BootImage:
    """An image by path: a directory (or one of its manifests, e.g. ``manifest-uefi.json``)
    made by ``configdrive image build``,
    or a plain qcow2/raw file that boots by itself; ``tuned``/``untuned`` name the project's
    own guest images (built on first use, then cached)."""
    from configdrive.guest.image import ImageVariant, build_image

    path = Path(ref).expanduser()
    if str(ref) in {v.value for v in ImageVariant} and not path.exists():
        path = build_image(ImageVariant(str(ref))).qcow2.parent  # cached after the first build
    manifest = path / "manifest.json" if path.is_dir() else path
    if manifest.suffix == ".json" and manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise SpecError("image", f"{manifest} is not a readable manifest: {exc}") from None
        base = manifest.parent

        def rel(key: str) -> Path | None:
            value = data.get(key)
            return (
                None
                if not value
                else (base / value if not Path(value).is_absolute() else Path(value))
            )

        disk = rel("qcow2")
        if disk is None or not disk.is_file():
            raise SpecError("image", f"{manifest} names no existing qcow2 disk")
        image = BootImage(
            disk=disk,
            kernel=rel("kernel"),
            initrd=rel("initrd"),
            kernel_generic=rel("kernel_generic"),
            initrd_generic=rel("initrd_generic"),
            cmdline=str(data.get("cmdline", "")),
            properties={str(k): str(v) for k, v in (data.get("properties") or {}).items()},
            key=str(data.get("key", "")),
            firmware=_firmware(data.get("firmware", "bios"), f"{manifest}: firmware"),
            drivers=_drivers(data.get("drivers"), manifest),
            kernel_version=str(data.get("kernel_version", "")),
            login_user=str(data["login_user"]) if data.get("login_user") else None,
            cloud_init=_package(data, "cloud-init"),
            rereads_drive=_rereads_drive(data),
        )
        for part in (image.kernel, image.initrd, image.kernel_generic, image.initrd_generic):
            if part is not None and not part.is_file():
                raise SpecError("image", f"{manifest} names {part}, which does not exist")
        return image
    if path.is_file():
        return BootImage(disk=path, key=f"{path.stat().st_ino:x}-{path.stat().st_size:x}")
    raise SpecError("image", f"no image at {path}", hint="build one with `configdrive image build`")


def _package(manifest: Mapping[str, Any], name: str) -> str:
    packages = manifest.get("packages")
    version = packages.get(name) if isinstance(packages, dict) else None
    return version if isinstance(version, str) else ""


def _drivers(value: object, manifest: Path) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(v, str) and v in ("builtin", "module", "missing") for v in value.values()
    ):
        raise SpecError("image", f"{manifest}: drivers must map names to builtin|module|missing")
    return {str(k): v for k, v in value.items()}


def check_drivers(image: BootImage, slot: DriveSlot, vfat: bool) -> list[str]:
    """Refuse a config drive the guest's kernel cannot see or mount (SpecError naming the
    driver); the drivers checked, or [] when the image lists none."""
    if image.drivers is None:
        return []
    needed = drivers_for(slot, vfat)
    for driver in needed:
        if image.drivers.get(driver, "missing") == "missing":
            kernel = f"kernel {image.kernel_version}" if image.kernel_version else "kernel"
            what = f"{'vfat' if vfat else 'iso9660'} {slot.device} on the {slot.bus} bus"
            filesystem = driver in ("vfat", "isofs")
            raise SpecError(
                "image",
                f"the guest's {kernel} has no {driver} (neither built in nor a module), so the "
                f"guest could not {'mount' if filesystem else 'see'} its config drive ({what})",
                hint="use an image whose kernel has it, or config_drive_format "
                + ("iso9660" if vfat else "vfat")
                if filesystem
                else "put the drive on a bus this kernel has, e.g. --property "
                "hw_cdrom_bus=scsi (virtio-scsi)",
            )
    return list(needed)


def _firmware(value: object, where: str) -> Firmware:
    try:
        return Firmware(str(value))
    except ValueError:
        raise SpecError(where, f"must be bios or uefi, not {value!r}") from None


@dataclass(frozen=True)
class BootRequest:
    instance: Instance
    flavor: Flavor
    image: BootImage
    config_drive: bool | None = None  # --config-drive true|false; None = not asked
    properties: Mapping[str, str] = field(default_factory=dict)  # overrides image properties
    extra_cmdline: str = ""
    user_net: tuple[GuestFwd, ...] | None = None
    firmware: Firmware | None = None  # --firmware; None: the image's
    ssh: bool = False  # forward a loopback port to the guest's port 22 (implies a NIC)


def required_by(requested: bool | None, host: HostConfig, properties: Mapping[str, str]) -> bool:
    """nova.virt.configdrive.required_by for a new instance."""
    return (
        bool(requested)
        or host.force_config_drive
        or (properties.get("img_config_drive") == "mandatory")
    )


def registers(drive: bool, host: HostConfig) -> bool:
    """Whether ``boot`` registers an instance (with or without a ``drive``) with the host's
    metadata service."""
    if not host.metadata_admin_url:
        return False
    return host.metadata_register is RegisterPolicy.ALWAYS or not drive


def _admin_client(host: HostConfig) -> AdminClient:
    """The host's metadata admin API, with the token from the environment (never argv)."""
    from configdrive.service.client import ADMIN_TOKEN_ENV, AdminClient

    assert host.metadata_admin_url is not None
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        raise SpecError(
            ADMIN_TOKEN_ENV,
            f"must be set: the host config names a metadata service ({host.metadata_admin_url})",
            hint="export the service's admin token, or unset metadata_admin_url",
        )
    return AdminClient(host.metadata_admin_url, token)


@dataclass
class InstanceRecord:
    """What configdrive keeps in ``instance.json``."""

    name: str
    uuid: str
    path: Path
    backend: str
    accel: str
    accel_reason: str
    machine: str
    flavor: str
    config_drive: str | None
    created: str
    spec: dict[str, Any]
    metadata_url: str | None = None  # the admin API it was registered with, if any
    cloud_init: str = ""  # the guest image's cloud-init version, if its manifest says
    rereads_drive: bool | None = None  # the image's tune-image reread-drive step (None: unknown)
    warnings: list[str] = field(default_factory=list)  # what boot warned about

    @property
    def drive_path(self) -> Path | None:
        """The instance's config drive (``disk.config``), or None when it has none."""
        return self.path / "disk.config" if self.config_drive is not None else None

    def console_text(self) -> str:
        """The guest's serial console so far ("" before QEMU has written any)."""
        console = self.path / "console.log"
        return console.read_text(errors="replace") if console.exists() else ""

    def guest_spec(self) -> GuestSpec:
        raw = dict(self.spec)
        for key in (
            "disk",
            "console_log",
            "kernel",
            "initrd",
            "config_drive",
            "qmp_socket",
            "pidfile",
            "uefi_code",
            "uefi_vars",
        ):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        raw["firmware"] = Firmware(raw.get("firmware", "bios"))
        if raw.get("user_net") is not None:
            raw["user_net"] = tuple(GuestFwd(**rule) for rule in raw["user_net"])
        return GuestSpec(**raw)

    def to_json(self) -> str:
        data = asdict(self)
        data["path"] = str(self.path)
        return json.dumps(data, indent=2, default=str) + "\n"

    @classmethod
    def load(cls, path: Path) -> InstanceRecord:
        data = json.loads((path / "instance.json").read_text())
        data["path"] = Path(data["path"])
        return cls(**data)


def list_instances(host: HostConfig) -> list[InstanceRecord]:
    records = []
    if host.instances_path.is_dir():
        for child in sorted(host.instances_path.iterdir()):
            if (child / "instance.json").is_file():
                with contextlib.suppress(OSError, ValueError, TypeError):
                    records.append(InstanceRecord.load(child))
    return records


def find_instance(host: HostConfig, ref: str) -> InstanceRecord:
    for record in list_instances(host):
        if ref in (record.name, record.uuid):
            return record
    raise SpecError("instance", f"no instance named {ref!r} in {host.instances_path}")


def _cache_mode(directory: Path) -> str:
    """``none`` (O_DIRECT) where the filesystem supports it, else ``writethrough`` (as nova)."""
    probe = directory / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | getattr(os, "O_DIRECT", 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return "writethrough"
        raise
    os.close(fd)
    probe.unlink()
    return "none"


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def _base_image(image: BootImage, host: HostConfig) -> BootImage:
    """Place the image's files in ``_base`` (readable by the hypervisor's user), like nova."""
    key = image.key or f"{image.disk.stat().st_ino:x}"
    base = host.instances_path / "_base" / key
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    os.chmod(base.parent, 0o755)
    placed: dict[str, Path | None] = {}
    for name in ("disk", "kernel", "initrd", "kernel_generic", "initrd_generic"):
        src: Path | None = getattr(image, name)
        if src is None:
            placed[name] = None
            continue
        dst = base / (name if name != "disk" else "disk.qcow2")
        _link_or_copy(src, dst)
        placed[name] = dst
    disk = placed.pop("disk")
    assert disk is not None
    # replace(): every other field (cmdline, properties, firmware, ...) stays the image's
    return replace(
        image,
        disk=disk,
        key=key,
        kernel=placed["kernel"],
        initrd=placed["initrd"],
        kernel_generic=placed["kernel_generic"],
        initrd_generic=placed["initrd_generic"],
    )


def _virtual_size(path: Path) -> int:
    out = run([find_tool("qemu-img"), "info", "--output=json", "-U", path]).stdout
    return int(json.loads(out)["virtual-size"])


def domain_name(uuid: str) -> str:
    """The hypervisor's name for an instance, like nova's ``instance_name_template``: display
    names need not be unique, domain names must."""
    return f"instance-{uuid}"


def boot(
    request: BootRequest,
    host: HostConfig,
    backend: Backend | None = None,
    *,
    progress: Progress | None = None,
) -> InstanceRecord:
    """Create and start one instance; returns its record. Nothing is left behind on failure."""
    say = progress or (lambda _msg: None)
    inst = request.instance
    properties = {**request.image.properties, **request.properties}
    backend = backend or get_backend(host)
    user_net = request.user_net
    if request.ssh and user_net is None:  # SSH needs a NIC: the restricted one, no guestfwd
        user_net = ()
    # --- checks before anything is created
    if not request.image.disk.is_file():
        raise SpecError("image", f"no image at {request.image.disk}")
    for record in list_instances(host):
        if record.name == inst.name:
            raise SpecError(
                "name", f"an instance named {inst.name!r} already exists ({record.uuid})"
            )
        if record.uuid == inst.uuid:
            raise SpecError("uuid", f"instance {inst.uuid} already exists")
    if request.user_net is not None and inst.networking is Networking.NONE:
        raise SpecError(
            "networks",
            "is none (no NIC), but the boot gives the guest a network",
            hint="leave networks out (a NIC no spec describes, DHCP) or describe its port",
        )
    firmware = request.firmware or request.image.firmware
    if firmware is Firmware.UEFI:
        for what, path in (("uefi_code", host.uefi_code),
                           ("uefi_vars_template", host.uefi_vars_template)):  # fmt: skip
            if not path.is_file():
                raise SpecError(
                    "firmware",
                    f"uefi needs OVMF, but {what} {path} does not exist",
                    hint="apt-get install ovmf, or set uefi_code and uefi_vars_template in the "
                    "host config",
                )
    drive_needed = required_by(request.config_drive, host, properties)
    fmt: DriveFormat = host.config_drive_format
    if drive_needed:  # before anything is created: a drive the guest cannot see is no drive
        slot = config_drive_slot(
            host.machine_type,
            fmt.filesystem == "vfat",
            cdrom_bus=properties.get("hw_cdrom_bus"),
            disk_bus=properties.get("hw_disk_bus"),
        )
        checked = check_drivers(request.image, slot, fmt.filesystem == "vfat")
        say(
            f"config drive: {slot.device} on the {slot.bus} bus; the guest's kernel has "
            + (", ".join(checked) if checked else "drivers unknown (no list in the manifest)")
        )
    admin = _admin_client(host) if registers(drive_needed, host) else None
    qemu_img = find_tool("qemu-img")
    backend.check()
    image_size = _virtual_size(request.image.disk)
    flavor_bytes = request.flavor.disk_gb * 1024**3
    if flavor_bytes < image_size:
        raise SpecError(
            "flavor",
            f"{request.flavor.name} has a {request.flavor.disk_gb} GiB disk, smaller than the "
            f"image's {image_size / 1024**3:.1f} GiB",
        )
    kernel, _ = request.image.kernel_for(host.machine_type)
    if request.extra_cmdline and kernel is None:
        raise SpecError(
            "append",
            "this image boots from its own disk (its bootloader chooses the kernel command "
            "line), so --append has nothing to add to",
            hint="edit the image's grub.cfg, or use an image built with --boot kernel",
        )
    probe: ProbeResult = probe_accelerator(
        host.accelerator, kernel=kernel, qemu=host.qemu_binary, cache_dir=host.cache_dir
    )
    say(f"accelerator: {probe.accel} ({probe.reason})")
    directory = host.instances_path / inst.uuid
    qmp = directory / "qmp.sock" if backend.kind == "qemu" else None
    # --- create
    host.instances_path.mkdir(parents=True, exist_ok=True)
    os.chmod(host.instances_path, 0o755)
    directory.mkdir(mode=0o755)
    spec: GuestSpec | None = None
    registered = False
    try:
        os.chmod(directory, 0o755)
        base = _base_image(request.image, host)
        kernel, initrd = base.kernel_for(host.machine_type)
        disk = directory / "disk"
        say(f"disk: qcow2 overlay on {base.disk}")
        run(
            [
                qemu_img,
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                base.disk,
                disk,
                str(flavor_bytes),
            ]
        )
        drive: Path | None = None
        warnings: list[str] = []
        if drive_needed:
            drive = directory / "disk.config"
            result = build(inst, drive, fmt, options=host.render_options())
            os.chmod(drive, 0o644)  # read by the hypervisor's user; nova leaves it 0644 too
            say(f"config drive: {drive} ({fmt}, {result.size} bytes)")
            warnings += _nic_warnings(drive, [guest_mac(inst)] if user_net is not None else [])
        console = directory / "console.log"
        console.touch(mode=0o644)
        nvram: Path | None = None
        if firmware is Firmware.UEFI:  # the instance's own variable store, gone with it
            nvram = directory / "nvram.fd"
            shutil.copyfile(host.uefi_vars_template, nvram)
            os.chmod(nvram, 0o644)
            say(f"firmware: uefi ({host.uefi_code}, variables in {nvram})")
        cmdline = " ".join(p for p in (base.cmdline, request.extra_cmdline) if p)
        spec = GuestSpec(
            name=domain_name(inst.uuid),
            uuid=inst.uuid,
            vcpus=request.flavor.vcpus,
            ram_mb=request.flavor.ram_mb,
            machine=host.machine_type,
            accel=probe.accel,
            disk=disk,
            console_log=console,
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            config_drive=drive,
            config_drive_vfat=fmt.filesystem == "vfat",
            cdrom_bus=properties.get("hw_cdrom_bus"),
            disk_bus=properties.get("hw_disk_bus"),
            cache_mode=_cache_mode(directory),
            user_net=user_net,
            # a NIC no spec describes stays undescribed: the drive is what `build` writes,
            # and cloud-init brings the NIC up with DHCP (QEMU's user network answers it)
            nic_mac=guest_mac(inst) if user_net is not None else None,
            user_net_dhcp_start=_dhcp_address(inst) if user_net is not None else None,
            ssh_port=free_loopback_port() if request.ssh else None,
            qmp_socket=qmp,
            pidfile=directory / "qemu.pid" if backend.kind == "qemu" else None,
            extra_cpu=probe.cpu if probe.accel == "kvm" else None,
            firmware=firmware,
            uefi_code=host.uefi_code if nvram is not None else None,
            uefi_vars=nvram,
        )
        (directory / "libvirt.xml").write_text(backend.definition(spec))
        if admin is not None:  # before the guest starts: its first request must find it
            described = admin.register(inst)
            registered = True
            ips = ", ".join(described.get("fixed_ips") or []) or "no fixed IP"
            say(f"metadata service: registered {inst.uuid} ({ips}) at {admin.url}")
        record = InstanceRecord(
            name=inst.name,
            uuid=inst.uuid,
            path=directory,
            backend=str(backend.kind),
            accel=probe.accel,
            accel_reason=probe.reason,
            machine=host.machine_type,
            flavor=request.flavor.name,
            config_drive=str(fmt) if drive is not None else None,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            spec=_spec_dict(spec),
            metadata_url=admin.url if admin is not None else None,
            cloud_init=request.image.cloud_init,
            rereads_drive=request.image.rereads_drive,
            warnings=warnings,
        )
        (directory / "instance.json").write_text(record.to_json())
        write_instance_spec(directory, inst)
        say(f"starting {inst.name} ({backend.kind}, {probe.accel}, {host.machine_type})")
        backend.start(spec)
    except BaseException:
        if spec is not None:
            with contextlib.suppress(Exception):
                backend.destroy(spec)
        if registered and admin is not None:
            with contextlib.suppress(Exception):
                admin.unregister(inst.uuid)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return record


SPEC_FILE = "spec.json"


def write_instance_spec(directory: Path, instance: Instance) -> Path:
    """Store ``instance`` as the self-contained spec ``update`` starts from (atomically;
    mode 0600: it holds the admin password and the user data)."""
    from configdrive.service.client import instance_spec

    target = directory / SPEC_FILE
    tmp = directory / f".{SPEC_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(instance_spec(instance), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def _nic_warnings(drive: Path, macs: list[str]) -> list[str]:
    """check's network rules on the drive against the guest's NICs (``macs``): a described
    port with no NIC (cloud-init waits for it), a NIC no link describes (left unconfigured)."""
    from configdrive.lifecycle.check import check_drive

    report = check_drive(drive, macs=macs)
    return [f.message for f in report.findings if f.rule == "network"]


def _spec_dict(spec: GuestSpec) -> dict[str, Any]:
    data = asdict(spec)
    for key, value in data.items():
        if isinstance(value, Path):
            data[key] = str(value)
    return data


def delete(
    host: HostConfig,
    ref: str,
    backend: Backend | None = None,
    *,
    progress: Progress | None = None,
) -> InstanceRecord:
    """Unregister the instance from the host's metadata service (if the host names one), stop
    the guest, remove its domain and its instance directory.

    Unregistering comes first: if the service cannot be reached, nothing is changed."""
    say = progress or (lambda _msg: None)
    record = find_instance(host, ref)
    if host.metadata_admin_url:
        from configdrive.service.client import RegistrationError

        admin = _admin_client(host)
        try:
            found = admin.unregister(record.uuid)
        except RegistrationError as exc:
            unreachable = exc.status is None
            raise RegistrationError(
                f"{record.name} not deleted: {exc}",
                hint="start the metadata service, or unset metadata_admin_url in the host "
                "config to delete without unregistering"
                if unreachable
                else exc.hint,
                status=exc.status,
            ) from None
        state = "unregistered from" if found else "was not registered with"
        say(f"metadata service: {record.uuid} {state} {admin.url}")
    if backend is None:
        backend = get_backend(host.with_(backend=BackendKind(record.backend)))
    backend.destroy(record.guest_spec())
    shutil.rmtree(record.path)
    return record


def wait_for_ssh(
    record: InstanceRecord,
    host: HostConfig,
    identity: Path,
    user: str,
    timeout: float,
    *,
    progress: Progress | None = None,
) -> Login:
    """Wait until ``user`` can log in to the instance over its SSH forward; the Login."""
    port = record.spec.get("ssh_port")
    if not isinstance(port, int):
        raise ConfigDriveError(
            f"{record.name} has no SSH forward", hint="boot it with --ssh or --wait ssh"
        )
    login = Login(port=port, identity=identity, user=user)
    backend = get_backend(host.with_(backend=BackendKind(record.backend)))
    spec = record.guest_spec()
    wait_for_login(login, timeout, alive=lambda: backend.is_running(spec), progress=progress)
    return login


_STAGE = re.compile(
    r"Cloud-init v\. \S+ (?:running '(?P<stage>[^']+)'|(?P<finished>finished)) at .*?"
    r"Up (?P<up>[0-9.]+) seconds"
)


def console_stages(text: str) -> dict[str, float]:
    """cloud-init's stages as its own console lines report them: stage -> guest uptime (s) at
    its start, and ``finished``. Every cloud-init prints these; no check unit is needed."""
    stages: dict[str, float] = {}
    for match in _STAGE.finditer(text):
        name = "finished" if match.group("finished") else match.group("stage")
        stages.setdefault(name, float(match.group("up")))
    return stages


def wait_for_console(
    record: InstanceRecord, pattern: str, timeout: float, *, poll: float = 0.5
) -> str:
    """Wait until ``pattern`` appears on the guest's console; return the console text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = record.console_text()
        if pattern in text:
            return text
        time.sleep(poll)
    raise ConfigDriveError(
        f"{record.name}: {pattern!r} did not appear on the console within {timeout:.0f}s"
    )
