"""First-boot benchmark: boot the project's guest in several injection modes, interleaved, and
record every stage from the guest's own reports.

Each boot is a real `configdrive boot` (plain QEMU backend), with the same flavor and the same
restricted network (QEMU user networking, ``restrict=on``, one DHCP port): the guest reaches
nothing beyond this machine, so anything that tries (pollinate) meets a black hole as on an
isolated cloud network. Times are seconds since the backend started QEMU, stamped on the host
as console lines arrive (:mod:`configdrive.timeline`).
"""

from __future__ import annotations

import csv
import enum
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configdrive.compute import BootRequest, boot, delete, load_image
from configdrive.drive import DriveFormat
from configdrive.errors import ConfigDriveError
from configdrive.host import Accelerator, BackendKind, HostConfig, find_flavor
from configdrive.image import ImageVariant, build_image, parse_check_report
from configdrive.spec import instance_from_mapping, load_spec
from configdrive.timeline import ConsoleWatcher, build_timeline

__all__ = ["MODES", "BootResult", "Mode", "boot_once", "run_benchmark", "summarize"]

END = "CONFIGDRIVE-CHECK end"
Progress = Callable[[str], None]


class Mode(enum.StrEnum):
    DRIVE_TUNED = "drive-tuned"
    STOCK = "stock"
    DRIVE_POLLINATE = "drive-pollinate"
    FLOOR = "floor"


@dataclass(frozen=True)
class ModeSpec:
    mode: Mode
    variant: ImageVariant
    config_drive: bool
    description: str


MODES: dict[Mode, ModeSpec] = {
    Mode.DRIVE_TUNED: ModeSpec(Mode.DRIVE_TUNED, ImageVariant.TUNED, True,
                               "config drive ISO; datasource_list [ConfigDrive, Ec2, NoCloud], "
                               "Ec2 timeout 2/max_wait 5; pollinate masked"),
    Mode.STOCK: ModeSpec(Mode.STOCK, ImageVariant.UNTUNED, True,
                         "config drive ISO; cloud-init's stock datasource list; pollinate enabled"),
    Mode.DRIVE_POLLINATE: ModeSpec(Mode.DRIVE_POLLINATE, ImageVariant.POLLINATE, True,
                                   "as drive-tuned, but pollinate enabled (server unreachable)"),
    Mode.FLOOR: ModeSpec(Mode.FLOOR, ImageVariant.FLOOR, False,
                         "no metadata at all: datasource_list [None], no drive"),
}  # fmt: skip

# cloud-init log events (substring -> name) mapped onto the host clock
EVENTS = {
    "running 'init-local'": "cloud-init local stage",
    "Searching for local data source": "datasource search",
    "Running command ['mount'": "drive mounted",
    "Reading from /run/cloud-init/tmp/": "drive read",
    "found local data from": "metadata obtained",
}
STAGES = (
    "kernel", "initramfs", "systemd", "cloud-init local", "metadata obtained",
    "cloud-init network", "cloud-init config", "cloud-init final", "cloud-init finished", "ready",
)  # fmt: skip
SPEC = {  # the seed example's metadata, and a DHCP port on the restricted user network
    "name": "benchguest",
    "meta": {"role": "webservers", "essential": "false"},
    "networks": [{"mac": "fa:16:3e:00:00:42", "subnets": [
        {"cidr": "169.254.0.0/16", "ips": ["169.254.2.15"], "dhcp": True}]}],
}  # fmt: skip


@dataclass
class BootResult:
    mode: str
    run: int
    accelerator: str
    datasource: str
    pollinate_ran: str
    stages: dict[str, float | None]
    events: dict[str, float]
    guest: dict[str, Any]

    def row(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "run": self.run,
            "accelerator": self.accelerator,
            "datasource": self.datasource,
            "pollinate_ran": self.pollinate_ran,
        }
        for name in STAGES:
            data[name] = self.stages.get(name)
        return data


def _image_dir(variant: ImageVariant) -> Path:
    return build_image(variant).qcow2.parent


def boot_once(
    spec: ModeSpec,
    run: int,
    work: Path,
    *,
    seed_spec: Path,
    timeout: float = 900,
    progress: Progress | None = None,
    host: HostConfig | None = None,
    network: bool = True,
) -> BootResult:
    """Boot one guest in ``spec``'s mode and read its timeline.

    ``network``: a NIC on the restricted user network (the benchmark's default, the same for
    every mode); False: no NIC, and the seed example exactly as given (its injected files too).
    """
    say = progress or (lambda _m: None)
    host = (host or HostConfig()).with_(instances_path=work / "instances")
    data, base = load_spec(seed_spec)
    if network:
        data.pop("files", None)  # the seed's /etc/network/interfaces would replace Debian's
        data.update(SPEC)
    data["uuid"] = str(uuid.uuid4())
    instance = instance_from_mapping(data, base=base)
    request = BootRequest(
        instance,
        find_flavor("1"),
        load_image(_image_dir(spec.variant)),
        config_drive=spec.config_drive,
        extra_cmdline="configdrive.poweroff=1",
        # a NIC on the restricted user network, no forwards: nothing beyond it is reachable
        user_net=() if network else None,
    )
    console = host.instances_path / instance.uuid / "console.log"
    watcher: ConsoleWatcher | None = None

    def hook(message: str) -> None:
        nonlocal watcher
        if message.startswith("starting "):
            watcher = ConsoleWatcher(console)  # t=0: the backend is about to start QEMU

    record = boot(request, host, progress=hook)
    if watcher is None:
        raise ConfigDriveError("internal: boot did not announce the start of the guest")
    try:
        if not watcher.wait_for(END, timeout):
            raise ConfigDriveError(f"{spec.mode} run {run}: no check report within {timeout:.0f}s")
        report = parse_check_report("\n".join(line for _, line in watcher.lines))
    finally:
        delete(host, instance.uuid)
    timeline = build_timeline(watcher.lines, report)
    events: dict[str, float] = {}
    for label, seconds in timeline.events.items():
        for needle, name in EVENTS.items():
            if needle in label and name not in events:
                events[name] = seconds
    stages = dict(timeline.stages)
    stages["metadata obtained"] = events.get("metadata obtained")
    stages["ready"] = stages.get("check report")  # the check unit starts after cloud-final
    result = BootResult(
        mode=str(spec.mode), run=run, accelerator=record.accel,
        datasource=str(report.get("datasource") or ""),
        pollinate_ran=str(report.get("pollinate_ran") or ""),
        stages=stages, events=events,
        guest={k: report.get(k) for k in ("uptime", "uptime_finished", "system_state", "blame",
                                          "critical_chain", "cloud_init_analyze")},
    )  # fmt: skip
    source = result.datasource or "no datasource"
    say(f"{spec.mode} run {run}: ready at {stages['ready']} s ({source})")
    return result


def _stat(values: Sequence[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": round(statistics.median(present), 2), "min": round(min(present), 2),
            "max": round(max(present), 2), "n": len(present)}  # fmt: skip


def summarize(results: Sequence[BootResult]) -> dict[str, Any]:
    """Median/min/max per mode and stage, and each mode's ratio to the floor."""
    modes = sorted({r.mode for r in results}, key=lambda m: list(Mode).index(Mode(m)))
    table: dict[str, dict[str, Any]] = {}
    for mode in modes:
        rows = [r for r in results if r.mode == mode]
        table[mode] = {stage: _stat([r.stages.get(stage) for r in rows]) for stage in STAGES}
    floor = table.get(Mode.FLOOR, {}).get("ready")
    ratios = {}
    for mode in modes:
        ready = table[mode].get("ready")
        if floor and ready:
            ratios[mode] = round(ready["median"] / floor["median"], 2)
    return {"stages": table, "ratio_to_floor_ready": ratios}


def _plot(summary: dict[str, Any], out: Path, accelerator: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["stages"])
    bounds = ["kernel", "systemd", "cloud-init local", "metadata obtained", "cloud-init network",
              "cloud-init config", "cloud-init final", "cloud-init finished", "ready"]  # fmt: skip
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10, 2.2 + 0.8 * len(modes)))
    for y, mode in enumerate(modes):
        start = 0.0
        for i, stage in enumerate(bounds):
            stat = summary["stages"][mode].get(stage)
            if stat is None:
                continue
            end = stat["median"]
            ax.barh(y, max(end - start, 0), left=start, color=colors(i % 10),
                    label=f"→ {stage}" if y == 0 or mode == modes[0] else None)  # fmt: skip
            start = end
        ax.text(start + 0.3, y, f"{start:.1f} s", va="center")
    ax.set_yticks(range(len(modes)), modes)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since QEMU start (median; accelerator: {accelerator})")
    ax.set_title("First boot by stage and injection mode")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=False))
    ax.legend(seen.values(), seen.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.22),
              fontsize=7, ncol=5, frameon=False)  # fmt: skip
    fig.tight_layout()
    path = out / "boot-stages.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_benchmark(
    modes: Sequence[Mode],
    runs: int,
    out: Path,
    *,
    seed_spec: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Boot ``runs`` guests per mode, interleaved (A B C A B C …); write results.json,
    boots.csv and boot-stages.png into ``out``; return the result document."""
    say = progress or (lambda _m: None)
    host = HostConfig(backend=BackendKind.QEMU, accelerator=Accelerator.AUTO,
                      config_drive_format=DriveFormat.ISO9660)  # fmt: skip
    for mode in modes:  # build (or find cached) every image first: not part of any boot
        say(f"image for {mode}: {_image_dir(MODES[mode].variant)}")
    work = Path(tempfile.mkdtemp(prefix="configdrive-bench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    results: list[BootResult] = []
    started = time.monotonic()
    try:
        for run in range(1, runs + 1):
            for mode in modes:
                say(f"boot {len(results) + 1}/{runs * len(modes)}: {mode} run {run}")
                result = boot_once(
                    MODES[mode], run, work, seed_spec=seed_spec, progress=say, host=host
                )
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)
    accelerator = ",".join(sorted({r.accelerator for r in results}))
    document: dict[str, Any] = {
        "benchmark": "first boot by injection mode",
        "modes": {str(m): MODES[m].description for m in modes},
        "runs_per_mode": runs,
        "interleaved": True,
        "accelerator": accelerator,
        "machine": machine_info(),
        "versions": _versions(),
        "wall_seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "boots": [vars(r) for r in results],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    with (out / "boots.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0].row()))
        writer.writeheader()
        for r in results:
            writer.writerow(r.row())
    _plot(summary, out, accelerator)
    return document


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}  # fmt: skip


def _versions() -> dict[str, str]:
    from configdrive.run import find_tool, run

    qemu = run([find_tool("qemu-system-x86_64"), "--version"]).stdout.decode().splitlines()[0]
    return {"qemu": qemu}
