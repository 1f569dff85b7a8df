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
    "Device",
    "DeviceBus",
    "DeviceKind",
    "InjectedFile",
    "Instance",
    "JSONValue",
    "KeyPair",
    "KeyType",
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


@dataclass(frozen=True)
class Instance:
    """One instance's metadata, the input of :func:`configdrive.render.render`."""

    name: str
    uuid: str = field(default_factory=lambda: str(_uuid.uuid4()))
    hostname: str = (
        ""  # already sanitised; "" means "derive from name" (see spec.sanitize_hostname)
    )
    dhcp_domain: str | None = "novalocal"
    key_pairs: tuple[KeyPair, ...] = ()
    user_data: bytes | None = None
    files: tuple[InjectedFile, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    availability_zone: str | None = None
    launch_index: int = 0
    project_id: str = ""  # "" means derived from the uuid (keystone's 32 hex digits)
    admin_pass: str | None = None
    devices: tuple[Device, ...] = ()
    dedicated_cpus: tuple[int, ...] = ()
    vendor_data: Mapping[str, JSONValue] | None = None  # StaticJSON provider
    vendor_data2: Mapping[str, JSONValue] = field(default_factory=dict)  # dynamic providers
    ports: tuple[Port, ...] = ()
    # EC2 view
    flavor: str = "m1.small"
    security_groups: tuple[str, ...] = ("default",)
    root_device_name: str | None = "/dev/vda"
    ami_id: str | None = None
    reservation_id: str | None = None  # default: derived from the uuid
    ec2_instance_id: str | None = None  # default: derived from the uuid
    floating_ip: str | None = None

    def __post_init__(self) -> None:
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
        return "i-%08x" % (_uuid.UUID(self.uuid).int & 0xFFFFFFFF)

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
