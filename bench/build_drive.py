#!/usr/bin/env python3
"""Benchmark: build the seed example's config drive N times three ways, in one run.

1. configdrive: render + in-process ISO9660 writer + atomic write (fsync, rename) to disk.
2. nova's way: render the same tree, stage it in a temp dir, run genisoimage with nova's argv
   (ConfigDriveBuilder._make_iso9660), remove the temp dir.
3. openstacksdk's builder (openstack.baremetal.configdrive.build: temp dir + genisoimage +
   gzip + base64), against configdrive.sdk.build with the same inputs.

Prints the median milliseconds per drive and the ratios; writes bench/results/build_drive.json.
Usage: bench/build_drive.py [-n N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configdrive import DriveFormat, instance_from_mapping, load_spec, render, write_drive  # noqa: E402
from configdrive import sdk as cd_sdk  # noqa: E402
from configdrive.benchmark import machine_info  # noqa: E402

NOVA_ARGV = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher",
             "OpenStack Nova 31.0.0", "-quiet", "-J", "-r", "-V", "config-2"]  # fmt: skip


def nova_way(instance: object, out: Path, genisoimage: str) -> None:
    tree = render(instance)  # type: ignore[arg-type]
    staging = Path(tempfile.mkdtemp(prefix="cd_gen_"))
    try:
        for path, data in tree.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        # processutils.execute captures the output too
        subprocess.run(
            [genisoimage, "-o", str(out), *NOVA_ARGV, str(staging)],
            check=True,
            capture_output=True,
        )
    finally:
        shutil.rmtree(staging)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="drives per method (default 200)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    genisoimage = shutil.which("genisoimage")
    if genisoimage is None:
        print("error: genisoimage is missing (hint: scripts/setup --system)", file=sys.stderr)
        return 2
    from importlib.metadata import version

    import openstack.baremetal.configdrive as sdk_configdrive

    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    instance = instance_from_mapping(data, base=base)
    tree = render(instance)
    md = json.loads(tree["openstack/latest/meta_data.json"])
    ud = instance.user_data
    work = Path(tempfile.mkdtemp(prefix="cd_bench_"))
    out = work / "disk.config"

    def ours() -> None:
        write_drive(render(instance), out, DriveFormat.ISO9660, force=True)

    def nova() -> None:
        nova_way(instance, work / "nova.config", genisoimage)

    def sdk_theirs() -> None:
        sdk_configdrive.build(md, user_data=ud)

    def sdk_ours() -> None:
        cd_sdk.build(md, user_data=ud)

    methods = {
        "configdrive (render + in-process ISO + fsync)": ours,
        "nova (render + temp dir + genisoimage)": nova,
        "openstacksdk configdrive.build": sdk_theirs,
        "configdrive.sdk.build (same API)": sdk_ours,
    }
    results: dict[str, list[float]] = {name: [] for name in methods}
    # interleave so drift on the machine hits every method alike
    for fn in methods.values():  # warm-up
        fn()
    for _ in range(args.n):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            results[name].append((time.perf_counter() - start) * 1000)
    shutil.rmtree(work)

    medians = {name: statistics.median(s) for name, s in results.items()}
    names = list(methods)
    report = {
        "benchmark": "build the seed example's config drive",
        "n": args.n,
        "files_in_tree": len(tree),
        "machine": machine_info(),  # fmt: skip
        "versions": {
            "genisoimage": _genisoimage_version(genisoimage),
            "openstacksdk": version("openstacksdk"),
        },  # fmt: skip
        "median_ms": {k: round(v, 3) for k, v in medians.items()},
        "min_ms": {k: round(min(v), 3) for k, v in results.items()},
        "ratio_nova_over_configdrive": round(medians[names[1]] / medians[names[0]], 1),
        "ratio_openstacksdk_over_configdrive_sdk": round(medians[names[2]] / medians[names[3]], 1),
    }
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/build_drive.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"build the seed example drive ({len(tree)} files), n={args.n}, median ms per drive:")
    for name in names:
        print(f"  {medians[name]:8.2f} ms  {name}")
    print(f"nova's way / configdrive:              {report['ratio_nova_over_configdrive']}x")
    print(
        "openstacksdk / configdrive.sdk:        "
        f"{report['ratio_openstacksdk_over_configdrive_sdk']}x"
    )
    return 0


def _genisoimage_version(path: str) -> str:
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
