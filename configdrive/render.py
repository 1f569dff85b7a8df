"""Render an :class:`~configdrive.model.Instance` into the file tree nova writes.

This is the one pure step of configdrive: drive writers and the HTTP metadata service only lay
out or serve what these functions return, so they cannot disagree. The only input that is not
in the instance is randomness for ``random_seed``, which callers may inject (``urandom``).

Layout and every version gate follow nova's ``InstanceMetadata`` (``nova/api/metadata/base.py``)
and ``metadata_for_config_drive``; docs/formats.md lists them with their sources.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from configdrive.errors import SpecError
from configdrive.model import (
    BlockDeviceKind,
    Device,
    DeviceKind,
    Instance,
    JSONValue,
    Networking,
    Port,
    Subnet,
)

__all__ = [
    "DEFAULT_AVAILABILITY_ZONE",
    "DEFAULT_SKIP_VERSIONS",
    "EC2_VERSIONS",
    "Layout",
    "OPENSTACK_VERSIONS",
    "RenderOptions",
    "Tree",
    "Urandom",
    "describes_network",
    "ec2_metadata",
    "meta_data",
    "network_data",
    "nocloud_network_config",
    "openstack_files",
    "render",
    "render_config_drive",
    "render_nocloud",
    "resolve_openstack_version",
    "vendor_data",
    "vendor_data2",
]

Tree = dict[str, bytes]
"""Relative POSIX path (``openstack/latest/meta_data.json``) -> file bytes, in nova's order."""

Urandom = Callable[[int], bytes]

EC2_VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)

FOLSOM = "2012-08-10"
GRIZZLY = "2013-04-04"
HAVANA = "2013-10-17"
LIBERTY = "2015-10-15"
NEWTON_ONE = "2016-06-30"
NEWTON_TWO = "2016-10-06"
OCATA = "2017-02-22"
ROCKY = "2018-08-27"
VICTORIA = "2020-10-14"
EPOXY = "2025-04-04"

OPENSTACK_VERSIONS: tuple[str, ...] = (
    FOLSOM,
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_ONE,
    NEWTON_TWO,
    OCATA,
    ROCKY,
    VICTORIA,
    EPOXY,
)

# nova [api] config_drive_skip_versions default; applied to EC2 versions only, as nova does.
DEFAULT_SKIP_VERSIONS: tuple[str, ...] = EC2_VERSIONS[:-1]

# VIF types nova has always shown in network_data.json; any other becomes "phy".
LEGACY_EXPOSED_VIF_TYPES = frozenset(
    {"bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif"}
)

SEED_BYTES = 512


class Layout(enum.StrEnum):
    """Which tree to render: OpenStack config drive (``config-2``) or NoCloud (``cidata``)."""

    CONFIG_DRIVE = "config-2"
    NOCLOUD = "nocloud"


DEFAULT_AVAILABILITY_ZONE = "nova"  # nova.conf [DEFAULT] default_availability_zone


@dataclass(frozen=True)
class RenderOptions:
    """Host-side settings that change the rendered tree (nova.conf equivalents)."""

    skip_versions: tuple[str, ...] = DEFAULT_SKIP_VERSIONS
    # the zone of a host in no zone aggregate: a scheduled instance that asked for no zone
    # gets it (nova availability_zones.get_host_availability_zone)
    default_availability_zone: str = DEFAULT_AVAILABILITY_ZONE

    def availability_zone(self, instance: Instance) -> str:
        """The instance's zone: the one it asked for, else its host's."""
        return instance.availability_zone or self.default_availability_zone


def _dump(obj: JSONValue) -> bytes:
    # oslo jsonutils.dump_as_bytes: json.dumps defaults, UTF-8.
    return json.dumps(obj).encode("utf-8")


def _at_least(required: str, requested: str, versions: tuple[str, ...]) -> bool:
    # nova _check_version: list positions, not dates; "latest" is the newest.
    index = len(versions) if requested == "latest" else versions.index(requested)
    return index >= versions.index(required)


def resolve_openstack_version(version: str) -> str:
    """``latest`` -> newest OpenStack version; raise KeyError for an unknown one."""
    if version == "latest":
        return OPENSTACK_VERSIONS[-1]
    if version not in OPENSTACK_VERSIONS:
        raise KeyError(version)
    return version


def _os_at_least(required: str, version: str) -> bool:
    return _at_least(required, resolve_openstack_version(version), OPENSTACK_VERSIONS)


def _ec2_at_least(required: str, version: str) -> bool:
    return _at_least(required, version, EC2_VERSIONS)


# --------------------------------------------------------------------------------------------
# OpenStack: meta_data.json


def _devices(instance: Instance, version: str) -> list[dict[str, Any]]:
    vlans = _os_at_least(OCATA, version)
    trusted = _os_at_least(ROCKY, version)
    shares = _os_at_least(EPOXY, version)
    out: list[dict[str, Any]] = []
    for device in instance.devices:
        entry = _device(device, vlans=vlans, trusted=trusted, shares=shares)
        if entry is not None:
            out.append(entry)
    return out


def _device(device: Device, *, vlans: bool, trusted: bool, shares: bool) -> dict[str, Any] | None:
    entry: dict[str, Any] = {}
    if device.kind is DeviceKind.NIC:
        if vlans and device.vlan is not None:
            entry["vlan"] = device.vlan
        if trusted:
            entry["vf_trusted"] = bool(device.vf_trusted)
        entry["type"] = "nic"
        entry["mac"] = device.mac
        # nova hides a NIC that has neither tags, vlan nor vf_trusted in its output.
        if not (device.tags or "vlan" in entry or "vf_trusted" in entry):
            return None
    elif device.kind is DeviceKind.DISK:
        entry["type"] = "disk"
        if device.serial is not None:
            entry["serial"] = device.serial
        if device.path is not None:
            entry["path"] = device.path
    elif device.kind is DeviceKind.SHARE and shares:
        entry["type"] = "share"
        entry["share_id"] = device.share_id
        entry["tag"] = device.share_tag
    else:
        return None
    entry["bus"] = str(device.bus)
    entry["address"] = device.address if device.address is not None else "none"
    if device.tags:
        entry["tags"] = list(device.tags)
    return entry


def _files(instance: Instance) -> list[dict[str, str]]:
    return [
        {"path": f.path, "content_path": f"/content/{index:04d}"}
        for index, f in enumerate(instance.files)
    ]


def meta_data(
    instance: Instance,
    version: str,
    *,
    urandom: Urandom = os.urandom,
    extra: Mapping[str, JSONValue] | None = None,
    options: RenderOptions | None = None,
) -> dict[str, Any]:
    """``openstack/<version>/meta_data.json`` as a dict, keys in nova's order.

    ``extra`` is nova's ``extra_md``: the config drive passes ``{"admin_pass": …}``; the metadata
    service passes nothing, so ``admin_pass`` is only ever on drives.
    """
    md: dict[str, Any] = {"uuid": instance.uuid}
    if instance.meta:
        md["meta"] = dict(instance.meta)
    if instance.files:
        md["files"] = _files(instance)
    if extra:
        md.update(extra)
    if instance.key_pairs:
        key = instance.key_pairs[0]
        md["public_keys"] = {key.name: key.public_key}
        md["keys"] = [{"name": key.name, "type": str(key.type), "data": key.public_key}]
    md["hostname"] = instance.fqdn
    md["name"] = instance.name
    md["launch_index"] = instance.launch_index
    md["availability_zone"] = (options or RenderOptions()).availability_zone(instance)
    if _os_at_least(GRIZZLY, version):
        md["random_seed"] = base64.b64encode(urandom(SEED_BYTES)).decode("ascii")
    if _os_at_least(LIBERTY, version):
        md["project_id"] = instance.project_id
    if _os_at_least(NEWTON_ONE, version):
        md["devices"] = _devices(instance, version)
    if _os_at_least(VICTORIA, version):
        md["dedicated_cpus"] = sorted(instance.dedicated_cpus)
    return md


def vendor_data(instance: Instance) -> JSONValue:
    """``vendor_data.json``: the StaticJSON provider's document, ``{}`` when none."""
    return dict(instance.vendor_data) if instance.vendor_data is not None else {}


def vendor_data2(instance: Instance) -> dict[str, JSONValue]:
    """``vendor_data2.json``: ``{"static": …}`` plus one key per dynamic provider."""
    out: dict[str, JSONValue] = {"static": vendor_data(instance)}
    for name, value in instance.vendor_data2.items():
        if name in out:  # nova drops a provider whose key already exists
            continue
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# network_data.json (nova/virt/netutils.py get_network_metadata)


def _first_subnet(port: Port, version: int) -> Subnet | None:
    return next((s for s in port.subnets if s.version == version), None)


def _default_route(version: int, subnet: Subnet) -> list[dict[str, str]]:
    if not subnet.gateway:
        return []
    any_net = "0.0.0.0" if version == 4 else "::"
    return [{"network": any_net, "netmask": any_net, "gateway": subnet.gateway}]


def _dns_services(subnet: Subnet) -> list[dict[str, str]]:
    return [{"type": "dns", "address": address} for address in subnet.dns]


def _link_mtu(port: Port) -> int | None:
    # nova netutils._get_link_mtu: null when any subnet of the port has a DHCP server
    return None if any(s.dhcp for s in port.subnets) else port.mtu


def _network(port: Port, subnet: Subnet, version: int, num: int, link: str) -> dict[str, Any]:
    suffix = ""
    if subnet.ipv6_address_mode is not None:
        suffix = f"_{subnet.ipv6_address_mode}"
    elif subnet.dhcp:
        return {
            "id": f"network{num}",
            "type": f"ipv{version}_dhcp",
            "link": link,
            "network_id": port.network_id,
        }
    net = ipaddress.ip_network(subnet.cidr, strict=False)
    routes = _default_route(version, subnet)
    for route in subnet.routes:
        dest = ipaddress.ip_network(route.cidr, strict=False)
        routes.append(
            {
                "network": str(dest.network_address),
                "netmask": str(dest.netmask),
                "gateway": route.gateway,
            }
        )
    return {
        "id": f"network{num}",
        "type": f"ipv{version}{suffix}",
        "link": link,
        "ip_address": subnet.ips[0],
        "netmask": str(net.netmask),
        "routes": routes,
        "network_id": port.network_id,
        "services": _dns_services(subnet),
    }


def network_data(instance: Instance) -> dict[str, Any] | None:
    """``network_data.json`` as nova builds it; None when the instance has no networks."""
    if not instance.ports:
        return None
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    services: list[dict[str, str]] = []
    ifc_num = -1
    net_num = -1
    for port in instance.ports:
        if not port.subnets:
            continue
        v4 = _first_subnet(port, 4)
        v6 = _first_subnet(port, 6)
        ifc_num += 1
        if v4 is None and v6 is None:
            continue
        link_id = port.link_id
        links.append(
            {
                "id": link_id,
                "vif_id": port.id,
                "type": port.vif_type if port.vif_type in LEGACY_EXPOSED_VIF_TYPES else "phy",
                "mtu": _link_mtu(port),
                "ethernet_mac_address": port.mac,
            }
        )
        for version, subnet in ((4, v4), (6, v6)):
            if subnet is None or not subnet.ips:
                continue
            net_num += 1
            networks.append(_network(port, subnet, version, net_num, link_id))
            services += [dns for dns in _dns_services(subnet) if dns not in services]
    return {"links": links, "networks": networks, "services": services}


# --------------------------------------------------------------------------------------------
# EC2 view (get_ec2_metadata)


def _block_device_mapping(instance: Instance) -> dict[str, str]:
    """nova block_device.instance_block_mapping over the instance's block device mappings."""
    if instance.root_device_name is None:
        return {"ami": "sda1", "ephemeral0": "sda2", "root": "/dev/sda1", "swap": "sda3"}
    root = instance.root_device_name
    mapping = {"ami": root.removeprefix("/dev/"), "root": root}
    swap = [d.device for d in instance.block_devices if d.kind is BlockDeviceKind.SWAP]
    if swap:  # the libvirt driver sets default_swap_device before it builds the drive
        mapping["swap"] = swap[-1]
    volumes = [d.device for d in instance.block_devices if d.kind is BlockDeviceKind.VOLUME]
    if instance.ec2_ami_id is None:  # booted from a volume: the root disk is one
        volumes.append(root)
    for num, device in enumerate(sorted(volumes)):
        mapping[f"ebs{num}"] = device
    ephemerals = [d.device for d in instance.block_devices if d.kind is BlockDeviceKind.EPHEMERAL]
    for num, device in enumerate(ephemerals):
        mapping[f"ephemeral{num}"] = device
    return mapping


def ec2_metadata(
    instance: Instance,
    version: str,
    *,
    address: str | None = None,
    options: RenderOptions | None = None,
) -> dict[str, Any]:
    """The EC2 ``meta-data`` tree for ``version`` (``latest`` = 2009-04-04), keys in nova's order.

    ``address`` is the request's source address (metadata service); drives pass None, so
    ``local-ipv4`` is null there when the instance has no fixed IPv4.
    """
    if version == "latest":
        version = EC2_VERSIONS[-1]
    if version not in EC2_VERSIONS:
        raise KeyError(version)
    hostname = instance.fqdn
    md: dict[str, Any] = {
        "ami-id": instance.ec2_ami_id,
        "ami-launch-index": instance.launch_index,
        "ami-manifest-path": "FIXME",
        "instance-id": instance.ec2_id,
        "hostname": hostname,
        "local-ipv4": instance.first_fixed_ipv4 or address,
        "reservation-id": instance.ec2_reservation_id,
        "security-groups": list(instance.security_groups),
    }
    if instance.key_pairs:
        key = instance.key_pairs[0]
        md["public-keys"] = {"0": {"_name": f"0={key.name}", "openssh-key": key.public_key}}
    if _ec2_at_least("2007-01-19", version):
        md["local-hostname"] = hostname
        md["public-hostname"] = hostname
        md["public-ipv4"] = instance.floating_ip or ""
    if _ec2_at_least("2007-08-29", version):
        md["instance-type"] = instance.flavor
    if _ec2_at_least("2007-12-15", version):
        md["block-device-mapping"] = _block_device_mapping(instance)
        if instance.ec2_kernel_id:
            md["kernel-id"] = instance.ec2_kernel_id
        if instance.ec2_ramdisk_id:
            md["ramdisk-id"] = instance.ec2_ramdisk_id
    if _ec2_at_least("2008-02-01", version):
        zone = (options or RenderOptions()).availability_zone(instance)
        md["placement"] = {"availability-zone": zone}
    if _ec2_at_least("2008-09-01", version):
        md["instance-action"] = "none"
    return md


# --------------------------------------------------------------------------------------------
# The config drive tree (metadata_for_config_drive)


def describes_network(instance: Instance) -> bool:
    """Whether the tree carries a network description: not for ``networking: auto`` (a NIC no
    spec describes), so that cloud-init falls back to DHCP on the guest's NIC."""
    return instance.networking is not Networking.AUTO


def openstack_files(version: str, instance: Instance | None = None) -> tuple[str, ...]:
    """Names nova writes into ``openstack/<version>/`` on a drive (user_data aside), in order;
    without ``network_data.json`` for an ``instance`` that does not describe its network."""
    names = ["meta_data.json"]
    if _os_at_least(HAVANA, version):
        names.append("vendor_data.json")
    if _os_at_least(LIBERTY, version) and (instance is None or describes_network(instance)):
        names.append("network_data.json")
    if _os_at_least(NEWTON_TWO, version):
        names.append("vendor_data2.json")
    return tuple(names)


def openstack_file(
    instance: Instance,
    version: str,
    name: str,
    *,
    urandom: Urandom = os.urandom,
    extra: Mapping[str, JSONValue] | None = None,
    options: RenderOptions | None = None,
) -> bytes:
    """One file of ``openstack/<version>/`` as bytes; KeyError when nova would answer 404."""
    if name == "meta_data.json":
        return _dump(meta_data(instance, version, urandom=urandom, extra=extra, options=options))
    if name == "user_data" and instance.user_data is not None:
        resolve_openstack_version(version)
        return instance.user_data
    if name == "vendor_data.json" and _os_at_least(HAVANA, version):
        return _dump(vendor_data(instance))
    if name == "network_data.json" and _os_at_least(LIBERTY, version):
        if not describes_network(instance):
            raise KeyError(name)
        return _dump(network_data(instance) or {})
    if name == "vendor_data2.json" and _os_at_least(NEWTON_TWO, version):
        return _dump(vendor_data2(instance))
    raise KeyError(name)


def _config_drive_entries(
    instance: Instance, options: RenderOptions, urandom: Urandom
) -> Iterator[tuple[str, bytes]]:
    extra = {"admin_pass": instance.admin_pass} if instance.admin_pass else None
    for version in (*EC2_VERSIONS, "latest"):
        if version in options.skip_versions:
            continue
        if instance.user_data is not None:
            yield f"ec2/{version}/user-data", instance.user_data
        yield (
            f"ec2/{version}/meta-data.json",
            _dump(ec2_metadata(instance, version, options=options)),
        )
    for version in (*OPENSTACK_VERSIONS, "latest"):
        for name in openstack_files(version, instance):
            data = openstack_file(
                instance, version, name, urandom=urandom, extra=extra, options=options
            )
            yield f"openstack/{version}/{name}", data
            if name == "meta_data.json" and instance.user_data is not None:
                yield f"openstack/{version}/user_data", instance.user_data
    for index, injected in enumerate(instance.files):
        yield f"openstack/content/{index:04d}", injected.content


def render_config_drive(
    instance: Instance, options: RenderOptions | None = None, *, urandom: Urandom = os.urandom
) -> Tree:
    """The full ``config-2`` tree, in the order nova stages it."""
    return dict(_config_drive_entries(instance, options or RenderOptions(), urandom))


# --------------------------------------------------------------------------------------------
# NoCloud


def _yaml_scalar(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


NOCLOUD_NIC_PREFIX = "eth"
V6_DYNAMIC = {
    "slaac": "ipv6_slaac",
    "dhcpv6-stateless": "ipv6_dhcpv6-stateless",
    "dhcpv6-stateful": "ipv6_dhcpv6-stateful",
}


def _v1_subnet(subnet: Subnet, version: int) -> dict[str, Any] | None:
    """One subnet in cloud-init's network config v1, or None when the port has nothing on it.

    The types are the ones cloud-init itself derives from network_data.json; a default route
    is the subnet's ``gateway`` (every renderer of every supported version writes that as the
    default route; a ``0.0.0.0/0`` or ``::/0`` route and netplan's ``to: default`` are not)."""
    out: dict[str, Any]
    if version == 6 and subnet.ipv6_address_mode is not None:
        out = {"type": V6_DYNAMIC[subnet.ipv6_address_mode]}
    elif subnet.dhcp:
        out = {"type": f"dhcp{version}"}
    elif subnet.ips:
        prefix = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
        out = {"type": "static" if version == 4 else "static6"}
        out["address"] = f"{subnet.ips[0]}/{prefix}"
        if subnet.gateway:
            out["gateway"] = subnet.gateway
    else:
        return None
    if subnet.dns:
        out["dns_nameservers"] = list(dict.fromkeys(subnet.dns))
    if subnet.routes:
        out["routes"] = [
            {
                "network": str(net.network_address),
                "prefix": net.prefixlen,
                "gateway": route.gateway,
            }
            for route in subnet.routes
            for net in [ipaddress.ip_network(route.cidr, strict=False)]
        ]
    return out


def nocloud_network_config(instance: Instance) -> dict[str, Any] | None:
    """NoCloud's ``network-config``: cloud-init network config v1; None for ``networking:
    auto`` (no file, so cloud-init falls back to DHCP), an empty config for ``none``.

    Version 1, the form cloud-init itself derives from network_data.json, because every
    supported cloud-init (22.4, 25.1, 26.x) renders it as the spec says with each of its
    renderers (tests/test_network_renderers.py); v2 does not (``to: default`` fails before
    25.3, ``::/0`` becomes ``::/64`` in 22.4, SLAAC has no v2 form). Each port's NIC is found
    by its MAC and named ``eth<port index>``: cloud-init renames it so at every boot, as for
    any v1 config; the name the guest's kernel gave it cannot be known when the drive is made.
    """
    if not describes_network(instance):
        return None
    config: list[dict[str, Any]] = []
    nameservers: list[str] = []
    for index, port in enumerate(instance.ports):
        if not port.subnets:
            continue
        nic: dict[str, Any] = {
            "type": "physical",
            "name": f"{NOCLOUD_NIC_PREFIX}{index}",
            "mac_address": port.mac.lower(),
        }
        if port.mtu:
            nic["mtu"] = port.mtu
        subnets = []
        for version in (4, 6):
            subnet = _first_subnet(port, version)
            entry = None if subnet is None else _v1_subnet(subnet, version)
            if entry is not None:
                subnets.append(entry)
                nameservers += entry.get("dns_nameservers", [])
        nic["subnets"] = subnets
        config.append(nic)
    if nameservers:
        config.append({"type": "nameserver", "address": list(dict.fromkeys(nameservers))})
    return {"version": 1, "config": config}


def _nocloud_vendor_data(instance: Instance) -> bytes | None:
    # NoCloud has no personality files: carry them as #cloud-config write_files, with the
    # same permissions cloud-init's ConfigDrive datasource uses for injected files (0660).
    static = instance.vendor_data.get("cloud-init") if instance.vendor_data else None
    if instance.files and isinstance(static, str):
        raise SpecError(
            "files",
            "a NoCloud seed carries injected files as vendor-data write_files, "
            "which conflicts with vendor_data's own cloud-init document",
            hint="use the config-2 layout (--format iso9660 or vfat) for injected files",
        )
    if instance.files:
        lines = ["#cloud-config", "write_files:"]
        for f in instance.files:
            lines += [
                f"- path: {_yaml_scalar(f.path if f.path.startswith('/') else '/' + f.path)}",
                "  encoding: b64",
                f"  content: {base64.b64encode(f.content).decode('ascii')}",
                "  permissions: '0660'",
            ]
        return ("\n".join(lines) + "\n").encode("utf-8")
    if isinstance(static, str):
        return static.encode("utf-8")
    return None


def render_nocloud(instance: Instance, *, urandom: Urandom = os.urandom) -> Tree:
    """The NoCloud seed: ``meta-data``, ``user-data`` (both always), ``network-config`` and
    ``vendor-data`` when there is something to say."""
    md: dict[str, Any] = {"instance-id": instance.uuid, "local-hostname": instance.fqdn}
    if instance.key_pairs:
        md["public-keys"] = [k.public_key for k in instance.key_pairs]
    if instance.availability_zone is not None:
        md["availability-zone"] = instance.availability_zone
    if instance.meta:
        md["meta"] = dict(instance.meta)
    md["random_seed"] = base64.b64encode(urandom(SEED_BYTES)).decode("ascii")
    tree: Tree = {
        "meta-data": (json.dumps(md, indent=2) + "\n").encode("utf-8"),
        "user-data": instance.user_data or b"",
    }
    net = nocloud_network_config(instance)
    if net is not None:
        tree["network-config"] = (json.dumps(net, indent=2) + "\n").encode("utf-8")
    vendor = _nocloud_vendor_data(instance)
    if vendor is not None:
        tree["vendor-data"] = vendor
    return tree


def render(
    instance: Instance,
    layout: Layout = Layout.CONFIG_DRIVE,
    options: RenderOptions | None = None,
    *,
    urandom: Urandom = os.urandom,
) -> Tree:
    """Render ``instance`` into the file tree of ``layout``."""
    if layout is Layout.NOCLOUD:
        return render_nocloud(instance, urandom=urandom)
    return render_config_drive(instance, options, urandom=urandom)
