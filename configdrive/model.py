"""The instance model: one VM's metadata as frozen dataclasses and StrEnums.

Everything the render step needs and nothing else: the fields are the inputs nova's
``InstanceMetadata`` reads from an instance (see docs/formats.md). Construction does no I/O and
no validation beyond typing; ``configdrive.spec`` builds validated instances from files and flags.
"""

from __future__ import annotations

import enum
import uuid as _uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BlockDevice",
    "BlockDeviceKind",
    "BootSource",
    "Device",
    "DeviceBus",
    "DeviceKind",
    "InjectedFile",
    "Instance",
    "JSONValue",
    "KeyPair",
    "KeyType",
    "Networking",
    "Port",
    "Route",
    "Subnet",
    "derived_id",
]

JSONValue = Any

# The namespace of the ids configdrive derives from an instance's uuid when a spec leaves them
# out (project_id; in specs also port and network ids, --nic MACs): the same uuid gives the
# same drive, build after build (docs/formats.md, "Reproducible drives").
_DERIVED_IDS = _uuid.uuid5(_uuid.NAMESPACE_DNS, "derived-ids.configdrive.invalid")


def derived_id(instance_uuid: str, what: str) -> _uuid.UUID:
    """The stable id of ``what`` (``"project"``, ``"port/0"``…) of the instance ``instance_uuid``:
    a name-based UUID (RFC 9562 version 5), so it reveals nothing and never collides by chance
    with another instance's."""
    return _uuid.uuid5(_DERIVED_IDS, f"{instance_uuid}/{what}")


"""A value that ``json.dumps`` accepts (dict/list/str/int/float/bool/None)."""


def ec2_int_id(uuid_text: str) -> int:
    """The integer behind an EC2 id (``i-``/``ami-``/``aki-``/``ari-%08x``).

    nova takes it from a DB row it creates on first use (EC2InstanceMapping, S3ImageMapping);
    configdrive has no database and takes the UUID's low 32 bits, so the same UUID always gives
    the same EC2 id.
    """
    return _uuid.UUID(uuid_text).int & 0xFFFFFFFF


class BootSource(enum.StrEnum):
    """What the instance boots from: ``nova boot --image`` or ``--boot-volume``."""

    IMAGE = "image"
    VOLUME = "volume"


class BlockDeviceKind(enum.StrEnum):
    """Block devices nova shows in EC2 ``block-device-mapping`` (``ebsN``, ``ephemeralN``,
    ``swap``): a volume, a blank local disk, a blank local swap disk."""

    VOLUME = "volume"
    EPHEMERAL = "ephemeral"
    SWAP = "swap"


class KeyType(enum.StrEnum):
    """Nova keypair types."""

    SSH = "ssh"
    X509 = "x509"


class DeviceKind(enum.StrEnum):
    """Kinds of tagged device nova exposes in ``devices``."""

    NIC = "nic"
    DISK = "disk"
    SHARE = "share"


class DeviceBus(enum.StrEnum):
    """Bus names as nova prints them in ``devices[].bus``."""

    PCI = "pci"
    USB = "usb"
    SCSI = "scsi"
    IDE = "ide"
    XEN = "xen"
    NONE = "none"


class Networking(enum.StrEnum):
    """What the drive says about the guest's network (docs/formats.md, "No NIC" versus "a NIC
    no spec describes").

    ``ports``: the instance's ports, described as nova describes them. ``none``: no NIC (nova's
    ``--nic none``): ``network_data.json`` is ``{}``, exactly as nova writes it for a server
    without ports, so cloud-init configures nothing. ``auto``: a NIC that no spec describes (a
    VM on a DHCP network): the drive carries no network description at all, so cloud-init
    falls back to DHCP on the guest's NIC, whatever its MAC or interface name.
    """

    PORTS = "ports"
    NONE = "none"
    AUTO = "auto"


@dataclass(frozen=True)
class KeyPair:
    """A nova keypair: name plus public key text (OpenSSH line, or x509 PEM)."""

    name: str
    public_key: str
    type: KeyType = KeyType.SSH


@dataclass(frozen=True)
class InjectedFile:
    """A personality file: guest path and exact bytes."""

    path: str
    content: bytes


@dataclass(frozen=True)
class Device:
    """Device-role tagging metadata (``devices`` in meta_data.json, Newton and later)."""

    kind: DeviceKind
    bus: DeviceBus = DeviceBus.NONE
    address: str | None = None
    tags: tuple[str, ...] = ()
    mac: str | None = None  # nic
    vlan: int | None = None  # nic, shown from Ocata
    vf_trusted: bool | None = None  # nic, shown from Rocky (False when unset)
    serial: str | None = None  # disk
    path: str | None = None  # disk
    share_id: str | None = None  # share, shown from Epoxy
    share_tag: str | None = None  # share


@dataclass(frozen=True)
class BlockDevice:
    """A block device mapping besides the root disk: its kind and guest device name."""

    kind: BlockDeviceKind
    device: str  # /dev/vdb


@dataclass(frozen=True)
class Route:
    """A static route of a subnet: destination CIDR via gateway."""

    cidr: str
    gateway: str


@dataclass(frozen=True)
class Subnet:
    """One subnet of a port's network, with the port's fixed IPs on it."""

    cidr: str
    ips: tuple[str, ...] = ()
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    dhcp: bool = False  # nova: subnet meta ``dhcp_server`` set -> "ipv4_dhcp"/"ipv6_dhcp"
    ipv6_address_mode: str | None = None  # slaac | dhcpv6-stateful | dhcpv6-stateless

    @property
    def version(self) -> int:
        return 6 if ":" in self.cidr else 4


@dataclass(frozen=True)
class Port:
    """A VIF: one guest NIC on one network."""

    mac: str
    id: str = field(default_factory=lambda: str(_uuid.uuid4()))
    network_id: str = field(default_factory=lambda: str(_uuid.uuid4()))
    devname: str | None = None
    vif_type: str = "ovs"
    mtu: int | None = None
    subnets: tuple[Subnet, ...] = ()

    @property
    def link_id(self) -> str:
        """The link id in network_data.json: ``devname``, by default nova's
        ``"tap" + port id`` cut to 14 characters (nova/network/neutron.py)."""
        return self.devname or f"tap{self.id}"[:14]


@dataclass(frozen=True)
class Instance:
    """One instance's metadata, the input of :func:`configdrive.render.render`."""

    name: str
    uuid: str = field(default_factory=lambda: str(_uuid.uuid4()))
    hostname: str = ""  # as requested, or sanitised from the name (spec.sanitize_hostname)
    dhcp_domain: str | None = "novalocal"
    key_pairs: tuple[KeyPair, ...] = ()
    user_data: bytes | None = None
    files: tuple[InjectedFile, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    availability_zone: str | None = None  # None: the host's zone (RenderOptions)
    launch_index: int = 0
    project_id: str = ""  # "" means derived from the uuid (keystone's 32 hex digits)
    admin_pass: str | None = None
    devices: tuple[Device, ...] = ()
    dedicated_cpus: frozenset[int] = frozenset()  # a set in nova (NUMA cells' pcpuset)
    vendor_data: Mapping[str, JSONValue] | None = None  # StaticJSON provider
    vendor_data2: Mapping[str, JSONValue] = field(default_factory=dict)  # dynamic providers
    ports: tuple[Port, ...] = ()
    networking: Networking = Networking.AUTO  # PORTS whenever there are ports
    # EC2 view
    flavor: str = "m1.small"
    security_groups: tuple[str, ...] = ("default",)
    root_device_name: str | None = "/dev/vda"
    boot_source: BootSource = BootSource.IMAGE
    image_id: str | None = None  # glance image (image boot); default: derived from the uuid
    kernel_id: str | None = None  # AKI image, from the image's kernel_id property
    ramdisk_id: str | None = None  # ARI image, from the image's ramdisk_id property
    block_devices: tuple[BlockDevice, ...] = ()
    ami_id: str | None = None  # explicit EC2 ami-id of the image (default: from image_ref)
    reservation_id: str | None = None  # default: derived from the uuid
    ec2_instance_id: str | None = None  # default: derived from the uuid
    floating_ip: str | None = None

    def __post_init__(self) -> None:
        # ports given -> PORTS; PORTS without ports, or NONE with ports, is a contradiction
        if self.ports and self.networking is Networking.AUTO:
            object.__setattr__(self, "networking", Networking.PORTS)
        if bool(self.ports) != (self.networking is Networking.PORTS):
            raise ValueError(
                f"networking {self.networking} with {len(self.ports)} ports: "
                "ports and only ports mean networking ports"
            )
        if not self.project_id:
            object.__setattr__(self, "project_id", derived_id(self.uuid, "project").hex)

    @property
    def fqdn(self) -> str:
        """``hostname`` as nova's metadata shows it: ``<hostname>.<dhcp_domain>``."""
        return f"{self.hostname}.{self.dhcp_domain}" if self.dhcp_domain else self.hostname

    @property
    def ec2_id(self) -> str:
        """EC2-style instance id ``i-%08x`` (nova: the EC2 instance mapping's integer id)."""
        if self.ec2_instance_id:
            return self.ec2_instance_id
        return f"i-{ec2_int_id(self.uuid):08x}"

    @property
    def image_ref(self) -> str:
        """nova's ``instance.image_ref``: the image's UUID, ``""`` when booted from a volume."""
        if self.boot_source is BootSource.VOLUME:
            return ""
        if self.image_id:
            return self.image_id
        return str(derived_id(self.uuid, "image"))

    @property
    def ec2_ami_id(self) -> str | None:
        """EC2 ``ami-id``: ``ami-%08x`` of the image, None when booted from a volume."""
        if self.boot_source is BootSource.VOLUME:
            return None
        return self.ami_id or f"ami-{ec2_int_id(self.image_ref):08x}"

    @property
    def ec2_kernel_id(self) -> str | None:
        return f"aki-{ec2_int_id(self.kernel_id):08x}" if self.kernel_id else None

    @property
    def ec2_ramdisk_id(self) -> str | None:
        return f"ari-{ec2_int_id(self.ramdisk_id):08x}" if self.ramdisk_id else None

    @property
    def ec2_reservation_id(self) -> str:
        if self.reservation_id:
            return self.reservation_id
        return "r-%08x" % ((_uuid.UUID(self.uuid).int >> 32) & 0xFFFFFFFF)

    @property
    def fixed_ips(self) -> tuple[str, ...]:
        """Every fixed IP of every port, in port and subnet order."""
        return tuple(ip for port in self.ports for subnet in port.subnets for ip in subnet.ips)

    @property
    def first_fixed_ipv4(self) -> str | None:
        for ip in self.fixed_ips:
            if ":" not in ip:
                return ip
        return None
