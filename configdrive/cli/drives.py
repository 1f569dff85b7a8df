"""`configdrive build` and `configdrive inspect`, and the instance flags they share."""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid as _uuid
from pathlib import Path
from typing import Any

from configdrive.builder import build, inspect, render_for
from configdrive.cli._common import EXIT_FAIL, EXIT_OK, UsageError, pair
from configdrive.constraints import az_name
from configdrive.drive import NOVA_VFAT_SIZE, DriveFormat
from configdrive.errors import SpecError
from configdrive.inspection import Inspection, network_file_warning
from configdrive.model import derived_id
from configdrive.render import (
    DEFAULT_AVAILABILITY_ZONE,
    DEFAULT_SKIP_VERSIONS,
    RenderOptions,
    Tree,
)
from configdrive.spec import Limits, instance_from_mapping, load_spec, parse_spec_text, read_input

__all__ = ["add_instance_args", "limits_from_args", "nic_ports", "register", "spec_from_args"]


# --------------------------------------------------------------------------------------------
# parser


def register(sub: Any) -> None:
    """Add the `build` and `inspect` verbs to the top-level subparsers."""
    b = sub.add_parser(
        "build",
        help="render an instance's metadata and write disk.config",
        description=(
            "Render the metadata tree nova writes (openstack/<every version>/, ec2/, content/) "
            "or a NoCloud seed, and write it as an ISO9660 or VFAT drive. Flags mirror "
            "`nova boot`; they override and extend a --spec file."
        ),
    )
    b.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        default="disk.config",
        help="drive image to write (default: %(default)s)",
    )
    b.add_argument(
        "--format",
        choices=[str(f) for f in DriveFormat],
        default="iso9660",
        help="iso9660 or vfat (config-2), nocloud or nocloud-vfat (cidata); default: %(default)s",
    )
    b.add_argument(
        "--size",
        metavar="SIZE",
        default="fit",
        help="VFAT image size: fit (default), nova (nova's fixed 64 MiB) or bytes "
        "with optional K/M suffix",
    )
    add_instance_args(b)
    b.add_argument(
        "--default-availability-zone",
        metavar="ZONE",
        default=DEFAULT_AVAILABILITY_ZONE,
        help="the host's zone, shown for an instance that asks for none, like nova's "
        "[DEFAULT] default_availability_zone (default: %(default)s)",
    )
    b.add_argument(
        "--skip-versions",
        metavar="LIST",
        help="space-separated EC2 versions not to write, like nova's "
        "config_drive_skip_versions (default: all but 2009-04-04 and latest)",
    )
    b.add_argument("--force", action="store_true", help="replace an existing drive")
    b.add_argument(
        "--dry-run", action="store_true", help="print the tree that would be written; write nothing"
    )
    b.add_argument(
        "--contents", action="store_true", help="with --dry-run, print every file's contents too"
    )
    b.add_argument("--json", action="store_true", help="machine-readable output")

    i = sub.add_parser(
        "inspect",
        help="list a drive's tree, summarise it and validate it as cloud-init does",
        description="Read any config drive or NoCloud image (ISO9660 or VFAT) without mounting "
        "it. Exit 1 when a guest's cloud-init would reject it.",
    )
    i.add_argument("drive", metavar="DRIVE", help="drive image file")
    i.add_argument("--cat", metavar="PATH", help="print one file of the drive and exit")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(handler=cmd_build)
    i.set_defaults(handler=cmd_inspect)


def add_instance_args(b: argparse.ArgumentParser) -> None:
    """The instance flags shared by `build` and `boot` (they mirror `nova boot`)."""
    b.add_argument("name", nargs="?", metavar="NAME", help="instance name (display name)")
    b.add_argument("-s", "--spec", metavar="FILE", help="instance spec (YAML or JSON)")
    b.add_argument("--uuid", help="instance UUID (default: random)")
    b.add_argument("--hostname", help="hostname (default: the name, sanitised as nova does)")
    b.add_argument(
        "--dhcp-domain",
        metavar="DOMAIN",
        help="domain appended to the hostname (default: novalocal; '' for none)",
    )
    b.add_argument("--key-name", metavar="NAME", help="key pair name")
    b.add_argument("--key-file", metavar="FILE", help="OpenSSH public key file of the key pair")
    b.add_argument("--user-data", metavar="FILE", help="user data file (any content)")
    b.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="DST=SRC",
        help="inject local file SRC at guest path DST (repeatable)",
    )
    b.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata key/value pair (repeatable)",
    )
    b.add_argument("--availability-zone", metavar="AZ", help="the zone the instance asks for")
    boot = b.add_mutually_exclusive_group()
    boot.add_argument(
        "--image-id",
        metavar="UUID",
        help="the glance image booted from (nova boot --image; its EC2 ami-id)",
    )
    boot.add_argument(
        "--boot-volume",
        metavar="VOLUME_ID",
        help="boot from a volume: ami-id is null, the root disk is ebs0",
    )
    b.add_argument(
        "--block-device",
        action="append",
        default=[],
        metavar="K=V[,K=V…]",
        help="add a block device as nova boot does: source=volume|blank, dest=volume|local, "
        "device=, format= (swap for a swap disk), id=, size= (repeatable)",
    )
    b.add_argument("--swap", metavar="MiB", help="add a swap disk (EC2 block-device-mapping swap)")
    b.add_argument(
        "--ephemeral",
        action="append",
        default=[],
        metavar="size=GiB[,format=FS]",
        help="add an ephemeral disk (ephemeralN; repeatable)",
    )
    b.add_argument("--admin-pass", metavar="PASSWORD", help="admin password (drive only)")
    b.add_argument(
        "--nic",
        action="append",
        default=[],
        metavar="K=V[,K=V…]",
        help="add a port: mac=, net-id=, port-id=, v4-fixed-ip=, v4-cidr=, "
        "v4-gateway=, v6-fixed-ip=, v6-cidr=, v6-gateway=, v6-mode=, dns= "
        "(repeat), dhcp=true, mtu=, devname=, vif-type= (repeatable); or alone: "
        "none (no NIC: network_data.json is {}) or auto (the default: a NIC no spec "
        "describes, no network description on the drive, so the guest uses DHCP)",
    )
    b.add_argument(
        "--network-file",
        metavar="FILE",
        help="YAML/JSON list of ports (the spec's `networks` field)",
    )
    b.add_argument("--vendor-data", metavar="FILE", help="static vendor data (JSON object)")
    b.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help=f"change an input limit ({', '.join(Limits.names())})",
    )


# --------------------------------------------------------------------------------------------
# flags -> spec mapping


def _size(text: str) -> int | None:
    if text == "fit":
        return None
    if text == "nova":
        return NOVA_VFAT_SIZE
    match = re.fullmatch(r"(\d+)([KkMm]?)", text)
    if not match:
        raise SpecError("size", f"{text!r} is not fit, nova or a byte count (K/M suffix allowed)")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


def _default_mac(instance_uuid: str | None, index: int) -> str:
    """nova's fa:16:3e prefix; the rest derived from the instance's uuid when the spec or
    --uuid gives one (the same drive, build after build), else random."""
    raw = derived_id(instance_uuid, f"mac/{index}") if instance_uuid else _uuid.uuid4()
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in raw.bytes[:3])


NIC_KEYS = {
    "mac", "net-id", "port-id", "v4-fixed-ip", "v4-cidr", "v4-gateway", "v6-fixed-ip",
    "v6-cidr", "v6-gateway", "v6-mode", "dns", "dhcp", "mtu", "devname", "vif-type",
}  # fmt: skip


def _nic(text: str, index: int, instance_uuid: str | None) -> dict[str, Any]:
    field = f"nic[{index}]"
    values: dict[str, list[str]] = {}
    for item in text.split(","):
        key, value = pair(item, field)
        if key not in NIC_KEYS:
            raise SpecError(field, f"unknown key {key!r} (known: {', '.join(sorted(NIC_KEYS))})")
        values.setdefault(key, []).append(value)
    one = {k: v[-1] for k, v in values.items()}
    port: dict[str, Any] = {"mac": one.get("mac") or _default_mac(instance_uuid, index),
                            "subnets": []}  # fmt: skip
    for src, dst in (("port-id", "id"), ("net-id", "network_id"), ("devname", "devname"),
                     ("vif-type", "vif_type"), ("mtu", "mtu")):  # fmt: skip
        if src in one:
            port[dst] = one[src]
    dhcp = one.get("dhcp", "false").lower() in ("1", "true", "yes")
    for version in ("v4", "v6"):
        ip, cidr = one.get(f"{version}-fixed-ip"), one.get(f"{version}-cidr")
        if ip and not cidr:
            raise SpecError(field, f"{version}-fixed-ip needs {version}-cidr (the subnet)")
        if not cidr:
            continue
        subnet: dict[str, Any] = {
            "cidr": cidr,
            "ips": [ip] if ip else [],
            "dns": values.get("dns", []),
        }
        if f"{version}-gateway" in one:
            subnet["gateway"] = one[f"{version}-gateway"]
        if version == "v6" and "v6-mode" in one:
            subnet["ipv6_address_mode"] = one["v6-mode"]
        if version == "v4" and dhcp:
            subnet["dhcp"] = True
        port["subnets"].append(subnet)
    return port


def _uuid_flag(text: str, field: str) -> str:
    try:
        return str(_uuid.UUID(text))
    except ValueError:
        raise SpecError(field, f"{text!r} is not a UUID") from None


def _flag_devices(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(kind, device or None) for --block-device, --swap and --ephemeral, in the order the
    libvirt driver names disks: ephemerals, then swap, then volumes."""
    ephemerals: list[tuple[str, str | None]] = []
    swaps: list[tuple[str, str | None]] = []
    volumes: list[tuple[str, str | None]] = []
    for i, text in enumerate(args.block_device):
        field = f"block_device[{i}]"
        values = dict(pair(item, field) for item in text.split(","))
        unknown = sorted(set(values) - {"source", "dest", "device", "format", "id", "size"})
        if unknown:
            known = "device, dest, format, id, size, source"
            raise SpecError(field, f"unknown key {unknown[0]!r} (known: {known})")
        source, dest = values.get("source", "volume"), values.get("dest", "volume")
        device = values.get("device") or None
        if dest == "volume" and source in ("volume", "image", "snapshot", "blank"):
            volumes.append(("volume", device))
        elif dest == "local" and source == "blank":
            kind = "swap" if values.get("format") == "swap" else "ephemeral"
            (swaps if kind == "swap" else ephemerals).append((kind, device))
        else:
            raise SpecError(
                field,
                f"source={source},dest={dest} is not a block device nova shows in "
                "block-device-mapping (a volume, or a blank local disk)",
            )
    for i, text in enumerate(args.ephemeral):
        values = dict(pair(item, f"ephemeral[{i}]") for item in text.split(","))
        if not values.get("size", "").isdigit():
            raise SpecError(f"ephemeral[{i}]", "needs size=GiB")
        ephemerals.append(("ephemeral", None))
    if args.swap is not None:
        if not args.swap.isdigit() or int(args.swap) == 0:
            raise SpecError("swap", f"{args.swap!r} is not a size in MiB")
        swaps.append(("swap", None))
    return ephemerals + swaps + volumes


def _name_devices(data: dict[str, Any], added: list[tuple[str, str | None]]) -> None:
    """Give devices without a name the next free one on the root disk's bus, as the libvirt
    driver does (root vda, then vdb, vdc, …)."""
    root = data.get("root_device_name", "/dev/vda") or "/dev/vda"
    prefix = re.sub(r"[a-z]$", "", root.removeprefix("/dev/")) or "vd"
    devices = list(data.get("block_devices") or [])
    used = {root.removeprefix("/dev/")}
    used |= {str(d.get("device", "")).removeprefix("/dev/") for d in devices if isinstance(d, dict)}
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for kind, device in added:
        if device is None:
            device = next(f"{prefix}{c}" for c in letters if f"{prefix}{c}" not in used)
        used.add(device.removeprefix("/dev/"))
        devices.append({"type": kind, "device": device})
    data["block_devices"] = devices


def nic_ports(texts: list[str]) -> list[dict[str, Any]]:
    """``--nic`` flags as spec ``networks`` entries (ports only: no ``none``/``auto``)."""
    ports = _nics(texts, None)
    if isinstance(ports, str):
        raise SpecError("nic", f"--nic {ports} describes no port", hint="give mac=…,v4-cidr=…")
    return ports


def _nics(texts: list[str], instance_uuid: str | None) -> list[dict[str, Any]] | str:
    """``--nic none`` / ``--nic auto`` as nova boot spells them (alone), else ports."""
    modes = [t for t in texts if t in ("none", "auto")]
    if modes:
        if len(texts) > 1:
            raise SpecError(
                "nic",
                f"--nic {modes[0]} cannot be combined with another --nic",
                hint="none: no NIC; auto: one NIC no spec describes (DHCP); or give ports",
            )
        return modes[0]
    return [_nic(text, i, instance_uuid) for i, text in enumerate(texts)]


def spec_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], Path | None]:
    """The spec file (if any) with the flags merged over it."""
    data: dict[str, Any] = {}
    base: Path | None = None
    if args.spec:
        data, base = load_spec(args.spec)
    if args.name:
        data["name"] = args.name
    for flag in ("uuid", "hostname", "availability_zone", "admin_pass"):
        if getattr(args, flag) is not None:
            data[flag] = getattr(args, flag)
    if args.dhcp_domain is not None:
        data["dhcp_domain"] = args.dhcp_domain
    if args.key_file or args.key_name:
        if not args.key_file:
            known = [k for k in data.get("keys") or [] if isinstance(k, dict)]
            match = [k for k in known if k.get("name") == args.key_name]
            if not match:
                raise SpecError(
                    "key_name",
                    f"no public key for {args.key_name!r}",
                    hint="give --key-file with the public key (configdrive has no keypair store)",
                )
            data["keys"] = match
        else:
            text = read_input(args.key_file, "key_file").decode("utf-8", "replace").strip()
            name = args.key_name or Path(args.key_file).name.removesuffix(".pub")
            data["keys"] = [{"name": name, "public_key": text}]
    if args.user_data:
        for key in ("user_data", "user_data_base64"):
            data.pop(key, None)
        data["user_data_file"] = str(Path(args.user_data).resolve())
    if args.file:
        files = data.get("files") or {}
        for item in args.file:
            dest, src = pair(item, "file")
            source = str(Path(src).expanduser().resolve())
            if isinstance(files, list):  # a list keeps nova's order: the new file goes last
                files = [f for f in files if not (isinstance(f, dict) and f.get("path") == dest)]
                files.append({"path": dest, "source": source})
            elif isinstance(files, dict):
                files[dest] = {"source": source}
            else:
                raise SpecError("files", "must be a mapping or a list to merge --file into")
        data["files"] = files
    if args.meta:
        meta = dict(data.get("meta") or {})
        for item in args.meta:
            key, value = pair(item, "meta")
            meta[key] = value
        data["meta"] = meta
    if args.network_file:
        nets = parse_spec_text(read_input(args.network_file, "network_file"), args.network_file)
        data["networks"] = nets.get("networks", nets) if isinstance(nets, dict) else nets
    elif args.nic:
        uuid = data.get("uuid")
        data["networks"] = _nics(args.nic, str(uuid) if uuid is not None else None)
    if args.image_id:
        data["boot_source"] = "image"
        data["image_id"] = _uuid_flag(args.image_id, "image_id")
    elif args.boot_volume:
        _uuid_flag(args.boot_volume, "boot_volume")
        data["boot_source"] = "volume"
        for key in ("image_id", "ami_id"):
            data.pop(key, None)
    added = _flag_devices(args)
    if added:
        _name_devices(data, added)
    if args.vendor_data:
        raw = read_input(args.vendor_data, "vendor_data")
        try:
            data["vendor_data"] = json.loads(raw)
        except ValueError as exc:
            raise SpecError(
                "vendor_data", f"{args.vendor_data} is not valid JSON ({exc})"
            ) from None
    if "name" not in data:
        raise SpecError("name", "is required", hint="pass NAME or a --spec file with a name")
    return data, base


def _render_options(args: argparse.Namespace) -> RenderOptions:
    zone = az_name(args.default_availability_zone, "default_availability_zone")
    skip = DEFAULT_SKIP_VERSIONS if args.skip_versions is None else args.skip_versions.split()
    return RenderOptions(skip_versions=tuple(skip), default_availability_zone=zone)


def limits_from_args(args: argparse.Namespace) -> Limits:
    limits = Limits()
    for item in args.limit:
        name, value = pair(item, "limit")
        if not value.isdigit():
            raise SpecError(f"limit.{name}", f"{value!r} is not a non-negative integer")
        limits = limits.replace(name, int(value))
    return limits


# --------------------------------------------------------------------------------------------
# verbs


def _print_tree(tree: Tree, contents: bool) -> None:
    for path, data in tree.items():
        if not contents:
            print(f"{len(data):>8}  {path}")
            continue
        print(f"### {path} ({len(data)} bytes)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = f"<{len(data)} bytes of binary data>"
        print(text if text.endswith("\n") or not text else text + "\n", end="")


def cmd_build(args: argparse.Namespace) -> int:
    data, base = spec_from_args(args)
    fmt = DriveFormat(args.format)
    size = _size(args.size)
    if size is not None and fmt.filesystem != "vfat":
        raise UsageError("--size applies to VFAT formats only; ISO9660 is sized to fit")
    instance = instance_from_mapping(data, base=base, limits=limits_from_args(args))
    options = _render_options(args)
    warning = network_file_warning((f.path for f in instance.files), bool(instance.ports))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        tree = render_for(instance, fmt, options)
        if args.json:
            print(json.dumps({"format": str(fmt), "files": {p: len(d) for p, d in tree.items()}}))
        else:
            _print_tree(tree, args.contents)
        return EXIT_OK
    result = build(instance, args.output, fmt, options=options, force=args.force, vfat_size=size)
    if args.json:
        print(json.dumps({"path": str(result.path), "format": str(fmt), "size": result.size,
                          "uuid": instance.uuid, "files": len(result.tree)}))  # fmt: skip
    else:
        print(f"wrote {result.path} ({fmt}, label {fmt.label}, {result.size} bytes, "
              f"{len(result.tree)} files) for {instance.name} {instance.uuid}")  # fmt: skip
    return EXIT_OK


def _print_inspection(report: Inspection) -> None:
    print(f"{report.kind}: {report.filesystem}, label {report.label!r}, {report.size} bytes")
    for path, size in sorted(report.files.items()):
        print(f"{size:>8}  {path}")
    if report.summary:
        print("summary:")
        for key, value in report.summary.items():
            if value not in (None, {}, []):
                print(f"  {key}: {value if isinstance(value, str | int) else json.dumps(value)}")
    if report.version_used:
        print(f"cloud-init reads: openstack/{report.version_used}/")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.ok:
        print("verdict: OK (cloud-init would accept this drive)")
    for problem in report.problems:
        print(f"problem: {problem}")


def cmd_inspect(args: argparse.Namespace) -> int:
    drive = Path(args.drive)
    if not drive.is_file():
        raise UsageError(f"drive: {drive} does not exist or is not a file")
    if args.cat:
        from configdrive.drive import read_drive

        files = read_drive(drive).files
        if args.cat.lstrip("/") not in files:
            raise UsageError(f"cat: {args.cat} is not on the drive")
        sys.stdout.buffer.write(files[args.cat.lstrip("/")])
        return EXIT_OK
    report = inspect(drive)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_inspection(report)
    if not report.ok:
        print(f"error: {drive}: a guest would reject this drive: {report.problems[0]}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAIL
    return EXIT_OK
