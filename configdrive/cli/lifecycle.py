"""`configdrive update`, `diff` and `check`: change a booted instance's drive, compare drives
and specs, check any drive before boot."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from configdrive.cli._common import EXIT_FAIL, EXIT_OK, UsageError, progress

__all__ = ["register"]


def _diff(args: argparse.Namespace) -> int:
    from configdrive.lifecycle import DiffInputError, diff_paths

    label = {"config-drive": "config-2", "nocloud": "cidata", None: None}[args.format]
    try:
        result = diff_paths(args.a, args.b, label=label)
    except DiffInputError as exc:  # bad input: exit 2, as diff(1) does
        raise UsageError(str(exc), hint="give a drive image (ISO9660/VFAT) or a spec") from None
    print(json.dumps(result.to_json(), indent=2) if args.json else result.text())
    return EXIT_OK if result.equal else EXIT_FAIL


def _check(args: argparse.Namespace) -> int:
    from configdrive.errors import InvalidDrive
    from configdrive.lifecycle import check_drive, find_cloud_init

    try:
        judge = find_cloud_init(args.cloud_init)
    except FileNotFoundError as exc:
        raise UsageError(
            str(exc), hint="give an unpacked cloud-init or its dist-packages"
        ) from None
    macs = [_mac(m) for m in args.mac] if args.mac else None
    drive = args.drive
    if args.patch or args.nic or args.output:
        drive = _patch(args)
    try:
        report = check_drive(drive, macs=macs, judge=judge)
    except InvalidDrive as exc:
        raise UsageError(str(exc), hint="give an ISO9660 or VFAT drive image") from None
    print(json.dumps(report.to_json(), indent=2) if args.json else report.text())
    return EXIT_OK if report.ok else EXIT_FAIL


def _patch(args: argparse.Namespace) -> str:
    from configdrive.cli.drives import nic_ports
    from configdrive.errors import DriveError, InvalidDrive
    from configdrive.lifecycle import patch_network

    if not (args.patch and args.nic and args.output):
        raise UsageError("--patch, --nic and -o/--output go together", hint="see check --help")
    ports = nic_ports(args.nic)
    try:
        result = patch_network(args.drive, ports, args.output, force=args.force)
    except InvalidDrive as exc:
        raise UsageError(str(exc), hint="--patch re-masters config drives (config-2)") from None
    except DriveError as exc:  # nothing was written: the check could not run (exit 2)
        raise UsageError(str(exc), hint=exc.hint) from None
    print(
        f"wrote {result.path} ({result.filesystem}, label {result.label}): "
        f"{len(result.written)} network_data.json rewritten, every other file as it was"
    )
    return str(result.path)


def _mac(text: str) -> str:
    from configdrive.errors import SpecError

    parts = text.split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise SpecError("--mac", f"{text!r} is not a MAC address like fa:16:3e:00:00:01")
    return text.lower()


def _update(args: argparse.Namespace) -> int:
    from configdrive.cli.drives import spec_from_args
    from configdrive.cli.guests import host_from_args
    from configdrive.compute import SPEC_FILE, find_instance
    from configdrive.lifecycle.boots import EVERY_BOOT, SETTINGS, every_boot
    from configdrive.lifecycle.diff import Diff, Side
    from configdrive.lifecycle.power import backend_of
    from configdrive.lifecycle.update import apply_update, plan_update, stored_spec

    if args.spec or args.uuid:
        raise UsageError(
            "update starts from the instance's stored spec, with its uuid",
            hint="give the changes as flags; --instance-id new gives the guest a new one",
        )
    host = host_from_args(args)
    record = find_instance(host, args.instance)
    stored_spec(record)  # the spec boot stored, or an error naming what is missing
    remove = [k for k, _, v in (m.partition("=") for m in args.meta) if not v]
    args.meta = [m for m in args.meta if m.partition("=")[2]]
    args.spec = str(record.path / SPEC_FILE)
    merged, base = spec_from_args(args)
    plan = plan_update(host, record, merged, rule=args.instance_id, remove_meta=remove, base=base)
    try:
        entries = [every_boot(record.cloud_init.split("-")[0])] if record.cloud_init else []
    except KeyError:  # a version the table does not hold: say what each supported one does
        entries = []
    entries = entries or list(EVERY_BOOT)
    again = {
        f"{e.version} ({e.distribution})": [SETTINGS.get(m, m) for m in e.modules if m in SETTINGS]
        for e in entries
    }
    diff = Diff(Side(str(plan.drive), "drive", "", {}), Side("update", "spec", "", {}),
                plan.changes)  # fmt: skip
    how = ""
    if not args.dry_run and plan.changes:
        how = apply_update(plan, backend_of(host, record))
    if args.json:
        print(json.dumps({
            "instance": record.name, "drive": str(plan.drive), "uuid": plan.after.uuid,
            "instance_id": args.instance_id, "dry_run": args.dry_run,
            "changed": bool(plan.changes), "diff": diff.to_json(), "applied": how or None,
            "every_boot": again if args.instance_id == "keep" else None,
            "warnings": list(plan.warnings),
        }, indent=2))  # fmt: skip
        return EXIT_OK
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not plan.changes:
        print(f"{record.name}: no change to {plan.drive}")
        return EXIT_OK
    print(diff.text())
    if args.instance_id == "keep":
        for version, names in again.items():
            print(f"cloud-init {version} applies again at boot: {', '.join(names)}")
    if args.dry_run:
        print(f"dry run: {plan.drive} not changed")
    else:
        print(f"updated {plan.drive} ({len(plan.changes)} file(s) changed): {how}")
    return EXIT_OK


def _start(args: argparse.Namespace) -> int:
    from configdrive.cli.guests import host_from_args
    from configdrive.lifecycle.power import start

    record = start(host_from_args(args), args.instance, progress=progress(args))
    print(f"started {record.name} {record.uuid}")
    return EXIT_OK


def _stop(args: argparse.Namespace) -> int:
    from configdrive.cli.guests import host_from_args
    from configdrive.lifecycle.power import stop

    if args.timeout < 0:
        raise UsageError("timeout: must be 0 or more seconds")
    record = stop(host_from_args(args), args.instance, timeout=args.timeout, force=args.force,
                  progress=progress(args))  # fmt: skip
    print(f"stopped {record.name} {record.uuid}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the `update`, `diff` and `check` verbs to the top-level subparsers."""
    from configdrive.cli.drives import add_instance_args
    from configdrive.cli.guests import add_host_args

    u = sub.add_parser(
        "update",
        help="rebuild a booted instance's config drive with changed metadata",
        description=(
            "Rebuild INSTANCE's disk.config from its stored spec plus the changes given "
            "(--user-data, --key-name/--key-file, --meta KEY=VALUE or KEY= to remove, --file, "
            "--nic, --vendor-data, …), keeping everything else (injected files, admin "
            "password, uuid). A running guest's CD-ROM medium is swapped. --instance-id keep "
            "(default): cloud-init applies again only its every-boot modules; new: a new uuid, "
            "so every per-instance module runs again (host keys included). --dry-run prints "
            "the diff."
        ),
    )
    u.add_argument("instance", metavar="INSTANCE", help="the instance's name or uuid")
    add_instance_args(u)
    add_host_args(u)
    u.add_argument(
        "--instance-id",
        choices=["keep", "new"],
        default="keep",
        help="keep (default): the guest's cloud-init applies again only what it runs every "
        "boot; new: a new instance-id, so every per-instance module runs again",
    )
    u.add_argument("--dry-run", action="store_true", help="print the diff; change nothing")
    u.add_argument("--json", action="store_true", help="machine-readable output")
    u.set_defaults(handler=_update)

    st = sub.add_parser(
        "start",
        help="boot a stopped instance again (same disk, its drive as it is now)",
        description="Boot the stopped instance INSTANCE again from its instance directory: "
        "the same disk and UEFI variables, and disk.config as it is now. The previous boot's "
        "console is kept as console.log.1.",
    )
    st.add_argument("instance", metavar="INSTANCE", help="the instance's name or uuid")
    add_host_args(st)
    st.set_defaults(handler=_start)
    sp = sub.add_parser(
        "stop",
        help="shut an instance's guest down (ACPI), keeping the instance",
        description="Press INSTANCE's ACPI power button and wait for the guest to power off. "
        "The instance stays: `configdrive start` boots it again.",
    )
    sp.add_argument("instance", metavar="INSTANCE", help="the instance's name or uuid")
    add_host_args(sp)
    sp.add_argument("--timeout", type=float, default=120,
                    help="seconds to wait for the guest to power off (default 120)")  # fmt: skip
    sp.add_argument(
        "--force",
        action="store_true",
        help="pull the plug if it has not powered off by then (--timeout 0: at once)",
    )
    sp.set_defaults(handler=_stop)

    c = sub.add_parser(
        "check",
        help="pre-flight: check any config drive or NoCloud seed before a guest boots from it",
        description=(
            "Everything `inspect` finds, plus: user and vendor data against cloud-init's own "
            "schema (the host's cloud-init, or --cloud-init DIR), an empty network "
            "description, MACs against the guest's NICs (--mac), nova's size limits and "
            "common platform limits (EC2 16 KiB, KubeVirt 2 KiB). "
            "Exit 0: clean, 1: problems found, 2: bad input."
        ),
    )
    c.add_argument("drive", metavar="DRIVE", help="drive image (ISO9660 or VFAT, anyone's)")
    c.add_argument(
        "--mac",
        action="append",
        metavar="MAC",
        help="a NIC of the guest (repeat for each); every NIC must be described",
    )
    c.add_argument(
        "--cloud-init",
        metavar="DIR",
        help="cloud-init to run the schema with: an unpacked package's root or dist-packages",
    )
    c.add_argument(
        "--patch",
        action="store_true",
        help="re-master DRIVE into -o OUT with network_data.json rendered from --nic (the "
        "same filesystem and label; every other file byte-identical), then check OUT",
    )
    c.add_argument(
        "--nic",
        action="append",
        default=[],
        metavar="K=V[,K=V…]",
        help="with --patch: a port, as `build --nic` takes it (repeatable)",
    )
    c.add_argument("-o", "--output", metavar="OUT", help="with --patch: the drive to write")
    c.add_argument("--force", action="store_true", help="with --patch: replace an existing OUT")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(handler=_check)

    d = sub.add_parser(
        "diff",
        help="compare two drives, two specs, or a drive and a spec",
        description=(
            "Report every file added, removed or changed between A and B, and inside JSON "
            "(and NoCloud YAML) files every key. Each side is a drive image (ISO9660 or "
            "VFAT, anyone's) or an instance spec, rendered as the other side's kind of drive "
            "would hold it. random_seed is ignored. Exit 0: equal, 1: different, 2: bad input."
        ),
    )
    d.add_argument("a", metavar="A", help="drive image or spec file")
    d.add_argument("b", metavar="B", help="drive image or spec file")
    d.add_argument(
        "--format",
        choices=["config-drive", "nocloud"],
        help="the drive kind two specs are rendered as (default: config-drive; with a drive "
        "on either side, that drive's kind)",
    )
    d.add_argument("--json", action="store_true", help="print the diff as JSON")
    d.set_defaults(handler=_diff)
