"""Create to SSH login on the cloud-shaped Debian images, by mode: ``configdrive bench boot
--os debian-12|debian-13 --boot bios|uefi``.

Every boot is the command a user runs, in its own process, timed by its own output::

    configdrive boot NAME --image MANIFEST --spec SPEC --identity KEY --wait cloud-init --json

``time_to_ssh_s`` is ``ssh_s`` (from ``boot`` being called to the first SSH login with the
instance's key), ``time_to_cloud_init_done_s`` is ``cloud_init_s`` (until ``cloud-init status
--wait`` returned over that login). After each boot the guest is asked over SSH what it
applied (hostname, the user data's file and runcmd proof), how systemd spent its boot
(``systemd-analyze``) and what cloud-init's log says (the metadata wait: from the ``init-local``
stage starting to a datasource being found). Modes are interleaved (A B C … A B C …), one guest
at a time, every guest on one restricted NIC that reaches nothing beyond this machine.

Modes (:func:`cloud_modes`): ``stock`` (Debian's image as it ships, plus the config drive),
``stock-service`` and ``stock-service-loaded`` (the same image, no drive: the OpenStack
datasource over a nova-like path whose first hop is the real haproxy, configured as neutron's
metadata proxy), ``datasource`` and ``fast`` (tune-image's two profiles, with the drive), one
``fast-minus-STEP`` per fast-profile step, and ``noagent`` (the fast image with cloud-init
disabled, its host keys and root's login key made at build time: a boot that applies nothing).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from configdrive.benchmark import (
    LOADED_HOPS,
    MAC,
    SERVICE_HOPS,
    MetadataChain,
    legend_below,
    machine_info,
    save_figure,
)
from configdrive.errors import ConfigDriveError
from configdrive.guest import tune
from configdrive.guest.cloudimage import CloudImage, CloudOS, CloudVariant, build_cloud_image
from configdrive.login import Login
from configdrive.service.config import HopSpec
from configdrive.spec import instance_from_mapping
from configdrive.virt.domain import USER_NET

__all__ = [
    "TARGETS",
    "CloudMode",
    "cloud_modes",
    "parse_modes",
    "run_cloud_benchmark",
    "summarize_cloud",
]

Progress = Callable[[str], None]

# The targets, on this machine's accelerator (TCG): fast over stock and over noagent
# (time to SSH, medians of the same run), and the drive's metadata wait (median seconds)
TARGETS = {"fast_over_stock": 0.5, "fast_over_noagent": 1.10, "drive_metadata_wait_s": 0.3}
BOOT_TIMEOUT = 1500.0
GUEST_ADDRESS = "169.254.2.15"
APPLIED = "/var/lib/configdrive-bench"
USER_DATA = f"""\
#cloud-config
write_files:
  - path: {APPLIED}/applied
    content: applied by cloud-init
runcmd:
  - [sh, -c, "echo ran > {APPLIED}/runcmd"]
"""


@dataclass(frozen=True)
class CloudMode:
    name: str
    variant: CloudVariant
    description: str
    skip: tuple[str, ...] = ()
    drive: bool = True
    hops: tuple[HopSpec, ...] | None = None

    @property
    def service(self) -> bool:
        return self.hops is not None

    @property
    def applies(self) -> bool:
        """Whether the guest applies the metadata (every mode but noagent)."""
        return self.variant is not CloudVariant.NOAGENT


def cloud_modes() -> dict[str, CloudMode]:
    """Every mode, in the order a run boots them."""
    modes = [
        CloudMode("stock", CloudVariant.STOCK,
                  "Debian's image as it ships (ds-identify decides), config drive ISO"),
        CloudMode("stock-service", CloudVariant.STOCK,
                  "stock image, no drive: the OpenStack datasource through real haproxy "
                  "(neutron's template), metadata agent (10 ms) and nova-api-metadata (20 ms)",
                  drive=False, hops=SERVICE_HOPS),
        CloudMode("stock-service-loaded", CloudVariant.STOCK,
                  "as stock-service on a loaded path: agent 100 ms, nova-api-metadata 400 ms",
                  drive=False, hops=LOADED_HOPS),
        CloudMode("datasource", CloudVariant.DATASOURCE,
                  "tune-image --profile datasource (the drive first, Ec2 fast, pollinate "
                  "masked), config drive ISO"),
        CloudMode("fast", CloudVariant.FAST,
                  f"tune-image --profile fast ({', '.join(tune.FAST_PROFILE)}), config drive ISO"),
    ]  # fmt: skip
    for step in tune.FAST_PROFILE:
        modes.append(CloudMode(f"fast-minus-{step}", CloudVariant.FAST,
                               f"as fast, without the {step} step", skip=(step,)))  # fmt: skip
    modes.append(CloudMode(
        "noagent", CloudVariant.NOAGENT,
        "the fast image with cloud-init disabled, host keys and root's login key made at build "
        "time, networkd DHCP: applies nothing (the floor)", drive=False))  # fmt: skip
    return {m.name: m for m in modes}


def parse_modes(text: str) -> list[CloudMode]:
    """``a,b,c`` -> the modes, in the order given; ``all`` is every mode."""
    known = cloud_modes()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(known.values())
    if not names:
        raise ConfigDriveError("modes: name at least one mode")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigDriveError(f"modes: {unknown[0]!r} is not a mode (known: all, "
                               f"{', '.join(known)})")  # fmt: skip
    if len(set(names)) != len(names):
        raise ConfigDriveError("modes: name each mode once")
    return [known[n] for n in names]


# ---------------------------------------------------------------------------------------------
# one boot


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "configdrive", *args], capture_output=True,
                          text=True, check=False, timeout=timeout)  # fmt: skip


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - ")


def metadata_wait(log: str) -> tuple[float | None, str | None]:
    """From cloud-init.log: seconds from the ``init-local`` stage starting to the first
    datasource found (not DataSourceNone), and that datasource."""
    start = None
    for line in log.splitlines():
        match = _LOG_TIME.match(line)
        if match is None:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if start is None and "running 'init-local'" in line:
            start = when
        found = re.search(r"found (?:local|network) data from (DataSource\w+)", line)
        if start is not None and found and found.group(1) != "DataSourceNone":
            return round((when - start).total_seconds(), 3), found.group(1)
    return None, None


_PROBE = (
    "hostname; echo ---; cat {applied}/applied 2>/dev/null; echo; echo ---; "
    "cat {applied}/runcmd 2>/dev/null; echo ---; systemd-analyze 2>&1 | head -3; echo ---; "
    "systemd-analyze blame 2>&1 | head -25; echo ---; "
    "systemd-analyze critical-chain ssh.service 2>&1 | tail -n +3; echo ---; "
    'grep -E "running \'init|found (local|network) data|finished at" '
    "/var/log/cloud-init.log 2>/dev/null"
)


def _probe(login: Login) -> dict[str, Any]:
    sudo = [] if login.user == "root" else ["sudo"]
    proc = login.run([*sudo, "sh", "-c", _PROBE.format(applied=APPLIED)], timeout=120)
    parts = (proc.stdout.split("---\n") + [""] * 7)[:7]
    hostname, applied, runcmd, summary, blame, chain, log = (p.strip() for p in parts)
    wait, source = metadata_wait(log)
    return {
        "hostname": hostname,
        "user_data_applied": applied == "applied by cloud-init" and runcmd == "ran",
        "systemd_time": summary.splitlines()[0] if summary else None,
        "blame": blame.splitlines(),
        "critical_chain": chain.splitlines(),
        "metadata_wait_s": wait,
        "datasource": source,
    }


def _spec(mode: CloudMode, run: int, public_key: str) -> dict[str, Any]:
    name = f"bench-{mode.name}-{run}"[:63]
    return {
        "name": name,
        "uuid": str(uuid.uuid4()),
        "keys": [{"name": "bench", "public_key": public_key}],
        "user_data": USER_DATA,
        "meta": {"bench": mode.name, "run": str(run)},
        "networks": [
            {"mac": MAC, "subnets": [{"cidr": str(USER_NET), "ips": [GUEST_ADDRESS], "dhcp": True}]}
        ],  # fmt: skip
    }


def boot_once(
    mode: CloudMode,
    image: CloudImage,
    firmware: str,
    run: int,
    work: Path,
    *,
    host_config: Path,
    identity: Path,
    chain: MetadataChain | None,
    say: Progress,
) -> dict[str, Any]:
    """One ``configdrive boot`` in ``mode``, its figures and what the guest shows; the instance
    is deleted afterwards whatever happened."""
    manifest = json.loads(image.manifest(firmware).read_text())
    key = identity
    if manifest.get("identity"):  # the no-agent image logs in with the key it was built with
        key = image.directory / str(manifest["identity"])
    data = _spec(mode, run, identity.with_name(identity.name + ".pub").read_text().strip())
    spec_file = work / f"{data['name']}.json"
    spec_file.write_text(json.dumps(data))
    argv = ["boot", data["name"], "--image", str(image.manifest(firmware)), "--spec",
            str(spec_file), "--host-config", str(host_config), "--identity", str(key),
            "--wait", "cloud-init" if mode.applies else "ssh", "--timeout", str(BOOT_TIMEOUT),
            "--json", "--config-drive", "true" if mode.drive else "false"]  # fmt: skip
    instance = instance_from_mapping(data)
    if mode.service:
        if chain is None:
            raise ConfigDriveError(f"internal: mode {mode.name} needs the metadata chain")
        forward = chain.attach(instance)
        argv += ["--guestfwd", f"{forward.guest_ip}:{forward.guest_port}="
                 f"{forward.host}:{forward.host_port}"]  # fmt: skip
    try:
        proc = _cli(*argv, timeout=BOOT_TIMEOUT + 120)
        if proc.returncode != 0:
            raise ConfigDriveError(f"{mode.name} run {run}: boot failed: "
                                   f"{proc.stderr.strip()[-1500:]}")  # fmt: skip
        result = json.loads(proc.stdout)
        ssh = result["ssh"]
        probe = _probe(Login(port=int(ssh["port"]), identity=key, user=str(ssh["user"])))
    finally:
        _cli("delete", data["name"], "--host-config", str(host_config), timeout=120)
        if chain is not None and mode.service:
            requests = chain.requests_from(instance)
            chain.detach(instance)
    boot: dict[str, Any] = {
        "mode": mode.name,
        "run": run,
        "accelerator": result["accelerator"],
        "machine": result["machine"],
        "time_to_ssh_s": result["ssh_s"],
        "ssh_since_qemu_start_s": result["ssh_since_start_s"],
        "time_to_cloud_init_done_s": result.get("cloud_init_s") if mode.applies else None,
        "cloud_init_status": result.get("cloud_init_status"),
        "stages": result.get("stages", {}),  # guest uptime at each cloud-init stage
        "hostname_applied": probe.pop("hostname") == data["name"],
        **probe,
    }
    if mode.service:
        boot["metadata_requests"] = requests
    shown = boot["time_to_cloud_init_done_s"]
    say(f"{mode.name} run {run}: ssh {boot['time_to_ssh_s']} s, cloud-init done "
        f"{shown if shown is not None else '-'} s, metadata wait "
        f"{boot['metadata_wait_s']} s ({boot['datasource'] or 'no datasource'}), "
        f"{boot['accelerator']}")  # fmt: skip
    return boot


# ---------------------------------------------------------------------------------------------
# the run, the summary, the plots


def _stat(values: Sequence[float | None], digits: int = 2) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": round(statistics.median(present), digits),
            "min": round(min(present), digits), "max": round(max(present), digits),
            "n": len(present)}  # fmt: skip


METRICS = ("time_to_ssh_s", "time_to_cloud_init_done_s", "metadata_wait_s")


def _paired(boots: Sequence[dict[str, Any]], a: str, b: str, metric: str) -> list[float]:
    """Per run: ``a``'s metric over ``b``'s (the boots of one run are interleaved)."""
    by: dict[tuple[str, int], float] = {
        (x["mode"], x["run"]): x[metric] for x in boots if x.get(metric)
    }
    runs = sorted({x["run"] for x in boots})
    return [by[a, r] / by[b, r] for r in runs if (a, r) in by and (b, r) in by]


def summarize_cloud(boots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: median/min/max of each metric and stage; the targets; each step's saving."""
    modes = list(dict.fromkeys(b["mode"] for b in boots))
    table: dict[str, Any] = {}
    for mode in modes:
        rows = [b for b in boots if b["mode"] == mode]
        entry: dict[str, Any] = {m: _stat([r.get(m) for r in rows]) for m in METRICS}
        stages = sorted({s for r in rows for s in r["stages"]},
                        key=lambda s: min(r["stages"].get(s, 1e9) for r in rows))  # fmt: skip
        entry["stages"] = {s: _stat([r["stages"].get(s) for r in rows]) for s in stages}
        entry["applied"] = all(r["user_data_applied"] and r["hostname_applied"] for r in rows)
        table[mode] = entry
    ratios: dict[str, Any] = {}
    for a, b in (
        ("fast", "stock"),
        ("fast", "noagent"),
        ("datasource", "stock"),
        ("stock-service", "stock"),
        ("stock-service-loaded", "stock"),
    ):
        if a in table and b in table:
            ratios[f"{a}_over_{b}"] = {
                m: _stat(_paired(boots, a, b, m))
                for m in ("time_to_ssh_s", "time_to_cloud_init_done_s")
            }
    savings: dict[str, Any] = {}
    by = {(x["mode"], x["run"]): x for x in boots}
    for mode in modes:
        if not mode.startswith("fast-minus-") or "fast" not in table:
            continue
        step = mode.removeprefix("fast-minus-")
        savings[step] = {}
        for metric in ("time_to_ssh_s", "time_to_cloud_init_done_s"):
            diffs = [by[mode, r][metric] - by["fast", r][metric]
                     for (m, r) in by if m == mode and ("fast", r) in by]  # fmt: skip
            savings[step][metric] = _stat(diffs, 1)
    targets: dict[str, Any] = {}
    for name, limit in TARGETS.items():
        if name == "drive_metadata_wait_s":
            stat = (table.get("fast") or {}).get("metadata_wait_s")
        else:
            stat = (ratios.get(name) or {}).get("time_to_ssh_s")
        value = stat["median"] if stat else None
        targets[name] = {"target": limit, "median": value,
                         "met": None if value is None else value <= limit}  # fmt: skip
    return {"modes": table, "ratios": ratios, "step_savings": savings, "targets": targets}


def _plot_stages(doc: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = doc["summary"]["modes"]
    modes = list(table)
    bounds = [("init-local", "kernel, initramfs, systemd"), ("init", "cloud-init local"),
              ("modules:config", "cloud-init network"), ("modules:final", "cloud-init config"),
              ("finished", "cloud-init final")]  # fmt: skip
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10.5, 2.0 + 0.55 * len(modes)))
    for y, mode in enumerate(modes):
        start = 0.0
        for i, (stage, label) in enumerate(bounds):
            stat = table[mode]["stages"].get(stage)
            if stat is None:
                continue
            ax.barh(y, max(stat["median"] - start, 0), left=start, color=colors(i),
                    label=label)  # fmt: skip
            start = stat["median"]
        ssh = table[mode]["time_to_ssh_s"]
        if ssh:
            ax.plot([ssh["median"]], [y], marker="D", color="black", label="SSH login")
            ax.errorbar([ssh["median"]], [y], xerr=[[ssh["median"] - ssh["min"]],
                        [ssh["max"] - ssh["median"]]], color="black", capsize=3)  # fmt: skip
            ax.text(ssh["max"] + 1, y, f"{ssh['median']:.0f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(modes)), modes)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds (bars: guest uptime at each cloud-init stage; ◆: create to SSH, "
                  f"min-max); accelerator: {doc['accelerator']}")  # fmt: skip
    ax.set_title(f"First boot by mode: {doc['os']}, {doc['firmware']}, {doc['machine']} "
                 f"(median of {doc['runs']})")  # fmt: skip
    legend_below(ax, offset=-0.14, ncol=6)
    return save_figure(fig, out / "boot-stages.png")


def _plot_savings(doc: dict[str, Any], out: Path) -> Path | None:
    savings = doc["summary"]["step_savings"]
    if not savings:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(savings)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.5 * len(steps)))
    for offset, (metric, label) in enumerate(
        (("time_to_ssh_s", "to SSH"), ("time_to_cloud_init_done_s", "to cloud-init done"))
    ):
        for y, step in enumerate(steps):
            stat = savings[step][metric]
            if stat is None:
                continue
            pos = y + (offset - 0.5) * 0.38
            ax.barh(pos, stat["median"], height=0.36, color=f"C{offset}",
                    label=label if y == 0 else None)  # fmt: skip
            ax.errorbar([stat["median"]], [pos], xerr=[[stat["median"] - stat["min"]],
                        [stat["max"] - stat["median"]]], color="black", capsize=3)  # fmt: skip
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(steps)), steps)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds saved by the step (fast-minus-STEP − fast, per run; median, "
                  f"min-max); {doc['accelerator']}")  # fmt: skip
    ax.set_title(f"Fast-profile steps: {doc['os']}, {doc['firmware']}")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "step-savings.png")


def run_cloud_benchmark(
    os_: CloudOS,
    firmware: str,
    modes: Sequence[CloudMode],
    runs: int,
    out: Path,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Boot ``runs`` guests per mode, interleaved; write results.json, boots.csv,
    boot-stages.png and step-savings.png into ``out``; return the result document."""
    from configdrive.service.haproxy import haproxy_version

    if firmware not in ("bios", "uefi"):
        raise ConfigDriveError(f"firmware must be bios or uefi, not {firmware!r}")
    if runs < 1:
        raise ConfigDriveError("runs: must be at least 1")
    say = progress or (lambda _m: None)
    machine = "q35" if firmware == "uefi" else "pc"
    images: dict[str, CloudImage] = {}
    for mode in modes:  # built (or found cached) before the first boot: not part of any boot
        images[mode.name] = build_cloud_image(os_, mode.variant, skip=mode.skip, progress=say)
        say(f"image for {mode.name}: {images[mode.name].directory}")
    work = Path(tempfile.mkdtemp(prefix="configdrive-cloudbench-", dir="/var/tmp"))
    os.chmod(work, 0o755)  # the hypervisor's user reads the instances below it
    host_config = work / "host.conf"
    host_config.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\n"
        f"[libvirt]\nvirt_type = auto\nhw_machine_type = {machine}\n"
        "[configdrive]\nbackend = qemu\n"
    )
    identity = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "configdrive-bench",
                    "-f", str(identity)], check=True)  # fmt: skip
    started = time.monotonic()
    boots: list[dict[str, Any]] = []
    chains: dict[str, MetadataChain] = {}
    try:
        for mode in modes:
            if mode.hops is not None:
                chains[mode.name] = MetadataChain(work, mode.hops)
        for run in range(1, runs + 1):
            for mode in modes:
                say(f"boot {len(boots) + 1}/{runs * len(modes)}: {mode.name} run {run}")
                boots.append(boot_once(mode, images[mode.name], firmware, run, work,
                                       host_config=host_config, identity=identity,
                                       chain=chains.get(mode.name), say=say))  # fmt: skip
    finally:
        for chain in chains.values():
            chain.close()
        shutil.rmtree(work, ignore_errors=True)
    accelerator = ",".join(sorted({b["accelerator"] for b in boots}))
    doc: dict[str, Any] = {
        "benchmark": "create to SSH login on the cloud-shaped images, by mode",
        "os": str(os_),
        "firmware": firmware,
        "machine": machine,
        "runs": runs,
        "interleaved": True,
        "accelerator": accelerator,
        "modes": {m.name: m.description for m in modes},
        "images": {name: image.directory.name for name, image in images.items()},
        "service_path": {
            "haproxy": haproxy_version(),
            "hops": {m.name: [vars(h) for h in m.hops or ()] for m in modes if m.service},
        },  # fmt: skip
        "targets": TARGETS,
        "host": machine_info(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "summary": summarize_cloud(boots),
        "boots": boots,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    columns = ["mode", "run", "accelerator", "time_to_ssh_s", "time_to_cloud_init_done_s",
               "metadata_wait_s", "datasource", "user_data_applied",
               "hostname_applied"]  # fmt: skip
    with (out / "boots.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(boots)
    _plot_stages(doc, out)
    _plot_savings(doc, out)
    return doc
