#!/usr/bin/env python3
"""Benchmark: create to SSH login on the cloud-shaped Debian images, stock against fast.

Each run boots the stock image (the baseline, Debian's image as it ships) and the fast one
(the same disk after ``tune-image --profile fast``), interleaved, one guest at a time, with the
config drive and one restricted NIC, exactly as a user would:

    configdrive boot NAME --image MANIFEST --config-drive true --identity KEY
        --wait cloud-init --json

and records from ``boot``'s own output ``ssh_s`` (seconds from the command's start to the
first successful SSH login as ``debian``) and ``cloud_init_s`` (until ``cloud-init status
--wait`` returned over that login), plus the guest's ``systemd-analyze`` blame and critical
chain and cloud-init's datasource, read from its check report on the serial console. The
ratio is stock over fast, per run (medians of the runs, and their range).

What the ratio depends on: the accelerator (TCG here, so every CPU-bound step such as RSA key
generation or Python start-up costs several times what it does under KVM), the disk, and the
steps the fast profile removes (docs/guests.md).

Writes bench/results/cloud_first_boot.json (or -o PATH).
Usage: bench/cloud_first_boot.py [--os debian-12|debian-13] [--firmware bios|uefi] [--runs N]
       [-o PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configdrive.guest.cloudimage import CloudOS, CloudVariant, build_cloud_image  # noqa: E402
from configdrive.guest.image import parse_check_report  # noqa: E402


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "configdrive", *args], capture_output=True,
                          text=True, check=False, timeout=timeout, cwd=ROOT)  # fmt: skip


def boot_once(work: Path, manifest: Path, name: str, machine: str) -> dict[str, Any]:
    host = work / "host.conf"
    host.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\nforce_config_drive = true\n"
        f"[libvirt]\nvirt_type = auto\nhw_machine_type = {machine}\n"
        "[configdrive]\nbackend = qemu\n"
    )
    key = work / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
    proc = _cli("boot", name, "--image", str(manifest), "--host-config", str(host),
                "--identity", str(key), "--wait", "cloud-init", "--timeout", "1500",
                "--json")  # fmt: skip
    try:
        if proc.returncode != 0:
            raise SystemExit(f"boot {name} failed: {proc.stderr.strip()[-2000:]}")
        result = json.loads(proc.stdout)
        console = Path(result["path"]) / "console.log"
        deadline = time.monotonic() + 600
        text = ""
        while "CONFIGDRIVE-CHECK end" not in text and time.monotonic() < deadline:
            time.sleep(2)
            text = console.read_text(errors="replace")
        report = parse_check_report(text)
    finally:
        _cli("delete", name, "--host-config", str(host))
    return {
        "ssh_s": result["ssh_s"],
        "cloud_init_s": result["cloud_init_s"],
        "accelerator": result["accelerator"],
        "datasource": report.get("datasource"),
        "failed_units": report.get("failed_units"),
        "systemd_time": report.get("time"),
        "blame": (report.get("blame") or "").splitlines()[:15],
        "critical_chain": report.get("critical_chain"),
    }


def _stats(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--os", choices=[str(o) for o in CloudOS], default="debian-12")
    parser.add_argument("--firmware", choices=["bios", "uefi"], default="bios")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("-o", "--output", default=str(ROOT / "bench/results/cloud_first_boot.json"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    machine = "q35" if args.firmware == "uefi" else "pc"
    images = {v: build_cloud_image(CloudOS(args.os), v) for v in CloudVariant}
    work = Path(tempfile.mkdtemp(prefix="configdrive-cloudbench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    boots: dict[str, list[dict[str, Any]]] = {str(v): [] for v in CloudVariant}
    try:
        for run in range(args.runs):
            for variant, image in images.items():  # stock first: the baseline, each run
                print(f"run {run + 1}/{args.runs}: {variant} ...", file=sys.stderr, flush=True)
                sub = work / f"{variant}-{run}"
                sub.mkdir()
                boot = boot_once(sub, image.manifest(args.firmware), f"bench-{variant}", machine)
                boots[str(variant)].append(boot)
                print(f"  ssh {boot['ssh_s']} s, cloud-init done {boot['cloud_init_s']} s "
                      f"({boot['accelerator']})", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {}
    for metric in ("ssh_s", "cloud_init_s"):
        table: dict[str, Any] = {v: _stats([b[metric] for b in boots[v]]) for v in boots}
        ratios = [s[metric] / f[metric] for s, f in zip(boots["stock"], boots["fast"], strict=True)]
        table["ratio_stock_over_fast"] = _stats(ratios, digits=2)
        summary[metric] = table
    doc = {
        "os": args.os,
        "firmware": args.firmware,
        "machine": machine,
        "runs": args.runs,
        "accelerator": sorted({b["accelerator"] for v in boots.values() for b in v}),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "summary": summary,
        "boots": boots,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for metric, table in summary.items():
        ratio = table["ratio_stock_over_fast"]
        print(f"{metric}: stock {table['stock']['median']:.1f} s, fast "
              f"{table['fast']['median']:.1f} s, stock/fast {ratio['median']}x "
              f"({ratio['min']}-{ratio['max']}) [{', '.join(doc['accelerator'])}]")  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
