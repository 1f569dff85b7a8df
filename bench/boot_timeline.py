#!/usr/bin/env python3
"""One first boot's timeline: QEMU start -> kernel -> cloud-init local stage -> drive read ->
cloud-init finished -> ready, measured on this host with the project's guest and the seed
example's config drive.

The host stamps each console line as it arrives (t=0 when the backend starts QEMU); the drive
read and datasource search come from cloud-init's own log, reported by the guest's check unit
and mapped onto the host clock through the guest's uptime. Writes
bench/results/boot_timeline.json.

Usage: bench/boot_timeline.py [--runs N] [--backend qemu|libvirt] [--machine pc|q35]
                              [--format iso9660|vfat|nocloud] [--variant tuned|untuned]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configdrive import instance_from_mapping, load_spec  # noqa: E402
from configdrive.compute import BootRequest, boot, delete, load_image  # noqa: E402
from configdrive.drive import DriveFormat  # noqa: E402
from configdrive.host import Accelerator, BackendKind, HostConfig, find_flavor  # noqa: E402
from configdrive.image import ImageVariant, build_image, parse_check_report  # noqa: E402
from configdrive.timeline import ConsoleWatcher, build_timeline  # noqa: E402

END = "CONFIGDRIVE-CHECK end"
EVENTS = {  # label substring -> name in the results
    "running 'init-local'": "cloud-init local: stage start",
    "Searching for local data source": "cloud-init local: datasource search",
    "Running command ['mount'": "cloud-init local: drive mounted",
    "Reading from /run/cloud-init/tmp/": "cloud-init local: drive read",
    "found local data from": "cloud-init local: metadata obtained",
}


def one_boot(image_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    host = HostConfig(
        instances_path=work / "instances",
        backend=BackendKind(args.backend),
        machine_type=args.machine,
        accelerator=Accelerator(args.accel),
        config_drive_format=DriveFormat(args.format),
    )
    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    data["uuid"] = str(uuid.uuid4())
    instance = instance_from_mapping(data, base=base)
    request = BootRequest(
        instance,
        find_flavor(args.flavor),
        load_image(image_dir),
        config_drive=True,
        extra_cmdline="configdrive.poweroff=1",
    )
    watcher: ConsoleWatcher | None = None
    console = host.instances_path / instance.uuid / "console.log"

    def progress(message: str) -> None:
        nonlocal watcher
        print(f"-- {message}", file=sys.stderr)
        if message.startswith("starting "):
            watcher = ConsoleWatcher(console)  # t=0: the backend is about to start QEMU

    record = boot(request, host, progress=progress)
    assert watcher is not None
    try:
        if not watcher.wait_for(END, args.timeout):
            raise SystemExit(f"error: no check report within {args.timeout:.0f}s; see {console}")
        report = parse_check_report("\n".join(line for _, line in watcher.lines))
    finally:
        delete(host, instance.uuid)
    timeline = build_timeline(watcher.lines, report)
    events = {}
    for label, seconds in timeline.events.items():
        for needle, name in EVENTS.items():
            if needle in label and name not in events:
                events[name] = seconds
    return {
        "accelerator": record.accel,
        "accelerator_reason": record.accel_reason,
        "datasource": report.get("datasource"),
        "stages": timeline.stages,
        "events": events,
        "guest": {k: report.get(k) for k in ("uptime", "uptime_finished", "system_state")},
        "systemd_analyze_time": report.get("time"),
        "critical_chain": report.get("critical_chain"),
        "blame": report.get("blame"),
        "cloud_init_analyze": report.get("cloud_init_analyze"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="qemu", choices=["qemu", "libvirt"])
    parser.add_argument("--machine", default="pc")
    parser.add_argument("--format", default="iso9660", choices=["iso9660", "vfat", "nocloud"])
    parser.add_argument("--variant", default="tuned", choices=["tuned", "untuned"])
    parser.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    parser.add_argument("--flavor", default="1")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    image = build_image(ImageVariant(args.variant), progress=lambda m: print(f"-- image: {m}"))
    work = Path(tempfile.mkdtemp(prefix="configdrive-timeline-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    runs = []
    try:
        for n in range(args.runs):
            print(f"== boot {n + 1}/{args.runs}", file=sys.stderr)
            runs.append(one_boot(image.qcow2.parent, work, args))
            time.sleep(2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = list(runs[0]["stages"]) + list(EVENTS.values())
    median: dict[str, float | None] = {}
    for name in names:
        values = [r["stages"].get(name, r["events"].get(name)) for r in runs]
        values = [v for v in values if v is not None]
        median[name] = round(statistics.median(values), 2) if values else None
    result = {
        "benchmark": "first boot timeline, seed example, config drive",
        "settings": vars(args),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "kernel": platform.release()},
        "accelerator": runs[0]["accelerator"],
        "accelerator_reason": runs[0]["accelerator_reason"],
        "median_seconds_since_qemu_start": median,
        "runs": runs,
    }
    out = ROOT / "bench/results/boot_timeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"accelerator: {result['accelerator']} ({result['accelerator_reason']})")
    print(f"median of {len(runs)} boots, seconds since QEMU start:")
    for name, value in sorted(median.items(), key=lambda kv: (kv[1] is None, kv[1] or 0)):
        print(f"  {value if value is not None else '-':>7}  {name}")
    return 0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
