#!/usr/bin/env python3
"""One first boot's timeline: QEMU start -> kernel -> cloud-init local stage -> drive read ->
cloud-init finished -> ready, measured on this host with the project's tuned guest and the seed
example's config drive (exactly as given: no NIC, its injected files).

Stamps come from configdrive.benchmark.boot_once (host-stamped console lines; cloud-init's own
log events mapped through the guest's uptime). Writes bench/results/boot_timeline.json.

Usage: bench/boot_timeline.py [--runs N] [--backend qemu|libvirt] [--machine pc|q35]
                              [--format iso9660|vfat|nocloud] [--accel auto|kvm|tcg]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configdrive.benchmark import MODES, STAGES, Mode, boot_once, machine_info  # noqa: E402
from configdrive.drive import DriveFormat  # noqa: E402
from configdrive.host import Accelerator, BackendKind, HostConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="qemu", choices=["qemu", "libvirt"])
    parser.add_argument("--machine", default="pc")
    parser.add_argument("--format", default="iso9660", choices=["iso9660", "vfat", "nocloud"])
    parser.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    args = parser.parse_args()
    host = HostConfig(
        backend=BackendKind(args.backend),
        machine_type=args.machine,
        accelerator=Accelerator(args.accel),
        config_drive_format=DriveFormat(args.format),
    )
    work = Path(tempfile.mkdtemp(prefix="configdrive-timeline-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    seed = ROOT / "examples/seed/instance.yaml"
    try:
        runs = [
            boot_once(
                MODES[Mode.DRIVE_TUNED],
                n + 1,
                work,
                seed_spec=seed,
                host=host,
                network=False,
                progress=lambda m: print(f"-- {m}", file=sys.stderr),
            )  # fmt: skip
            for n in range(args.runs)
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = list(STAGES) + sorted({e for r in runs for e in r.events})
    median: dict[str, float | None] = {}
    for name in names:
        values = [v for r in runs if (v := r.stages.get(name, r.events.get(name))) is not None]
        median[name] = round(statistics.median(values), 2) if values else None
    result = {
        "benchmark": "first boot timeline, seed example, config drive",
        "settings": vars(args),
        "machine": machine_info(),
        "accelerator": runs[0].accelerator,
        "median_seconds_since_qemu_start": median,
        "runs": [vars(r) for r in runs],
    }
    out = ROOT / "bench/results/boot_timeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"accelerator: {result['accelerator']}; median of {len(runs)} boots, s since QEMU start:")
    for name, value in sorted(median.items(), key=lambda kv: (kv[1] is None, kv[1] or 0)):
        print(f"  {value if value is not None else '-':>7}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
