"""Build validated :class:`~configdrive.model.Instance` objects from spec files and flags.

A spec is a YAML (or JSON) mapping; ``nova boot``-style flags are parsed into the same mapping
shape by the CLI and merged over it, so both paths share one validator. Every rule is one of
nova's (API schema, quotas, neutron's checks); each failure raises :class:`SpecError` naming
the field and the rule. Limits default to nova's and can be changed through :class:`Limits`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import uuid as _uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from configdrive import constraints
from configdrive.errors import SpecError
from configdrive.model import (
    BlockDevice,
    BlockDeviceKind,
    BootSource,
    Device,
    DeviceBus,
    DeviceKind,
    InjectedFile,
    Instance,
    KeyPair,
    KeyType,
    Networking,
    Port,
    Route,
    Subnet,
    derived_id,
)

__all__ = [
    "Limits",
    "check_nesting",
    "instance_from_mapping",
    "load_spec",
    "parse_spec_text",
    "read_input",
    "sanitize_hostname",
]


@dataclass(frozen=True)
class Limits:
    """Input limits; defaults are nova's API schema and quota defaults."""

    user_data_b64: int = 65535  # base64 characters (nova API schema)
    files: int = 5  # quota injected_files
    file_bytes: int = 10240  # quota injected_file_content_bytes
    path_bytes: int = 255  # quota injected_file_path_length
    meta_chars: int = 255  # server metadata key and value length
    meta_items: int = 128  # quota metadata_items
    name_chars: int = 255  # display name
    nesting: int = 64  # JSON/YAML nesting depth (ours: deeper is hostile, never a real spec)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def replace(self, name: str, value: int) -> Limits:
        if name not in self.names():
            raise SpecError("limit", f"unknown limit {name!r} (known: {', '.join(self.names())})")
        if value < 0:
            raise SpecError(f"limit.{name}", "must be a non-negative integer")
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data[name] = value
        return Limits(**data)


SSH_KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ssh-ed448",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
IPV6_MODES = frozenset({"slaac", "dhcpv6-stateful", "dhcpv6-stateless"})


def sanitize_hostname(name: str, default: str | None = None) -> str:
    """nova.utils.sanitize_hostname: latin-1 only, ``[ _.]`` -> ``-``, drop other
    non-word characters, lowercase, strip ``.-``, at most 63 characters."""
    host = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    host = re.sub(r"[ _.]", "-", host)
    host = re.sub(r"[^\w.-]+", "", host)
    host = host.lower().strip(".-")
    if host == "" and default is not None:
        return default[:63]
    return host


# --------------------------------------------------------------------------------------------
# reading inputs


def read_input(path: str | Path, field: str, base: Path | None = None) -> bytes:
    """Read an input file named by the user; unreadable -> SpecError on ``field``."""
    p = Path(path).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    try:
        return p.read_bytes()
    except OSError as exc:
        raise SpecError(field, f"cannot read {p}: {exc.strerror or exc}") from None


def parse_spec_text(text: bytes, source: str) -> dict[str, Any]:
    """Parse YAML/JSON spec text into a mapping; malformed -> SpecError on ``spec``."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SpecError("spec", f"{source} is nested too deeply to parse") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError("spec", f"{source} is not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("spec", f"{source} must hold a mapping of fields, not {_kind(data)}")
    return data


def load_spec(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a spec file; returns the raw mapping and the directory its paths are relative to."""
    p = Path(path).expanduser()
    return parse_spec_text(read_input(p, "spec"), str(p)), p.resolve().parent


# --------------------------------------------------------------------------------------------
# small typed getters


def check_nesting(value: object, field: str, limit: int) -> None:
    """Refuse containers nested deeper than ``limit`` (iteratively: a hostile depth must not
    exhaust the interpreter's stack here, or later in json.dumps or the renderers)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            raise SpecError(field, f"is nested more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children)


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _str(value: object, field: str, *, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SpecError(field, f"must be a string, not {_kind(value)}")
    text = str(value)
    if not allow_empty and not text:
        raise SpecError(field, "must not be empty")
    return text


def _opt_str(data: Mapping[str, Any], key: str, field: str) -> str | None:
    value = data.get(key)
    return None if value is None else _str(value, field)


def _int(value: object, field: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        else:
            raise SpecError(field, f"must be an integer, not {_kind(value)}")
    if low is not None and value < low:
        raise SpecError(field, f"must be at least {low}, got {value}")
    if high is not None and value > high:
        raise SpecError(field, f"must be at most {high}, got {value}")
    return value


def _bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise SpecError(field, f"must be true or false, not {value!r}")


def _list(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(field, f"must be a list, not {_kind(value)}")
    return value


def _map(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(field, f"must be a mapping, not {_kind(value)}")
    return value


def _unknown(data: Mapping[str, Any], known: set[str], field: str) -> None:
    extra = sorted(str(k) for k in data if k not in known)
    if extra:
        prefix = f"{field}." if field else ""
        raise SpecError(f"{prefix}{extra[0]}", f"unknown field (known: {', '.join(sorted(known))})")


# --------------------------------------------------------------------------------------------
# field validators


def _uuid_field(value: object, field: str) -> str:
    text = _str(value, field)
    try:
        return str(_uuid.UUID(text))
    except ValueError:
        raise SpecError(field, f"{text!r} is not a UUID") from None


def _mac(value: object, field: str) -> str:
    text = _str(value, field)
    if not _MAC.match(text):
        raise SpecError(field, f"{text!r} is not a MAC address (six hex pairs joined by ':')")
    return text.lower()


def _ip(value: object, field: str, version: int | None = None) -> str:
    text = _str(value, field)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise SpecError(field, f"{text!r} is not an IP address") from None
    if version is not None and address.version != version:
        raise SpecError(field, f"{text} is not an IPv{version} address")
    return str(address)


def _cidr(value: object, field: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _str(value, field)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise SpecError(field, f"{text!r} is not a network CIDR ({exc})") from None


def validate_public_key(text: str, key_type: KeyType, field: str) -> str:
    """Check an OpenSSH public key line (type, base64 blob whose embedded type matches)."""
    if key_type is KeyType.X509:
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise SpecError(field, "an x509 key must be a PEM certificate")
        return text
    parts = text.strip().split()
    if len(parts) < 2:
        raise SpecError(field, "is not an OpenSSH public key ('<type> <base64> [comment]')")
    kind, blob = parts[0], parts[1]
    if kind not in SSH_KEY_TYPES:
        raise SpecError(field, f"unknown OpenSSH key type {kind!r}")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(field, "key data is not valid base64") from None
    inner_len = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if inner_len <= 0 or raw[4 : 4 + inner_len] != kind.encode():
        raise SpecError(field, f"key data does not encode a {kind} key")
    return text


def _guest_path(path: str, field: str, limits: Limits) -> str:
    if not path:
        raise SpecError(field, "guest path must not be empty")
    if "\0" in path:
        raise SpecError(field, "guest path must not contain NUL")
    if len(path.encode("utf-8")) > limits.path_bytes:
        raise SpecError(field, f"guest path is longer than {limits.path_bytes} bytes")
    depth = 0
    for part in PurePosixPath(path).parts:
        if part == "/":
            continue
        depth = depth - 1 if part == ".." else depth + (part != ".")
        if depth < 0:
            raise SpecError(field, "guest path must not escape its root with '..'")
    return path


def _file(dest: str, value: object, base: Path | None, limits: Limits) -> InjectedFile:
    field = f"files[{dest}]"
    _guest_path(dest, field, limits)
    if isinstance(value, str):
        content = read_input(value, field, base)
    elif isinstance(value, bytes):
        content = value
    elif isinstance(value, dict):
        _unknown(value, {"source", "content", "content_base64"}, field)
        if "source" in value:
            content = read_input(_str(value["source"], field), field, base)
        elif "content_base64" in value:
            try:
                content = base64.b64decode(
                    _str(value["content_base64"], field, allow_empty=True), validate=True
                )
            except (binascii.Error, ValueError):
                raise SpecError(field, "content_base64 is not valid base64") from None
        elif "content" in value:
            content = _str(value["content"], field, allow_empty=True).encode("utf-8")
        else:
            raise SpecError(field, "needs one of source, content, content_base64")
    else:
        raise SpecError(field, f"must be a source path or a mapping, not {_kind(value)}")
    if len(content) > limits.file_bytes:
        raise SpecError(field, f"content is {len(content)} bytes, over {limits.file_bytes}")
    return InjectedFile(path=dest, content=content)


def _key_pairs(data: Mapping[str, Any], base: Path | None) -> tuple[KeyPair, ...]:
    keys: list[KeyPair] = []
    for i, item in enumerate(_list(data.get("keys"), "keys")):
        field = f"keys[{i}]"
        entry = _map(item, field)
        _unknown(entry, {"name", "public_key", "public_key_file", "type"}, field)
        try:
            key_type = KeyType(_str(entry.get("type", "ssh"), f"{field}.type"))
        except ValueError:
            raise SpecError(f"{field}.type", "must be ssh or x509") from None
        if "public_key_file" in entry:
            text = read_input(_str(entry["public_key_file"], field), field, base).decode(
                "utf-8", "replace"
            )
        else:
            text = _str(entry.get("public_key"), f"{field}.public_key")
        name = _str(entry.get("name"), f"{field}.name")
        if len(name) > 255:
            raise SpecError(f"{field}.name", "is longer than 255 characters")
        keys.append(
            KeyPair(name, validate_public_key(text, key_type, f"{field}.public_key"), key_type)
        )
    if len(keys) > 1:
        raise SpecError("keys", "nova takes one key pair per instance")
    return tuple(keys)


def _subnet(data: object, field: str) -> Subnet:
    entry = _map(data, field)
    known = {"cidr", "ips", "gateway", "dns", "routes", "dhcp", "ipv6_address_mode"}
    _unknown(entry, known, field)
    net = _cidr(entry.get("cidr"), f"{field}.cidr")
    version = net.version
    ips = []
    for j, ip in enumerate(_list(entry.get("ips"), f"{field}.ips")):
        text = _ip(ip, f"{field}.ips[{j}]", version)
        if ipaddress.ip_address(text) not in net:
            raise SpecError(f"{field}.ips[{j}]", f"{text} is outside {net}")
        ips.append(text)
    if len(set(ips)) != len(ips):
        raise SpecError(f"{field}.ips", "lists an address twice (a port holds each fixed IP once)")
    gateway = entry.get("gateway")
    # nova's network model (Subnet.add_route / add_dns) keeps the first of equal entries
    routes: list[Route] = []
    for j, r in enumerate(_list(entry.get("routes"), f"{field}.routes")):
        route = _map(r, f"{field}.routes[{j}]")
        _unknown(route, {"cidr", "gateway"}, f"{field}.routes[{j}]")
        dest = _cidr(route.get("cidr"), f"{field}.routes[{j}].cidr")
        new = Route(str(dest), _ip(route.get("gateway"), f"{field}.routes[{j}].gateway"))
        if new not in routes:
            routes.append(new)
    dns: list[str] = []
    for j, d in enumerate(_list(entry.get("dns"), f"{field}.dns")):
        address = _ip(d, f"{field}.dns[{j}]")
        if address not in dns:
            dns.append(address)
    mode = entry.get("ipv6_address_mode")
    if mode is not None:
        if version != 6:
            raise SpecError(f"{field}.ipv6_address_mode", "is only valid on an IPv6 subnet")
        if mode not in IPV6_MODES:
            raise SpecError(f"{field}.ipv6_address_mode", f"must be one of {sorted(IPV6_MODES)}")
    return Subnet(
        cidr=str(net),
        ips=tuple(ips),
        gateway=None if gateway is None else _ip(gateway, f"{field}.gateway", version),
        dns=tuple(dns),
        routes=tuple(routes),
        dhcp=_bool(entry.get("dhcp", False), f"{field}.dhcp"),
        ipv6_address_mode=mode,
    )


def _port(data: object, field: str, instance_uuid: str, index: int) -> Port:
    entry = _map(data, field)
    _unknown(entry, {"mac", "id", "network_id", "devname", "vif_type", "mtu", "subnets"}, field)
    extra: dict[str, Any] = {}
    for key, what in (("id", "port"), ("network_id", "network")):  # default: from the uuid
        value = entry.get(key)
        extra[key] = (
            _uuid_field(value, f"{field}.{key}")
            if value is not None
            else str(derived_id(instance_uuid, f"{what}/{index}"))
        )
    mtu = entry.get("mtu")
    subnets = tuple(
        _subnet(s, f"{field}.subnets[{j}]")
        for j, s in enumerate(_list(entry.get("subnets"), f"{field}.subnets"))
    )
    vif_type = _str(entry.get("vif_type", "ovs"), f"{field}.vif_type")
    if vif_type == "bridge":  # nova/network/neutron.py _nw_info_build_network raises
        raise SpecError(f"{field}.vif_type", "nova 34 refuses Linux bridge VIFs (use ovs)")
    port = Port(
        mac=_mac(entry.get("mac"), f"{field}.mac"),
        devname=_opt_str(entry, "devname", f"{field}.devname"),
        vif_type=vif_type,
        mtu=None if mtu is None else _int(mtu, f"{field}.mtu", low=68, high=65535),
        subnets=subnets,
        **extra,
    )
    return _port_addresses(port, field)


def _port_addresses(port: Port, field: str) -> Port:
    """neutron's view of a port's subnets: nova lists a port's subnets from its fixed IPs, so
    every subnet carries an address (a SLAAC or DHCPv6-stateless one gets neutron's EUI-64
    address of the port's MAC); a network's subnets never overlap."""
    subnets = []
    for j, subnet in enumerate(port.subnets):
        where = f"{field}.subnets[{j}]"
        for other in port.subnets[:j]:
            if ipaddress.ip_network(subnet.cidr).overlaps(ipaddress.ip_network(other.cidr)):
                raise SpecError(f"{where}.cidr", f"{subnet.cidr} overlaps {other.cidr}")
        if subnet.ipv6_address_mode in ("slaac", "dhcpv6-stateless"):
            eui64 = constraints.eui64_address(subnet.cidr, port.mac)
            if subnet.ips not in ((), (eui64,)):
                raise SpecError(
                    f"{where}.ips",
                    f"neutron gives a port on a {subnet.ipv6_address_mode} subnet only its "
                    f"EUI-64 address ({eui64} for {port.mac})",
                    hint="leave ips out to get it",
                )
            subnet = replace(subnet, ips=(eui64,))
        elif not subnet.ips:
            raise SpecError(
                f"{where}.ips",
                "needs the port's address on the subnet (nova lists a port's subnets "
                "from its fixed IPs)",
                hint="give ips: [ADDRESS] (v4-fixed-ip= / v6-fixed-ip= on --nic)",
            )
        subnets.append(subnet)
    return replace(port, subnets=tuple(subnets))


def _networks(data: Mapping[str, Any], uuid: str) -> tuple[Networking, tuple[Port, ...]]:
    """``networks``: absent or ``auto`` -> a NIC no spec describes; ``none`` or ``[]`` -> no
    NIC (nova's ``--nic none``); a list of ports -> those ports."""
    if "networks" not in data:
        return Networking.AUTO, ()
    value = data["networks"]
    if isinstance(value, str) and value in (Networking.NONE, Networking.AUTO):
        return Networking(value), ()
    if value is None or isinstance(value, str):
        raise SpecError(
            "networks",
            f"must be a list of ports, none or auto, not {_kind(value)}"
            + (f" {value!r}" if isinstance(value, str) else ""),
            hint="none: no NIC (nova's --nic none); leave it out (or auto) for a NIC that no "
            "spec describes, which the guest configures with DHCP",
        )
    ports = tuple(
        _port(p, f"networks[{i}]", uuid, i) for i, p in enumerate(_list(value, "networks"))
    )
    return (Networking.PORTS if ports else Networking.NONE), ports


def _device(data: object, field: str) -> Device:
    entry = _map(data, field)
    known = {"type", "bus", "address", "tags", "mac", "vlan", "vf_trusted", "serial", "path"}
    _unknown(entry, known | {"share_id", "tag"}, field)
    try:
        kind = DeviceKind(_str(entry.get("type"), f"{field}.type"))
        bus = DeviceBus(_str(entry.get("bus", "none"), f"{field}.bus"))
    except ValueError as exc:
        raise SpecError(field, str(exc)) from None
    tags = tuple(_str(t, f"{field}.tags") for t in _list(entry.get("tags"), f"{field}.tags"))
    vlan = entry.get("vlan")
    trusted = entry.get("vf_trusted")
    address = _opt_str(entry, "address", f"{field}.address")
    if address is not None:
        address = constraints.bus_address(bus, address, f"{field}.address")
    return Device(
        kind=kind,
        bus=bus,
        address=address,
        tags=tags,
        mac=_mac(entry["mac"], f"{field}.mac") if kind is DeviceKind.NIC else None,
        vlan=None if vlan is None else _int(vlan, f"{field}.vlan", low=0, high=4095),
        vf_trusted=None if trusted is None else _bool(trusted, f"{field}.vf_trusted"),
        serial=_opt_str(entry, "serial", f"{field}.serial"),
        path=_opt_str(entry, "path", f"{field}.path"),
        share_id=_opt_str(entry, "share_id", f"{field}.share_id"),
        share_tag=_opt_str(entry, "tag", f"{field}.tag"),
    )


def _json_object(value: object, field: str) -> dict[str, Any]:
    entry = _map(value, field)
    try:
        json.dumps(entry)
    except (TypeError, ValueError) as exc:
        raise SpecError(field, f"is not JSON-serialisable: {exc}") from None
    return entry


SPEC_FIELDS = {
    "name", "uuid", "hostname", "dhcp_domain", "keys", "user_data", "user_data_file",
    "user_data_base64", "files", "meta", "availability_zone", "launch_index", "project_id",
    "admin_pass", "devices", "dedicated_cpus", "vendor_data", "vendor_data2", "networks",
    "flavor", "security_groups", "root_device_name", "ami_id", "reservation_id",
    "ec2_instance_id", "floating_ip", "boot_source", "image_id", "kernel_id", "ramdisk_id",
    "block_devices",
}  # fmt: skip


def _device_name(value: object, field: str) -> str:
    text = _str(value, field)
    name = text if text.startswith("/dev/") else f"/dev/{text}"  # nova's prepend_dev
    if not re.fullmatch(r"/dev/[a-z0-9]+", name):
        raise SpecError(field, f"{text!r} is not a guest device name like /dev/vdb")
    return name


def _boot(data: Mapping[str, Any], root: str | None) -> dict[str, Any]:
    """Boot source, image ids and block devices (the EC2 ami-id, kernel-id, ramdisk-id and
    block-device-mapping), with nova's rules for them."""
    out: dict[str, Any] = {}
    try:
        source = BootSource(_str(data.get("boot_source", "image"), "boot_source"))
    except ValueError:
        raise SpecError("boot_source", "must be image or volume") from None
    out["boot_source"] = source
    if source is BootSource.VOLUME:
        for key in ("image_id", "ami_id"):
            if data.get(key) is not None:
                raise SpecError(key, "a server booted from a volume has no image (ami-id null)")
        if root is None:
            raise SpecError(
                "root_device_name", "a server booted from a volume has its root device name"
            )
    if data.get("image_id") is not None:
        out["image_id"] = _uuid_field(data["image_id"], "image_id")
    if data.get("ami_id") is not None:
        out["ami_id"] = constraints.ec2_id(_str(data["ami_id"], "ami_id"), "ami", "ami_id")
    for key in ("kernel_id", "ramdisk_id"):
        if data.get(key) is not None:
            out[key] = _uuid_field(data[key], key)
    devices: list[BlockDevice] = []
    used = {root if root is None or root.startswith("/dev/") else f"/dev/{root}"}
    for i, item in enumerate(_list(data.get("block_devices"), "block_devices")):
        field = f"block_devices[{i}]"
        entry = _map(item, field)
        _unknown(entry, {"type", "device"}, field)
        try:
            kind = BlockDeviceKind(_str(entry.get("type"), f"{field}.type"))
        except ValueError:
            raise SpecError(f"{field}.type", "must be volume, ephemeral or swap") from None
        name = _device_name(entry.get("device"), f"{field}.device")
        if name in used:
            raise SpecError(f"{field}.device", f"{name} is already the root or another device")
        used.add(name)
        devices.append(BlockDevice(kind, name))
    if sum(d.kind is BlockDeviceKind.SWAP for d in devices) > 1:
        raise SpecError("block_devices", "nova gives a server at most one swap device")
    out["block_devices"] = tuple(devices)
    return out


def _user_data(data: Mapping[str, Any], base: Path | None, limits: Limits) -> bytes | None:
    given = [
        k for k in ("user_data", "user_data_file", "user_data_base64") if data.get(k) is not None
    ]
    if len(given) > 1:
        raise SpecError(given[1], f"conflicts with {given[0]}; give user data once")
    if not given:
        return None
    key = given[0]
    if key == "user_data_file":
        raw = read_input(_str(data[key], key), key, base)
    elif key == "user_data_base64":
        try:
            raw = base64.b64decode(_str(data[key], key, allow_empty=True), validate=True)
        except (binascii.Error, ValueError):
            raise SpecError(key, "is not valid base64") from None
    else:
        value = data[key]
        raw = value if isinstance(value, bytes) else _str(value, key, allow_empty=True).encode()
    encoded = 4 * ((len(raw) + 2) // 3)
    if encoded > limits.user_data_b64:
        raise SpecError(
            "user_data",
            f"is {len(raw)} bytes, {encoded} once base64-encoded; "
            f"nova allows {limits.user_data_b64}",
            hint="compress it (cloud-init reads gzip user data) or fetch the rest at boot",
        )
    return raw


def instance_from_mapping(
    data: Mapping[str, Any], *, base: Path | None = None, limits: Limits | None = None
) -> Instance:
    """Validate a spec mapping and build the Instance; ``base`` resolves relative file paths."""
    limits = limits or Limits()
    check_nesting(data, "spec", limits.nesting)
    _unknown(data, SPEC_FIELDS, "")
    name = constraints.server_name(_str(data.get("name"), "name"), "name", limits.name_chars)
    uuid = _uuid_field(data["uuid"], "uuid") if data.get("uuid") is not None else str(_uuid.uuid4())
    if data.get("hostname") is not None:  # nova keeps a requested hostname as given
        hostname = constraints.requested_hostname(_str(data["hostname"], "hostname"), "hostname")
    else:
        hostname = sanitize_hostname(name, default=f"Server-{uuid}")
    dhcp_domain = data.get("dhcp_domain", "novalocal")
    meta = {}
    meta_in = _map(data.get("meta"), "meta")
    if len(meta_in) > limits.meta_items:
        raise SpecError("meta", f"has {len(meta_in)} items, over {limits.meta_items}")
    for key, value in meta_in.items():
        k = _str(key, "meta")
        if len(k) > limits.meta_chars:
            raise SpecError(f"meta.{k[:20]}…", f"key is longer than {limits.meta_chars} characters")
        if isinstance(value, bool):  # YAML `essential: false` means the string nova stores
            v = "true" if value else "false"
        else:
            v = _str(value, f"meta.{k}", allow_empty=True)
        if len(v) > limits.meta_chars:
            raise SpecError(f"meta.{k}", f"value is longer than {limits.meta_chars} characters")
        meta[k] = v
    files_in = data.get("files")
    if isinstance(files_in, list):  # [{path:, source:|content:}]
        pairs = []
        for i, item in enumerate(files_in):
            entry = dict(_map(item, f"files[{i}]"))
            pairs.append((_str(entry.pop("path", None), f"files[{i}].path"), entry))
    else:
        pairs = list(_map(files_in, "files").items())
    if len(pairs) > limits.files:
        raise SpecError("files", f"{len(pairs)} injected files, over the quota of {limits.files}")
    files = tuple(_file(str(dest), value, base, limits) for dest, value in pairs)
    vendor2 = _map(data.get("vendor_data2"), "vendor_data2")
    for provider in vendor2:
        _json_object({provider: vendor2[provider]}, f"vendor_data2.{provider}")
    launch_index = _int(data.get("launch_index", 0), "launch_index", low=0)
    extra: dict[str, Any] = {}
    for key in ("project_id", "flavor", "reservation_id"):
        if data.get(key) is not None:
            extra[key] = _str(data[key], key)
    if data.get("ec2_instance_id") is not None:
        extra["ec2_instance_id"] = constraints.ec2_id(
            _str(data["ec2_instance_id"], "ec2_instance_id"), "i", "ec2_instance_id"
        )
    if "root_device_name" in data:
        extra["root_device_name"] = _opt_str(data, "root_device_name", "root_device_name")
    if data.get("security_groups") is not None:
        groups = _list(data["security_groups"], "security_groups")
        extra["security_groups"] = tuple(_str(g, "security_groups") for g in groups)
    extra.update(_boot(data, extra.get("root_device_name", "/dev/vda")))
    networking, ports = _networks(data, uuid)
    if data.get("floating_ip") is not None:
        extra["floating_ip"] = _ip(data["floating_ip"], "floating_ip", 4)
        if not any(ip for p in ports for s in p.subnets if s.version == 4 for ip in s.ips):
            raise SpecError(
                "floating_ip",
                "is associated with a fixed IPv4 address, and no port has one",
                hint="add a port with an IPv4 subnet (networks / --nic)",
            )
    zone = data.get("availability_zone")
    return Instance(
        name=name,
        uuid=uuid,
        hostname=hostname,
        dhcp_domain=None if dhcp_domain in (None, "") else _str(dhcp_domain, "dhcp_domain"),
        key_pairs=_key_pairs(data, base),
        user_data=_user_data(data, base, limits),
        files=files,
        meta=meta,
        availability_zone=(
            None
            if zone is None
            else constraints.az_name(_str(zone, "availability_zone"), "availability_zone")
        ),
        launch_index=launch_index,
        admin_pass=_opt_str(data, "admin_pass", "admin_pass"),
        devices=tuple(
            _device(d, f"devices[{i}]") for i, d in enumerate(_list(data.get("devices"), "devices"))
        ),
        dedicated_cpus=frozenset(  # a set in nova: a CPU listed twice is one CPU
            _int(c, "dedicated_cpus", low=0)
            for c in _list(data.get("dedicated_cpus"), "dedicated_cpus")
        ),
        vendor_data=(
            _json_object(data["vendor_data"], "vendor_data")
            if data.get("vendor_data") is not None
            else None
        ),
        vendor_data2=vendor2,
        ports=ports,
        networking=networking,
        **extra,
    )
