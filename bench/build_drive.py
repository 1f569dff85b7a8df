#!/usr/bin/env python3
"""Benchmark: build the seed example's config drive with configdrive and nova's way, at equal
durability, interleaved, in rounds, on each disk given.

Per drive, on the disk under test (the output and, for nova's way, its staging directory):

- configdrive: render + in-process ISO9660 writer + atomic write; ``durable``: the library's
  write_drive (fsync of the file and the directory, then link); ``no fsync``: the same image
  written to a temporary file and renamed, nothing flushed.
- nova's way (ConfigDriveBuilder._make_iso9660): render the same tree, write its 51 files into a
  staging directory, run genisoimage with nova's argv, remove the staging directory;
  ``no fsync`` is what nova does; ``durable`` adds the same fsyncs of the result as configdrive.
- openstacksdk's ``openstack.baremetal.configdrive.build`` (temp dir + genisoimage + gzip +
  base64, a 4-file tree) against ``configdrive.sdk.build`` (the same API, in memory): both
  return bytes, neither flushes anything.

Every round times each method ``-n`` times, interleaved with the methods of the same
durability (flushing ones together, the others together) so that drift on the machine hits
them alike; the ratios are per round (medians), reported as their range. The
ratio depends on what the disk charges for creating and removing the staging files, on the
cost of one fork/exec of genisoimage, and on what an fsync costs there (the same for both
sides when both flush).

Writes bench/results/build_drive.json (or -o PATH).
Usage: bench/build_drive.py [-n N] [--rounds R] [--dir DIR]... [-o PATH] [--json]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configdrive import DriveFormat, Instance, instance_from_mapping, load_spec, render  # noqa: E402
from configdrive import sdk as cd_sdk  # noqa: E402
from configdrive.benchmark import machine_info  # noqa: E402
from configdrive.drive import read_drive, write_drive, write_image  # noqa: E402

NOVA_ARGV = ["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher",
             "OpenStack Nova 34.0.0", "-quiet", "-J", "-r", "-V", "config-2"]  # fmt: skip
OURS_DURABLE = "configdrive, durable (fsync file + dir)"
OURS_FAST = "configdrive, no fsync"
NOVA_DURABLE = "nova's way, durable (fsync file + dir)"
NOVA_FAST = "nova's way, no fsync (as nova)"
SDK_THEIRS = "openstacksdk configdrive.build (in memory result)"
SDK_OURS = "configdrive.sdk.build (in memory result)"
PART_RENDER = "render the tree (both ways do)"
PART_STAGE = "nova: write the 51 staging files, then remove them"
PART_GENISO = "nova: genisoimage on a staged tree (process start included)"
PART_FSYNC = "write and fsync a drive-sized file and its directory"
RATIOS = {  # name: (numerator, denominator)
    "nova / configdrive, both durable": (NOVA_DURABLE, OURS_DURABLE),
    "nova / configdrive, neither fsyncs": (NOVA_FAST, OURS_FAST),
    "nova as it runs / configdrive as it runs": (NOVA_FAST, OURS_DURABLE),
    "openstacksdk / configdrive.sdk": (SDK_THEIRS, SDK_OURS),
}


def _fsync(path: Path) -> None:
    """Flush a file and its directory entry, as configdrive.drive.write_drive does."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ours(instance: Instance, out: Path, durable: bool) -> None:
    tree = render(instance)
    if durable:
        write_drive(tree, out, DriveFormat.ISO9660, force=True)
        return
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as f:
        write_image(tree, f, DriveFormat.ISO9660)
    os.replace(tmp, out)


def stage(tree: dict[str, bytes], parent: Path) -> Path:
    """nova's staging directory: every file of the tree written out (ConfigDriveBuilder)."""
    staging = Path(tempfile.mkdtemp(prefix="cd_gen_", dir=parent))
    for path, data in tree.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
    return staging


def genisoimage_run(genisoimage: str, staging: Path, out: Path) -> None:
    # processutils.execute captures the output too
    subprocess.run([genisoimage, "-o", str(out), *NOVA_ARGV, str(staging)], check=True,
                   capture_output=True)  # fmt: skip


def nova_way(instance: Instance, out: Path, genisoimage: str, durable: bool) -> None:
    staging = stage(render(instance), out.parent)
    try:
        genisoimage_run(genisoimage, staging, out)
        if durable:
            _fsync(out)
    finally:
        shutil.rmtree(staging)


def filesystem_of(path: Path) -> dict[str, str]:
    """The mount holding ``path`` (longest mount point prefix in /proc/self/mounts)."""
    best = {"mount": "", "type": "unknown", "device": "", "options": ""}
    real = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mount, fstype, options, *_ = line.split()
        mount = mount.replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best["mount"]):
            best = {"mount": mount, "type": fstype, "device": device, "options": options}
    return best


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}  # fmt: skip


def _write_and_fsync(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    _fsync(path)


def run_disk(
    directory: Path,
    instance: Instance,
    genisoimage: str,
    n: int,
    rounds: int,
    sdk_pair: tuple[Callable[[], object], Callable[[], object]],
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cd_bench_", dir=directory))
    tree = render(instance)
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(work)  # openstacksdk's temp dir lands on the disk under test too
    try:
        methods: dict[str, Callable[[], object]] = {
            OURS_DURABLE: lambda: ours(instance, work / "ours-durable.config", True),
            NOVA_DURABLE: lambda: nova_way(
                instance, work / "nova-durable.config", genisoimage, True
            ),  # fmt: skip
            OURS_FAST: lambda: ours(instance, work / "ours.config", False),
            NOVA_FAST: lambda: nova_way(instance, work / "nova.config", genisoimage, False),
            SDK_THEIRS: sdk_pair[0],
            SDK_OURS: sdk_pair[1],
        }
        for fn in methods.values():  # warm-up
            fn()
        sizes = {path: len(data) for path, data in tree.items()}  # seeds differ, sizes not
        for name in ("ours", "nova"):
            got = read_drive(work / f"{name}.config").files
            if {path: len(data) for path, data in got.items()} != sizes:
                raise SystemExit(f"error: {name}.config does not hold the rendered tree")
        # the parts nova's way is made of, timed in the same loop: where its time goes
        staged, image = stage(tree, work), (work / "ours.config").read_bytes()
        parts: dict[str, Callable[[], object]] = {
            PART_RENDER: lambda: render(instance),
            PART_STAGE: lambda: shutil.rmtree(stage(tree, work)),
            PART_GENISO: lambda: genisoimage_run(genisoimage, staged, work / "staged.iso"),
            PART_FSYNC: lambda: _write_and_fsync(work / "fsync.config", image),
        }
        # Interleaved within a durability group, the groups one after the other in each round:
        # an fsync commits the filesystem's journal, and metadata operations that follow it
        # (nova's staging files) wait for that commit, so flushing methods would slow the
        # others down if all ran in one loop.
        flushing = {OURS_DURABLE, NOVA_DURABLE, PART_FSYNC}
        timed = {**methods, **parts}
        groups = [
            {k: v for k, v in timed.items() if k in flushing},
            {k: v for k, v in timed.items() if k not in flushing},
        ]
        per_round: dict[str, list[float]] = {name: [] for name in timed}
        samples: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(rounds):
            times: dict[str, list[float]] = {name: [] for name in timed}
            for group in groups:
                for _ in range(n):
                    for name, fn in group.items():
                        start = time.perf_counter()
                        fn()
                        times[name].append((time.perf_counter() - start) * 1000)
            for name, values in times.items():
                per_round[name].append(statistics.median(values))
                samples[name].extend(values)
    finally:
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(work)
    ratios = {label: [a / b for a, b in zip(per_round[num], per_round[den], strict=True)]
              for label, (num, den) in RATIOS.items()}  # fmt: skip
    median = {name: round(statistics.median(v), 3) for name, v in samples.items()}
    return {
        "dir": str(directory),
        "filesystem": filesystem_of(directory),
        "median_ms": {name: median[name] for name in methods},
        "parts_median_ms": {name: median[name] for name in parts},
        "round_median_ms": {name: [round(x, 3) for x in v] for name, v in per_round.items()},
        "ratio": {label: _stats(values) for label, values in ratios.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("-n", type=int, default=200, help="drives per method and round (200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per disk (default 5)")
    parser.add_argument("--dir", action="append", type=Path, metavar="DIR",
                        help="where to build (repeat; default: .cache/ in the checkout, on the "
                        "work dir's filesystem, and /dev/shm)")  # fmt: skip
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "bench/results/build_drive.json"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.n < 1 or args.rounds < 1:
        print("error: -n and --rounds must be at least 1", file=sys.stderr)
        return 2

    genisoimage = shutil.which("genisoimage")
    if genisoimage is None:
        print("error: genisoimage is missing (hint: scripts/setup --system)", file=sys.stderr)
        return 2
    from importlib.metadata import version

    import openstack.baremetal.configdrive as sdk_configdrive

    dirs = args.dir or [ROOT / ".cache", Path("/dev/shm")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    data["networks"] = "none"  # nova's tree for a server with no ports: network_data.json {}
    instance = instance_from_mapping(data, base=base)
    tree = render(instance)
    md = json.loads(tree["openstack/latest/meta_data.json"])
    ud = instance.user_data

    load_before = os.getloadavg()
    sdk_pair = (
        lambda: sdk_configdrive.build(md, user_data=ud),
        lambda: cd_sdk.build(md, user_data=ud),
    )
    disks = [run_disk(d, instance, genisoimage, args.n, args.rounds, sdk_pair) for d in dirs]
    report = {
        "benchmark": "build the seed example's config drive, at equal durability",
        "n": args.n,
        "rounds": args.rounds,
        "files_in_tree": len(tree),
        "machine": machine_info(),
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        "versions": {
            "genisoimage": _genisoimage_version(genisoimage),
            "openstacksdk": version("openstacksdk"),
        },
        "disks": disks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"build the seed example drive ({len(tree)} files), {args.rounds} rounds of "
          f"n={args.n}, median ms per drive:")  # fmt: skip
    for disk in disks:
        fs = disk["filesystem"]
        print(f"\n{disk['dir']} ({fs['type']} on {fs['device']}, {fs['options']}):")
        for name, ms in disk["median_ms"].items():
            print(f"  {ms:8.2f} ms  {name}")
        for name, ms in disk["parts_median_ms"].items():
            print(f"  {ms:8.2f} ms    part: {name}")
        for label, stat in disk["ratio"].items():
            print(f"  {label}: {stat['median']}x (rounds {stat['min']}-{stat['max']}x)")
    print(f"\nwrote {args.output}")
    return 0


def _genisoimage_version(path: str) -> str:
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
