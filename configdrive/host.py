"""Host-side settings for ``configdrive boot``: a nova.conf-style file, and the flavor table.

```ini
[DEFAULT]
instances_path = /var/lib/configdrive/instances
force_config_drive = true
config_drive_format = iso9660
default_availability_zone = nova   # the zone instances that ask for none are shown in

[libvirt]
virt_type = auto            # kvm | qemu (TCG) | auto: probe KVM with a real boot, else TCG
hw_machine_type = pc        # pc | q35 | any QEMU machine name
connection_uri = qemu:///system

[configdrive]
backend = libvirt           # libvirt | qemu (plain QEMU, no libvirtd)
metadata_admin_url = http://127.0.0.1:8776   # unset: register nothing
metadata_register = no-drive                 # no-drive | always
uefi_code = /usr/share/OVMF/OVMF_CODE_4M.fd           # OVMF for --firmware uefi (Debian's ovmf)
uefi_vars_template = /usr/share/OVMF/OVMF_VARS_4M.fd  # copied per instance, removed by delete
```

With ``metadata_admin_url`` set, ``configdrive boot`` registers each instance that gets no
config drive (``no-drive``, the default) or every instance (``always``) with that metadata
service's admin API before the guest starts, and ``configdrive delete`` unregisters it. The
admin token comes from the environment (``CONFIGDRIVE_ADMIN_TOKEN``), never from a file or argv.
"""

from __future__ import annotations

import configparser
import enum
import os
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path

from configdrive import constraints
from configdrive.drive import DriveFormat
from configdrive.errors import SpecError
from configdrive.render import DEFAULT_AVAILABILITY_ZONE, RenderOptions

__all__ = [
    "DEFAULT_HOST_CONFIG",
    "FLAVORS",
    "Accelerator",
    "BackendKind",
    "Flavor",
    "HostConfig",
    "RegisterPolicy",
    "find_flavor",
    "load_host_config",
]

DEFAULT_HOST_CONFIG = Path("/etc/configdrive/host.conf")


class Accelerator(enum.StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class BackendKind(enum.StrEnum):
    LIBVIRT = "libvirt"
    QEMU = "qemu"


class RegisterPolicy(enum.StrEnum):
    """Which instances ``boot`` registers with the metadata service (``metadata_register``)."""

    NO_DRIVE = "no-drive"  # those booted without a config drive: the service is their source
    ALWAYS = "always"  # every instance, drive or not (the drive and the service then agree)


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int


# A small table in nova's shape. RAM and disk are sized for the project's Debian guest.
FLAVORS: tuple[Flavor, ...] = (
    Flavor("1", "m1.tiny", 1, 768, 4),
    Flavor("2", "m1.small", 1, 1536, 8),
    Flavor("3", "m1.medium", 2, 2048, 16),
    Flavor("4", "m1.large", 2, 4096, 32),
)


def find_flavor(ref: str) -> Flavor:
    """A flavor by id (``1``) or name (``m1.tiny``)."""
    for flavor in FLAVORS:
        if ref in (flavor.id, flavor.name):
            return flavor
    known = ", ".join(f"{f.id}/{f.name}" for f in FLAVORS)
    raise SpecError("flavor", f"unknown flavor {ref!r} (known: {known})")


@dataclass(frozen=True)
class HostConfig:
    """One compute host's settings (nova.conf equivalents)."""

    instances_path: Path = Path("/var/lib/configdrive/instances")
    force_config_drive: bool = False
    config_drive_format: DriveFormat = DriveFormat.ISO9660
    default_availability_zone: str = DEFAULT_AVAILABILITY_ZONE
    machine_type: str = "pc"
    accelerator: Accelerator = Accelerator.AUTO
    backend: BackendKind = BackendKind.LIBVIRT
    libvirt_uri: str = "qemu:///system"
    qemu_binary: str = "qemu-system-x86_64"
    metadata_admin_url: str | None = None  # the metadata service's admin API; None: no registry
    metadata_register: RegisterPolicy = RegisterPolicy.NO_DRIVE
    uefi_code: Path = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    uefi_vars_template: Path = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    cache_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("CONFIGDRIVE_CACHE", Path.home() / ".cache" / "configdrive")
        )
    )

    def with_(self, **changes: object) -> HostConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    def render_options(self) -> RenderOptions:
        """The render settings this host's drives are built with."""
        return RenderOptions(default_availability_zone=self.default_availability_zone)


_BOOL = {
    "true": True,
    "yes": True,
    "1": True,
    "on": True,
    "false": False,
    "no": False,
    "0": False,
    "off": False,
}


def load_host_config(path: str | os.PathLike[str] | None) -> HostConfig:
    """Read a host config file; None or a missing default path gives the defaults."""
    if path is None:
        if not DEFAULT_HOST_CONFIG.exists():
            return HostConfig()
        path = DEFAULT_HOST_CONFIG
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise SpecError("host_config", f"cannot read {path}: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise SpecError("host_config", f"{path} is not a valid config file: {first}") from None
    default = parser["DEFAULT"]
    config = HostConfig()
    changes: dict[str, object] = {}
    if "instances_path" in default:
        changes["instances_path"] = Path(default["instances_path"]).expanduser().absolute()
    if "force_config_drive" in default:
        value = default["force_config_drive"].strip().lower()
        if value not in _BOOL:
            raise SpecError("force_config_drive", f"must be true or false, not {value!r}")
        changes["force_config_drive"] = _BOOL[value]
    if "config_drive_format" in default:
        try:
            changes["config_drive_format"] = DriveFormat(default["config_drive_format"].strip())
        except ValueError:
            raise SpecError(
                "config_drive_format", f"must be one of {', '.join(DriveFormat)}"
            ) from None
    if "default_availability_zone" in default:
        changes["default_availability_zone"] = constraints.az_name(
            default["default_availability_zone"].strip(), "default_availability_zone"
        )
    if parser.has_section("libvirt"):
        section = parser["libvirt"]
        if "hw_machine_type" in section:
            changes["machine_type"] = section["hw_machine_type"].strip()
        if "virt_type" in section:
            virt = section["virt_type"].strip()
            accel = {"qemu": "tcg", "kvm": "kvm", "auto": "auto", "tcg": "tcg"}.get(virt)
            if accel is None:
                raise SpecError("virt_type", f"must be kvm, qemu (TCG) or auto, not {virt!r}")
            changes["accelerator"] = Accelerator(accel)
        if "connection_uri" in section:
            changes["libvirt_uri"] = section["connection_uri"].strip()
    if parser.has_section("configdrive"):
        section = parser["configdrive"]
        if "backend" in section:
            try:
                changes["backend"] = BackendKind(section["backend"].strip())
            except ValueError:
                raise SpecError("backend", "must be libvirt or qemu") from None
        if "qemu_binary" in section:
            changes["qemu_binary"] = section["qemu_binary"].strip()
        if "cache_dir" in section:
            changes["cache_dir"] = Path(section["cache_dir"]).expanduser()
        for key in ("uefi_code", "uefi_vars_template"):
            if key in section:
                changes[key] = Path(section[key].strip()).expanduser()
        if "metadata_admin_url" in section:
            changes["metadata_admin_url"] = _admin_url(section["metadata_admin_url"])
        if "metadata_register" in section:
            policy = section["metadata_register"].strip()
            try:
                changes["metadata_register"] = RegisterPolicy(policy)
            except ValueError:
                raise SpecError(
                    "metadata_register",
                    f"must be {' or '.join(RegisterPolicy)}, not {policy!r}",
                ) from None
    return config.with_(**changes)


def _admin_url(text: str) -> str | None:
    """``metadata_admin_url``: an http(s) URL with a host; empty means unset."""
    url = text.strip()
    if not url:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(
            "metadata_admin_url",
            f"{url!r} is not an http:// or https:// URL",
            hint="the admin listener of `configdrive serve`, e.g. http://127.0.0.1:8776",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SpecError(
            "metadata_admin_url",
            "must be scheme://host[:port][/path] (no credentials, query or fragment)",
            hint="the admin token comes from the environment (CONFIGDRIVE_ADMIN_TOKEN)",
        )
    return url.rstrip("/")
