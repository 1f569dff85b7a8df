"""`configdrive boot|list|console|delete|image|tune-image`: guests and their images."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Any

from configdrive.benchmark import MODES, Mode
from configdrive.cli._common import EXIT_OK, UsageError, pair, progress, require_extra
from configdrive.cli.drives import add_instance_args, limits_from_args, spec_from_args
from configdrive.drive import DriveFormat
from configdrive.errors import ConfigDriveError, SpecError
from configdrive.host import Accelerator, BackendKind, HostConfig, find_flavor, load_host_config
from configdrive.spec import instance_from_mapping
from configdrive.virt.domain import Firmware, GuestFwd

__all__ = ["register"]


def add_host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host-config",
        metavar="FILE",
        help="host settings, nova.conf style (default: /etc/configdrive/host.conf if present)",
    )
    p.add_argument("--instances-path", metavar="DIR", help="override instances_path")
    p.add_argument("--backend", choices=[str(b) for b in BackendKind], help="override backend")


def host_from_args(args: argparse.Namespace) -> HostConfig:
    host = load_host_config(args.host_config)
    changes: dict[str, object] = {}
    if args.instances_path:
        changes["instances_path"] = Path(args.instances_path).resolve()
    if args.backend:
        changes["backend"] = BackendKind(args.backend)
    for flag, key, kind in (
        ("machine_type", "machine_type", str),
        ("accel", "accelerator", Accelerator),
        ("config_drive_format", "config_drive_format", DriveFormat),
    ):
        value = getattr(args, flag, None)
        if value:
            changes[key] = kind(value)
    return host.with_(**changes)


def _bool(text: str, field: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise SpecError(field, f"must be true or false, not {text!r}")


def _user_net(args: argparse.Namespace) -> tuple[GuestFwd, ...] | None:
    rules = []
    for text in args.guestfwd:
        guest, host = pair(text, "guestfwd")
        try:
            guest_ip, guest_port = guest.rsplit(":", 1)
            host_ip, host_port = host.rsplit(":", 1)
            ipaddress.ip_address(guest_ip)
            loopback = ipaddress.ip_address(host_ip).is_loopback
            rule = GuestFwd(guest_ip, int(guest_port), host_ip, int(host_port))
        except ValueError:
            raise SpecError("guestfwd", f"{text!r} is not IP:PORT=HOST:PORT") from None
        if not loopback:
            raise SpecError("guestfwd", f"{host_ip} is not a loopback address")
        rules.append(rule)
    if rules or args.guest_net == "restricted":
        return tuple(rules)
    return None


def register(sub: Any) -> None:
    b = sub.add_parser(
        "boot",
        help="create and start an instance with its config drive (nova boot)",
        description="Create <instances_path>/<uuid>/ with a qcow2 overlay, disk.config, "
        "libvirt.xml and console.log, and start the guest through libvirt or plain QEMU. "
        "Instance flags mirror `nova boot`. When the host config names a metadata service "
        "(metadata_admin_url), an instance without a config drive (or every instance, "
        "metadata_register = always) is registered with it before the guest starts; the "
        "admin token comes from CONFIGDRIVE_ADMIN_TOKEN.",
    )
    add_instance_args(b)
    b.add_argument(
        "--image",
        required=True,
        metavar="IMAGE",
        help="tuned or untuned (the project's guest images, built on first use), an image "
        "directory from `configdrive image build`, or a disk file",
    )
    b.add_argument("--flavor", default="1", metavar="FLAVOR", help="flavor id or name (default 1)")
    b.add_argument(
        "--config-drive",
        metavar="true|false",
        help="attach a config drive (force_config_drive in the host config also does); "
        "false: the guest reads the metadata service the host config names",
    )
    add_host_args(b)
    b.add_argument("--machine-type", metavar="TYPE", help="override hw_machine_type (pc, q35, …)")
    b.add_argument("--accel", choices=[str(a) for a in Accelerator], help="override virt_type")
    b.add_argument(
        "--firmware",
        choices=["bios", "uefi"],
        help="boot with SeaBIOS or OVMF (default: what the image's manifest says, else bios)",
    )
    b.add_argument(
        "--config-drive-format",
        choices=[str(f) for f in DriveFormat],
        help="override config_drive_format",
    )
    b.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="K=V",
        help="image property override (hw_cdrom_bus, hw_disk_bus, img_config_drive)",
    )
    b.add_argument(
        "--append",
        default="",
        metavar="ARGS",
        help="extra kernel command line (direct kernel boot)",
    )
    b.add_argument(
        "--guest-net",
        choices=["none", "restricted"],
        default="none",
        help="none (default): no NIC; restricted: QEMU user networking with "
        "restrict=on, so the guest reaches nothing but --guestfwd targets",
    )
    b.add_argument(
        "--guestfwd",
        action="append",
        default=[],
        metavar="IP:PORT=HOST:PORT",
        help="forward guest TCP IP:PORT to a loopback HOST:PORT (implies "
        "--guest-net restricted; e.g. 169.254.169.254:80=127.0.0.1:8775)",
    )
    b.add_argument(
        "--wait",
        metavar="ssh|cloud-init|PATTERN",
        help="after starting, wait for an SSH login (ssh; needs --identity), for cloud-init to "
        "finish, seen over SSH (cloud-init), or until PATTERN appears on the console",
    )
    b.add_argument("--timeout", type=float, default=600, help="seconds for --wait (default 600)")
    b.add_argument(
        "--ssh",
        action="store_true",
        help="forward a free 127.0.0.1 port to the guest's port 22 (implied by --wait ssh and "
        "--wait cloud-init; implies --guest-net restricted)",
    )
    b.add_argument(
        "--identity",
        metavar="FILE",
        help="SSH private key to log in with; when the instance has no key, FILE.pub becomes "
        "its key pair",
    )
    b.add_argument(
        "--login-user",
        metavar="USER",
        help="user to log in as (default: the image's, else debian: Debian's cloud-init user)",
    )
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(handler=cmd_boot)

    ls = sub.add_parser("list", help="list instances")
    add_host_args(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=cmd_list)

    c = sub.add_parser("console", help="print an instance's serial console log")
    c.add_argument("instance", metavar="NAME")
    add_host_args(c)
    c.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
    c.add_argument("--wait", metavar="PATTERN", help="wait until PATTERN appears, then print")
    c.add_argument("--timeout", type=float, default=600, help="seconds for --wait (default 600)")
    c.set_defaults(handler=cmd_console)

    d = sub.add_parser(
        "delete",
        help="stop an instance, remove its domain and directory",
        description="Unregister the instance from the host's metadata service (when the host "
        "config names metadata_admin_url; token from CONFIGDRIVE_ADMIN_TOKEN), stop the guest, "
        "remove its domain and its instance directory.",
    )
    d.add_argument("instance", metavar="NAME")
    add_host_args(d)
    d.set_defaults(handler=cmd_delete)

    img = sub.add_parser("image", help="build the project's guest images")
    isub = img.add_subparsers(dest="image_verb", metavar="ACTION", required=True)
    ib = isub.add_parser(
        "build",
        help="build a Debian cloud-init guest image (mmdebstrap, no mounts, qcow2), cached",
        description="Build a guest image, or find it in the cache. --boot kernel is the "
        "project's Debian 12 test image (one ext4 filesystem, booted with -kernel); bios and "
        "uefi build one disk shaped like Debian's genericcloud image (GPT, BIOS boot "
        "partition, ESP, ext4 root, the guest's own GRUB) and print the manifest to boot it "
        "with that firmware.",
    )
    ib.add_argument("--os", choices=["debian-12", "debian-13"], default="debian-12",
                    help="the release (default: debian-12; kernel boot: 12 only)")  # fmt: skip
    ib.add_argument("--boot", choices=["kernel", "bios", "uefi"], default="kernel",
                    help="kernel: direct kernel boot; bios/uefi: GRUB from the disk under "
                    "SeaBIOS or OVMF (default: kernel)")  # fmt: skip
    ib.add_argument(
        "--variant",
        choices=[*KERNEL_VARIANTS, *CLOUD_VARIANTS],
        default=None,
        help="--boot kernel: tuned (default), untuned, pollinate, floor, service; "
        "--boot bios|uefi: stock (default: Debian's own cloud-init setup, ds-identify "
        "deciding), datasource or fast (stock tuned offline by tune-image --profile "
        "datasource or fast), noagent (fast with cloud-init disabled, host keys and root's "
        "login key made at build time: the benchmark's floor)",
    )
    ib.add_argument("--skip", action="append", default=[], metavar="STEP",
                    help="--variant fast: leave out this step (repeatable)")  # fmt: skip
    ib.add_argument("--cache-dir", metavar="DIR", help="where images are cached")
    ib.add_argument("--json", action="store_true", help="machine-readable output")
    ib.set_defaults(handler=cmd_image_build)
    for verb, text in (
        ("list", "list the image cache: each image's size, whether today's recipes build it, "
         "and which instances' disks are overlays on it"),
        ("prune", "remove the cached images today's recipes no longer build, unless an "
         "instance's disk is an overlay on one (instances under the host config's "
         "instances_path; an image being built is left alone)"),
    ):  # fmt: skip
        ic = isub.add_parser(verb, help=text.split(":")[0].split(",")[0], description=text + ".")
        ic.add_argument("--cache-dir", metavar="DIR", help="the image cache (default: ~/.cache/"
                        "configdrive/images, or $CONFIGDRIVE_CACHE/images)")  # fmt: skip
        add_host_args(ic)
        if verb == "prune":
            ic.add_argument("--dry-run", action="store_true", help="list, remove nothing")
        ic.add_argument("--json", action="store_true", help="machine-readable output")
        ic.set_defaults(handler=cmd_image_cache)

    bench = sub.add_parser("bench", help="benchmarks that boot real guests")
    bsub = bench.add_subparsers(dest="bench_verb", metavar="ACTION", required=True)
    bb = bsub.add_parser(
        "boot",
        help="first boot by mode, interleaved; JSON/CSV, summary and plots",
        description="--boot kernel (default without --os): boot the project's test guest "
        "repeatedly in each mode (drive-tuned, service, service-loaded, stock, drive-pollinate, "
        "floor) and record every stage from the guest's own reports; writes results.json, "
        "boots.csv and boot-stages.png. --os debian-12|debian-13 with --boot bios|uefi: "
        "create to SSH login on the cloud-shaped images (`configdrive boot --wait "
        "cloud-init`, one process per boot) in the modes stock, stock-service, "
        "stock-service-loaded, datasource, fast, fast-minus-STEP (one per fast-profile step) "
        "and noagent; writes results.json, boots.csv, boot-stages.png and step-savings.png.",
    )
    bb.add_argument("--os", choices=["debian-12", "debian-13"],
                    help="benchmark the cloud-shaped image of this release (default --boot: "
                    "bios)")  # fmt: skip
    bb.add_argument("--boot", choices=["kernel", "bios", "uefi"],
                    help="kernel: the project's direct-kernel-boot test image (the default "
                    "without --os); bios or uefi: the cloud image under SeaBIOS (pc) or OVMF "
                    "(q35)")  # fmt: skip
    bb.add_argument("--modes", default=None,
                    help="comma-separated modes (default: every mode; kernel boot: "
                    f"{','.join(m.value for m in Mode)}; cloud images: all)")  # fmt: skip
    bb.add_argument("--runs", type=int, default=5, help="boots per mode (default 5)")
    bb.add_argument("--quick", action="store_true", help="one boot per mode (CI)")
    bb.add_argument("-o", "--output", default="docs/benchmarks", metavar="DIR",
                    help="where to write the artefacts (default: %(default)s)")  # fmt: skip
    bb.add_argument("--json", action="store_true", help="print the summary as JSON")
    bb.set_defaults(handler=cmd_bench_boot)
    bs = bsub.add_parser(
        "storm",
        help="boot storm: K guests started at once per mode; storm.json and storm.png",
        description="Start K guests of each mode at once (one mode after the other) and "
        "record when each obtains its metadata and becomes ready, counted from the first "
        "start. Writes storm.json and storm.png.",
    )
    bs.add_argument("--modes", default="drive-tuned,service",
                    help="comma-separated modes (default: %(default)s)")  # fmt: skip
    bs.add_argument("-k", "--guests", type=int, default=4,
                    help="guests started at once per mode (default 4)")  # fmt: skip
    bs.add_argument("--quick", action="store_true", help="two guests per mode (CI)")
    bs.add_argument("-o", "--output", default="docs/benchmarks", metavar="DIR",
                    help="where to write the artefacts (default: %(default)s)")  # fmt: skip
    bs.add_argument("--json", action="store_true", help="print the summary as JSON")
    bs.set_defaults(handler=cmd_bench_storm)

    t = sub.add_parser(
        "tune-image",
        help="set cloud-init to read the drive first and remove first-boot stalls, offline",
        description="Edit a qcow2 or raw image offline (no mount): write "
        "/etc/cloud/cloud.cfg.d/99_configdrive.cfg and mask pollinate (profile datasource, "
        "the default), plus "
        "the fast profile's steps: ssh-keys (only ed25519 and ecdsa host keys), grub-dpkg "
        "(cloud-init's grub_dpkg off), wait-online (systemd-networkd-wait-online --any "
        "--timeout=30). Each change is made only when missing; docs/guests.md says why.",
    )
    t.add_argument("image", metavar="IMAGE")
    t.add_argument(
        "--datasource-list",
        default="ConfigDrive,Ec2,NoCloud",
        help="comma-separated (default: %(default)s)",
    )
    t.add_argument("--ec2-timeout", type=int, default=2, help="seconds (default 2)")
    t.add_argument("--ec2-max-wait", type=int, default=5, help="seconds (default 5)")
    t.add_argument("--keep-pollinate", action="store_true", help="leave pollinate alone")
    t.add_argument("--profile", choices=["datasource", "fast"], default="datasource",
                   help="datasource: datasource list and pollinate; fast: also every step below "
                   "(default: datasource)")  # fmt: skip
    t.add_argument("--skip", action="append", default=[], metavar="STEP",
                   help="leave one step out: reread-drive or pollinate (= --keep-pollinate) "
                   "of either profile, or a fast-profile step (ssh-keys, grub-dpkg, "
                   "wait-online, …); repeatable")  # fmt: skip
    t.add_argument("--dry-run", action="store_true", help="show the changes; change nothing")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(handler=cmd_tune_image)


def cmd_boot(args: argparse.Namespace) -> int:
    from configdrive.compute import (
        BootRequest,
        boot,
        console_stages,
        load_image,
        wait_for_console,
        wait_for_ssh,
    )

    host = host_from_args(args)
    data, base = spec_from_args(args)
    waits_ssh = args.wait in ("ssh", "cloud-init")
    identity = Path(args.identity).expanduser() if args.identity else None
    if identity is None and waits_ssh and args.key_file and args.key_file.endswith(".pub"):
        beside = Path(args.key_file[: -len(".pub")]).expanduser()  # the private half, if there
        identity = beside if beside.is_file() else None
    if waits_ssh and identity is None:
        raise UsageError(
            f"--wait {args.wait} logs in over SSH: give --identity FILE, or a --key-file "
            "whose private key lies beside it"
        )
    if identity is not None:
        if not identity.is_file():
            raise UsageError(f"identity: {identity} does not exist or is not a file")
        public = identity.with_name(identity.name + ".pub")
        if not data.get("keys"):
            if not public.is_file():
                raise UsageError(
                    f"identity: the instance has no key and {public} does not exist",
                    hint="give --key-file with the public key of --identity",
                )
            data["keys"] = [{"name": identity.name, "public_key": public.read_text().strip()}]
    instance = instance_from_mapping(data, base=base, limits=limits_from_args(args))
    flavor = find_flavor(args.flavor)
    image = load_image(args.image)
    properties = dict(pair(p, "property") for p in args.property)
    requested = None if args.config_drive is None else _bool(args.config_drive, "config_drive")
    request = BootRequest(
        instance, flavor, image, requested, properties, extra_cmdline=args.append,
        user_net=_user_net(args), firmware=Firmware(args.firmware) if args.firmware else None,
        ssh=args.ssh or waits_ssh,
    )  # fmt: skip
    started = time.monotonic()
    record = boot(request, host, progress=progress(args))
    for warning in record.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    running = time.monotonic()  # boot returns once the guest has been started
    result: dict[str, Any] = {
        "name": record.name,
        "uuid": record.uuid,
        "path": str(record.path),
        "backend": record.backend,
        "accelerator": record.accel,
        "machine": record.machine,
        "config_drive": record.config_drive,
        "metadata_url": record.metadata_url,
        "warnings": record.warnings,
    }
    port = record.spec.get("ssh_port")
    if port is not None:
        result["ssh_port"] = port
    if waits_ssh:
        assert identity is not None
        user = args.login_user or image.login_user or "debian"
        try:
            login = wait_for_ssh(record, host, identity, user, args.timeout,
                                 progress=progress(args))  # fmt: skip
        except ConfigDriveError as exc:
            raise ConfigDriveError(
                f"{exc}; the console's last line: {_last_line(record.console_text())}",
                hint=f"the instance is left for inspection: `configdrive console {record.name}`",
            ) from exc
        result["ssh_s"] = round(time.monotonic() - started, 1)
        result["ssh_since_start_s"] = round(time.monotonic() - running, 1)
        result["ssh"] = {"host": "127.0.0.1", "port": port, "user": user}
        command = f"ssh -i {identity} -p {port} {user}@127.0.0.1"
        if args.wait == "cloud-init":
            left = max(1.0, args.timeout - (time.monotonic() - started))
            status = login.run(["cloud-init", "status", "--wait", "--long"], timeout=left)
            result["cloud_init_s"] = round(time.monotonic() - started, 1)
            result["cloud_init_status"] = status.stdout.strip()
            if status.returncode not in (0, 2):  # 2: degraded (recoverable errors), 23.4+
                raise ConfigDriveError(
                    f"{record.name}: cloud-init did not finish cleanly "
                    f"(exit {status.returncode}): {_last_line(status.stdout + status.stderr)}",
                    hint=f"`configdrive console {record.name}`, or log in: {command}",
                )
        result["waited_s"] = round(time.monotonic() - started, 1)
    elif args.wait:
        wait_for_console(record, args.wait, args.timeout)
        result["waited_s"] = round(time.monotonic() - started, 1)
    if args.wait:
        result["since_start_s"] = round(time.monotonic() - running, 1)
        result["stages"] = console_stages(record.console_text())  # guest uptime at each
    if args.json:
        print(json.dumps(result))
    else:
        if args.wait:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in result["stages"].items()) or "none yet"
            print(f"waited {result['waited_s']} s since boot was called, "
                  f"{result['since_start_s']} s since the guest started; cloud-init stages "
                  f"(guest uptime, s): {stages}")  # fmt: skip
        if waits_ssh:
            print(f"ssh: {command} (first login after {result['ssh_s']} s)")
        drive = record.config_drive or "none"
        registered = f", registered at {record.metadata_url}" if record.metadata_url else ""
        print(
            f"{record.name} {record.uuid} started: {record.backend}, {record.accel}, "
            f"{record.machine}, config drive {drive}{registered}; {record.path}"
        )
    return EXIT_OK


def _bench_cloud(args: argparse.Namespace, firmware: str, runs: int) -> int:
    from configdrive.cloudbench import parse_modes, run_cloud_benchmark
    from configdrive.guest.cloudimage import CloudOS

    try:
        modes = parse_modes(args.modes or "all")
    except ConfigDriveError as exc:
        raise UsageError(str(exc)) from None
    require_extra("bench", "bench (its plots)")
    if any(m.service for m in modes):
        require_extra("service", "the stock-service modes")
    os_ = CloudOS(args.os or "debian-12")
    out = Path(args.output)
    if out == Path("docs/benchmarks"):  # the default: one folder per release and firmware
        out = out / f"cloud-{os_}-{firmware}"
    doc = run_cloud_benchmark(os_, firmware, modes, runs, out, progress=progress(args))
    summary = doc["summary"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"{len(doc['boots'])} boots of {os_} ({firmware}, {doc['machine']}), accelerator "
          f"{doc['accelerator']}; seconds since `configdrive boot` was called, median "
          f"(min-max):")  # fmt: skip
    print(f"{'mode':<26}{'to SSH':>22}{'to cloud-init done':>22}{'metadata wait':>16}")

    def cell(stat: dict[str, float] | None, width: int) -> str:
        text = f"{stat['median']:.1f} ({stat['min']:.1f}-{stat['max']:.1f})" if stat else "-"
        return f"{text:>{width}}"

    for mode, table in summary["modes"].items():
        wait = table["metadata_wait_s"]
        shown = f"{wait['median']:.2f}" if wait else "-"
        print(f"{mode:<26}{cell(table['time_to_ssh_s'], 22)}"
              f"{cell(table['time_to_cloud_init_done_s'], 22)}{shown:>16}")  # fmt: skip
    for name, target in summary["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        print(f"target {name} <= {target['target']}: {target['median']} ({verdict})")
    print(f"wrote {out}/results.json, boots.csv, boot-stages.png, step-savings.png")
    return EXIT_OK


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def cmd_list(args: argparse.Namespace) -> int:
    from configdrive.compute import list_instances
    from configdrive.virt import get_backend

    host = host_from_args(args)
    rows = []
    for record in list_instances(host):
        try:
            backend = get_backend(host.with_(backend=BackendKind(record.backend)))
            state = "running" if backend.is_running(record.guest_spec()) else "stopped"
        except ConfigDriveError:
            state = "unknown"
        rows.append(
            {
                "name": record.name,
                "uuid": record.uuid,
                "state": state,
                "backend": record.backend,
                "accelerator": record.accel,
                "machine": record.machine,
                "flavor": record.flavor,
                "config_drive": record.config_drive,
                "metadata_url": record.metadata_url,
                "directory": str(record.path),
                "drive": str(record.drive_path) if record.drive_path is not None else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(
        f"{'NAME':<20} {'UUID':<36} {'STATE':<8} {'BACKEND':<8} {'ACCEL':<5} {'MACHINE':<8} DRIVE"
    )
    for r in rows:
        print(
            f"{r['name']:<20} {r['uuid']:<36} {r['state']:<8} {r['backend']:<8} "
            f"{r['accelerator']:<5} {r['machine']:<8} {r['config_drive'] or '-'}"
        )
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    from configdrive.compute import find_instance, wait_for_console

    host = host_from_args(args)
    record = find_instance(host, args.instance)
    console = record.path / "console.log"
    if args.wait:
        sys.stdout.write(wait_for_console(record, args.wait, args.timeout))
        return EXIT_OK
    with console.open("rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not args.follow or not console.exists():
                return EXIT_OK
            time.sleep(0.5)


def cmd_delete(args: argparse.Namespace) -> int:
    from configdrive.compute import delete

    record = delete(host_from_args(args), args.instance, progress=progress(args))
    print(f"deleted {record.name} {record.uuid} ({record.path})")
    return EXIT_OK


KERNEL_VARIANTS = ("tuned", "untuned", "pollinate", "floor", "service")
CLOUD_VARIANTS = ("stock", "datasource", "fast", "noagent")


def cmd_image_cache(args: argparse.Namespace) -> int:
    from configdrive.compute import list_instances
    from configdrive.guest.cloudimage import current_cache_names
    from configdrive.guest.image import cache_entries, default_cache_dir, prune_cache

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.cache_dir and not cache.is_dir():
        raise UsageError(f"cache-dir: {cache} is not a directory")
    disks = [Path(r.spec["disk"]) for r in list_instances(host_from_args(args))
             if r.spec.get("disk")]  # fmt: skip
    entries = cache_entries(cache, current_cache_names(), disks)
    pruning = args.image_verb == "prune"
    removed = prune_cache(cache, entries, dry_run=args.dry_run) if pruning else []
    gone = {e.name for e in removed}
    if args.json:
        print(json.dumps([{"name": e.name, "path": str(e.path), "bytes": e.size,
                           "current": e.current, "used_by": list(e.used_by),
                           **({"removed": e.name in gone} if pruning else {})}
                          for e in entries], indent=2))  # fmt: skip
        return EXIT_OK
    for e in entries:
        state = "current" if e.current else "stale"
        if e.used_by:
            state += f", used by {len(e.used_by)} instance disk(s)"
        if e.name in gone:
            state += ", would be removed" if args.dry_run else ", removed"
        print(f"{e.name:44} {e.size / 2**20:8.0f} MiB  {state}")
    if pruning:
        freed = sum(e.size for e in removed) / 2**20
        verb = "would free" if args.dry_run else "freed"
        print(f"{len(removed)} image(s), {verb} {freed:.0f} MiB")
    return EXIT_OK


def cmd_image_build(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir).resolve() if args.cache_dir else None
    if args.boot == "kernel":
        from configdrive.guest.image import ImageVariant, build_image

        if args.os != "debian-12":
            raise UsageError(f"os: --boot kernel images are debian-12 only, not {args.os}",
                             hint="use --boot bios or --boot uefi")  # fmt: skip
        variant = args.variant or "tuned"
        if args.skip:
            raise UsageError("skip: --boot kernel images have no steps to skip")
        if variant not in KERNEL_VARIANTS:
            raise UsageError(f"variant: {variant} is for --boot bios|uefi; --boot kernel takes "
                             f"{', '.join(KERNEL_VARIANTS)}")  # fmt: skip
        image = build_image(ImageVariant(variant), cache, progress=progress(args))
        directory, key, manifest = image.qcow2.parent, image.key, image.qcow2.parent
        qcow2 = image.qcow2
    else:
        from configdrive.guest.cloudimage import CloudOS, CloudVariant, build_cloud_image

        variant = args.variant or "stock"
        if variant not in CLOUD_VARIANTS:
            raise UsageError(f"variant: {variant} is for --boot kernel; --boot {args.boot} "
                             f"takes {', '.join(CLOUD_VARIANTS)}")  # fmt: skip
        from configdrive.guest.tune import STEPS

        for step in args.skip:
            if step not in STEPS:
                raise UsageError(f"skip: {step!r} is not a fast-profile step "
                                 f"(known: {', '.join(STEPS)})")  # fmt: skip
        if args.skip and variant != "fast":
            raise UsageError(f"skip: only --variant fast has steps to skip, not {variant}")
        cloud = build_cloud_image(CloudOS(args.os), CloudVariant(variant), cache,
                                  skip=tuple(args.skip), progress=progress(args))  # fmt: skip
        directory, key, qcow2 = cloud.directory, cloud.key, cloud.qcow2
        manifest = cloud.manifest(args.boot)
    if args.json:
        print(json.dumps({"os": args.os, "boot": args.boot, "variant": variant,
                          "path": str(directory), "manifest": str(manifest),
                          "qcow2": str(qcow2), "key": key}))  # fmt: skip
    else:
        print(f"{args.os} {variant} image ready: {directory} (boot it with --image {manifest})")
    return EXIT_OK


def cmd_tune_image(args: argparse.Namespace) -> int:
    from configdrive.guest.tune import FAST_PROFILE, STEPS, TuneSettings, tune_image

    image = Path(args.image)
    known = {*STEPS, "pollinate", "reread-drive"}
    for name in args.skip:
        if name not in known:
            raise UsageError(f"skip: {name!r} is not a step (known: {', '.join(sorted(known))})")
    if args.profile == "datasource" and set(args.skip) - {"pollinate", "reread-drive"}:
        raise UsageError("skip: the datasource profile has only the pollinate and "
                         "reread-drive steps",
                         hint="use --profile fast")  # fmt: skip
    steps = tuple(s for s in FAST_PROFILE if s not in args.skip) if args.profile == "fast" else ()
    if not image.is_file():
        raise UsageError(f"image: {image} does not exist or is not a file")
    datasources = tuple(d.strip() for d in args.datasource_list.split(",") if d.strip())
    if not datasources:
        raise UsageError("datasource_list: must name at least one datasource")
    settings = TuneSettings(
        datasource_list=datasources,
        ec2_timeout=args.ec2_timeout,
        ec2_max_wait=args.ec2_max_wait,
        disable_pollinate=not (args.keep_pollinate or "pollinate" in args.skip),
        reread_drive="reread-drive" not in args.skip,
        steps=steps,
    )
    result = tune_image(image, settings, dry_run=args.dry_run, progress=progress(args))
    if args.json:
        print(
            json.dumps(
                {
                    "image": str(image),
                    "changed": result.changed,
                    "dry_run": args.dry_run,
                    "changes": [vars(c) for c in result.changes],
                }
            )
        )
        return EXIT_OK
    verb = "would change" if args.dry_run else "changed"
    if not result.changes:
        print(f"{image}: already tuned, nothing to change")
    for change in result.changes:
        print(f"{verb}: {change.action} {change.path} {change.detail}".rstrip())
    return EXIT_OK


def _bench_modes(text: str) -> list[Mode]:
    try:
        modes = [Mode(m.strip()) for m in text.split(",") if m.strip()]
    except ValueError:
        raise UsageError(f"modes: must be among {', '.join(m.value for m in Mode)}") from None
    if not modes:
        raise UsageError("modes: name at least one mode")
    # checked before the first boot, not when the plot is drawn after the last
    require_extra("bench", "bench (its plots)")
    service = [m for m in modes if MODES[m].service]
    if service:
        require_extra("service", f"bench mode {service[0]}")
    return modes


def _seed_spec() -> Path:
    seed = Path(__file__).resolve().parents[2] / "examples" / "seed" / "instance.yaml"
    if not seed.is_file():
        raise UsageError(f"seed example spec not found at {seed}")
    return seed


def cmd_bench_storm(args: argparse.Namespace) -> int:
    from configdrive.benchmark import run_storm

    modes = _bench_modes(args.modes)
    k = 2 if args.quick else args.guests
    if k < 1:
        raise UsageError("guests: must be at least 1")
    out = Path(args.output)
    doc = run_storm(modes, k, out, seed_spec=_seed_spec(), progress=progress(args))
    if args.json:
        print(json.dumps(doc["summary"], indent=2))
        return EXIT_OK
    print(f"storm of {k} guests per mode, accelerator {doc['accelerator']}; seconds since "
          f"the first start:")  # fmt: skip
    for mode, table in doc["summary"].items():
        meta, ready = table.get("metadata obtained"), table.get("ready")
        print(f"{mode:<16} metadata median {meta['median'] if meta else '-':>7}   "
              f"ready median {ready['median'] if ready else '-':>7}   "
              f"all ready {table['all ready']:>7}")  # fmt: skip
    print(f"wrote {out}/storm.json, storm.png")
    return EXIT_OK


def cmd_bench_boot(args: argparse.Namespace) -> int:
    from configdrive.benchmark import run_benchmark

    boot_kind = args.boot or ("bios" if args.os else "kernel")
    runs = 1 if args.quick else args.runs
    if runs < 1:
        raise UsageError("runs: must be at least 1")
    if boot_kind != "kernel":
        return _bench_cloud(args, boot_kind, runs)
    if args.os not in (None, "debian-12"):
        raise UsageError(f"os: the kernel-boot test image is debian-12 only, not {args.os}",
                         hint="add --boot bios or --boot uefi")  # fmt: skip
    modes = _bench_modes(args.modes or ",".join(m.value for m in Mode))
    seed = _seed_spec()
    out = Path(args.output)
    doc = run_benchmark(modes, runs, out, seed_spec=seed, progress=progress(args))
    summary = doc["summary"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"{len(doc['boots'])} boots, accelerator {doc['accelerator']}; median seconds since "
          f"QEMU start (min-max):")  # fmt: skip
    stages = ["metadata obtained", "cloud-init finished", "ready"]
    print(f"{'mode':<18}" + "".join(f"{s:>26}" for s in stages) + f"{'ready/floor':>13}")
    for mode, table in summary["stages"].items():
        cells = []
        for stage in stages:
            stat = table.get(stage)
            cells.append(f"{stat['median']:>8.2f} ({stat['min']:.1f}-{stat['max']:.1f})"
                         if stat else f"{'-':>8}")  # fmt: skip
        ratio = summary["ratio_to_floor_ready"].get(mode)
        print(f"{mode:<18}" + "".join(f"{c:>26}" for c in cells) + f"{ratio or '-':>13}")
    waits = ", ".join(f"{mode} {stat['median']:.2f} s" for mode, stat in
                      summary["metadata_wait"].items() if stat)  # fmt: skip
    print(f"cloud-init's wait for metadata (local stage start -> found; median): {waits}")
    for mode, ratios in summary.get("service_vs_drive", {}).items():
        shown = ", ".join(f"{stage} {ratio}x" for stage, ratio in ratios.items())
        print(f"{mode} vs drive-tuned (median): {shown}")
    print(f"wrote {out}/results.json, boots.csv, boot-stages.png")
    return EXIT_OK
