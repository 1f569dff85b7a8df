"""First-boot benchmark: boot the project's guest in several injection modes, interleaved, and
record every stage from the guest's own reports.

Each boot is a real `configdrive boot` (plain QEMU backend), with the same flavor and the same
restricted network (QEMU user networking, ``restrict=on``, one DHCP port): the guest reaches
nothing beyond this machine, so anything that tries (pollinate) meets a black hole as on an
isolated cloud network. The ``service`` mode's guests get one ``guestfwd`` rule more:
169.254.169.254:80 to their own front port on a nova-like chain (real haproxy → metadata agent →
nova-api-metadata stand-in → ``configdrive serve``, :data:`SERVICE_HOPS`). Times are seconds
since the backend started QEMU, stamped on the host as console lines arrive
(:mod:`configdrive.timeline`).

The boot storm starts K guests of one mode at once and records when each becomes ready,
counted from the moment the first was started.
"""

from __future__ import annotations

import contextlib
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

from configdrive.compute import BootRequest, InstanceRecord, boot, delete, load_image
from configdrive.drive import DriveFormat
from configdrive.errors import ConfigDriveError
from configdrive.guest.image import ImageVariant, build_image, parse_check_report
from configdrive.host import Accelerator, BackendKind, HostConfig, find_flavor
from configdrive.model import Instance
from configdrive.service.client import AdminClient
from configdrive.service.config import HopSpec
from configdrive.service.haproxy import MetadataProxy
from configdrive.spec import instance_from_mapping, load_spec
from configdrive.timeline import ConsoleWatcher, build_timeline
from configdrive.virt.domain import USER_NET, GuestFwd

__all__ = [
    "MODES",
    "SERVICE_HOPS",
    "BootResult",
    "MetadataChain",
    "Mode",
    "boot_once",
    "run_benchmark",
    "run_storm",
    "summarize",
]

END = "CONFIGDRIVE-CHECK end"
Progress = Callable[[str], None]


class Mode(enum.StrEnum):
    DRIVE_TUNED = "drive-tuned"
    SERVICE = "service"
    SERVICE_LOADED = "service-loaded"
    STOCK = "stock"
    DRIVE_POLLINATE = "drive-pollinate"
    FLOOR = "floor"


@dataclass(frozen=True)
class ModeSpec:
    mode: Mode
    variant: ImageVariant
    config_drive: bool
    description: str
    hops: tuple[HopSpec, ...] | None = None  # the chain to the metadata service, if any

    @property
    def service(self) -> bool:
        return self.hops is not None


# The nova-like path of the service mode, guest-facing first. The first hop is the real haproxy
# (Debian's package, neutron's metadata-proxy template: configdrive.service.haproxy), one
# process per guest network; behind it, hops with a per-request latency each, for a healthy,
# lightly loaded cloud, not the overloaded ones of the field reports:
# - neutron-metadata-agent, on haproxy's unix socket: one RPC round trip to neutron-server for
#   the port (IP, network) per request (its port cache is off by default), ~10 ms over the
#   message bus;
# - nova-api-metadata: a WSGI request answered from its 15 s metadata cache after the first
#   (which reads the API and cell databases and asks neutron for security groups), ~20 ms;
# then ``configdrive serve`` in proxy mode, which checks the agent's HMAC signature.
SERVICE_HOPS = (
    HopSpec("agent", 0.010),
    HopSpec("forward", 0.020),
)
SERVICE_HOP_NAMES = ("neutron-metadata-agent", "nova-api-metadata")
# The same path under load, as in the field reports of boot storms (requests taking seconds,
# cloud-init's 2-3 s timeouts failing): the agent waits on a busy neutron-server (100 ms), nova
# misses its cache and reads the databases and neutron (400 ms): half a second per request.
LOADED_HOPS = (
    HopSpec("agent", 0.100),
    HopSpec("forward", 0.400),
)


MODES: dict[Mode, ModeSpec] = {
    Mode.DRIVE_TUNED: ModeSpec(Mode.DRIVE_TUNED, ImageVariant.TUNED, True,
                               "config drive ISO; datasource_list [ConfigDrive, Ec2, NoCloud], "
                               "Ec2 timeout 2/max_wait 5; pollinate masked"),
    Mode.SERVICE: ModeSpec(Mode.SERVICE, ImageVariant.SERVICE, False,
                           "no drive; datasource_list [OpenStack, None] (its default timeouts) "
                           "against configdrive serve behind haproxy (real), metadata agent "
                           "(10 ms) and nova-api-metadata (20 ms); pollinate masked",
                           hops=SERVICE_HOPS),
    Mode.SERVICE_LOADED: ModeSpec(Mode.SERVICE_LOADED, ImageVariant.SERVICE, False,
                                  "as service, but a loaded path: agent 100 ms, "
                                  "nova-api-metadata 400 ms", hops=LOADED_HOPS),
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
    "found network data from": "metadata obtained",
}
STAGES = (
    "kernel", "initramfs", "systemd", "cloud-init local", "metadata obtained",
    "cloud-init network", "cloud-init config", "cloud-init final", "cloud-init finished", "ready",
)  # fmt: skip
SPEC = {"name": "benchguest", "meta": {"role": "webservers", "essential": "false"}}
MAC = "fa:16:3e:00:00:42"


def _network(address: str) -> list[dict[str, Any]]:
    """One DHCP port on the restricted user network; QEMU's DHCP leases ``address``."""
    return [{"mac": MAC, "subnets": [{"cidr": str(USER_NET), "ips": [address], "dhcp": True}]}]


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
    metadata_requests: int | None = None  # requests to the metadata service (service modes)

    def row(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "run": self.run,
            "accelerator": self.accelerator,
            "datasource": self.datasource,
            "pollinate_ran": self.pollinate_ran,
            "metadata_requests": self.metadata_requests,
        }
        for name in STAGES:
            data[name] = self.stages.get(name)
        return data


def _image_dir(variant: ImageVariant) -> Path:
    return build_image(variant).qcow2.parent


class MetadataChain:
    """``configdrive serve`` (proxy mode, SQLite store) behind ``hops`` and, in front, one real
    haproxy per guest (:class:`~configdrive.service.haproxy.MetadataProxy`, neutron's
    template) on this process's loopback; each guest is registered and gets its own haproxy."""

    SECRET_BYTES = 32

    def __init__(self, work: Path, hops: Sequence[HopSpec] = SERVICE_HOPS) -> None:
        import secrets

        from configdrive.service.config import ServiceConfig
        from configdrive.service.proxychain import start_chain
        from configdrive.service.testing import ServerThread

        if any(h.kind == "haproxy" for h in hops):
            raise ConfigDriveError("internal: the chain's haproxy is the real one, not a hop")
        secret = secrets.token_hex(self.SECRET_BYTES)
        tag = secrets.token_hex(4)
        self.work = work
        store = work / f"metadata-{tag}.db"
        self.socket = work / f"agent-{tag}.sock"  # the agent's unix socket, as in neutron
        admin_token = secrets.token_hex(16)
        config = ServiceConfig(
            listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0",
            admin_token=admin_token, store=f"sqlite:///{store}",
            access_log="off", mode="proxy", shared_secret=secret,
            proxy_addresses=("127.0.0.1/32",),
        )  # fmt: skip
        self.server = ServerThread(config)
        self.proxies: dict[str, MetadataProxy] = {}
        try:
            self.chain = self.server.call(
                start_chain(
                    self.server.running.addresses[0],
                    list(hops),
                    registry=self.server.running.service.registry,
                    secret=secret,
                    unix_socket=self.socket,
                )
            )
        except BaseException:
            self.server.stop()
            raise
        self.admin = AdminClient(f"http://127.0.0.1:{self.server.admin_port}", admin_token)

    def attach(self, instance: Instance) -> GuestFwd:
        """Register ``instance`` and start its network's haproxy; the guestfwd rule that takes
        the guest's 169.254.169.254:80 there."""
        address = instance.first_fixed_ipv4
        if address is None:
            raise ConfigDriveError("a service-mode guest needs a fixed IPv4 address")
        self.admin.register(instance)
        self.chain.counts[address] = 0
        proxy = MetadataProxy(self.work, self.socket, address)
        self.proxies[instance.uuid] = proxy
        return GuestFwd("169.254.169.254", 80, proxy.host, proxy.port)

    def detach(self, instance: Instance) -> None:
        """Unregister ``instance`` and stop its haproxy (its address may serve the next)."""
        proxy = self.proxies.pop(instance.uuid, None)
        if proxy is not None:
            proxy.stop()
        self.admin.unregister(instance.uuid)

    def requests_from(self, instance: Instance) -> int:
        """How many requests the guest made (as the agent counted them)."""
        return self.chain.counts.get(instance.first_fixed_ipv4 or "", 0)

    def close(self) -> None:
        try:
            for proxy in self.proxies.values():
                proxy.stop()
            self.proxies.clear()
            self.server.call(self.chain.stop())
        finally:
            self.server.stop()

    def __enter__(self) -> MetadataChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Guest:
    """One guest of a run: prepared, then started, then read."""

    spec: ModeSpec
    run: int
    request: BootRequest
    console: Path
    record: InstanceRecord | None = None
    watcher: ConsoleWatcher | None = None
    chain: MetadataChain | None = None


def _prepare(
    spec: ModeSpec,
    run: int,
    host: HostConfig,
    *,
    seed_spec: Path,
    network: bool,
    chain: MetadataChain | None,
    address: str = "169.254.2.15",
    name: str = "benchguest",
) -> _Guest:
    data, base = load_spec(seed_spec)
    if network:
        data.pop("files", None)  # the seed's /etc/network/interfaces would replace Debian's
        data.update(SPEC, name=name, networks=_network(address))
    data["uuid"] = str(uuid.uuid4())
    instance = instance_from_mapping(data, base=base)
    forwards: tuple[GuestFwd, ...] = ()
    if spec.service:
        if chain is None or not network:
            raise ConfigDriveError("the service mode needs the metadata chain and a NIC")
        forwards = (chain.attach(instance),)
    request = BootRequest(
        instance,
        find_flavor("1"),
        load_image(_image_dir(spec.variant)),
        config_drive=spec.config_drive,
        extra_cmdline="configdrive.poweroff=1",
        # a NIC on the restricted user network; only the service mode has a forward
        user_net=forwards if network else None,
    )
    console = host.instances_path / instance.uuid / "console.log"
    return _Guest(spec, run, request, console, chain=chain if spec.service else None)


def _start(guest: _Guest, host: HostConfig, t0: float | None = None) -> None:
    def hook(message: str) -> None:
        if message.startswith("starting "):  # the backend is about to start QEMU
            guest.watcher = ConsoleWatcher(guest.console, t0)

    guest.record = boot(guest.request, host, progress=hook)
    if guest.watcher is None:
        raise ConfigDriveError("internal: boot did not announce the start of the guest")


def _finish(guest: _Guest, host: HostConfig, timeout: float) -> BootResult:
    assert guest.watcher is not None and guest.record is not None
    watcher, spec, run = guest.watcher, guest.spec, guest.run
    requests = None
    try:
        if not watcher.wait_for(END, timeout):
            raise ConfigDriveError(f"{spec.mode} run {run}: no check report within {timeout:.0f}s")
        report = parse_check_report("\n".join(line for _, line in watcher.lines))
    finally:
        delete(host, guest.request.instance.uuid)
        if guest.chain is not None:
            requests = guest.chain.requests_from(guest.request.instance)
            guest.chain.detach(guest.request.instance)
    timeline = build_timeline(watcher.lines, report)
    events: dict[str, float] = {}
    for label, seconds in timeline.events.items():
        for needle, name in EVENTS.items():
            if needle in label and name not in events:
                if name == "metadata obtained" and "DataSourceNone" in label:
                    continue  # cloud-init's fallback: no metadata was obtained
                events[name] = seconds
    stages = dict(timeline.stages)
    stages["metadata obtained"] = events.get("metadata obtained")
    stages["ready"] = stages.get("check report")  # the check unit starts after cloud-final
    return BootResult(
        mode=str(spec.mode), run=run, accelerator=guest.record.accel,
        datasource=str(report.get("datasource") or ""),
        pollinate_ran=str(report.get("pollinate_ran") or ""),
        stages=stages, events=events, metadata_requests=requests,
        guest={k: report.get(k) for k in ("uptime", "uptime_finished", "system_state", "blame",
                                          "critical_chain", "cloud_init_analyze")},
    )  # fmt: skip


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
    chain: MetadataChain | None = None,
) -> BootResult:
    """Boot one guest in ``spec``'s mode and read its timeline.

    ``network``: a NIC on the restricted user network (the benchmark's default, the same for
    every mode); False: no NIC, and the seed example exactly as given (its injected files too).
    ``chain``: the metadata service the ``service`` mode's guest reaches.
    """
    say = progress or (lambda _m: None)
    host = (host or HostConfig()).with_(instances_path=work / "instances")
    guest = _prepare(spec, run, host, seed_spec=seed_spec, network=network, chain=chain)
    _start(guest, host)
    result = _finish(guest, host, timeout)
    source = result.datasource or "no datasource"
    say(f"{spec.mode} run {run}: ready at {result.stages['ready']} s ({source})")
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
    # cloud-init's own wait for metadata: from its local stage starting to the datasource found
    waits: dict[str, dict[str, float] | None] = {}
    for mode in modes:
        waits[mode] = _stat([_wait(r) for r in results if r.mode == mode])
    floor = table.get(Mode.FLOOR, {}).get("ready")
    ratios = {}
    for mode in modes:
        ready = table[mode].get("ready")
        if floor and ready:
            ratios[mode] = round(ready["median"] / floor["median"], 2)
    # how much longer the network path takes than the drive, stage by stage
    versus: dict[str, dict[str, float]] = {}
    drive = table.get(Mode.DRIVE_TUNED)
    for mode in modes:
        if drive is None or not MODES[Mode(mode)].service:
            continue
        versus[mode] = {}
        for stage in ("metadata obtained", "cloud-init finished", "ready"):
            ours, theirs = drive.get(stage), table[mode].get(stage)
            if ours and theirs:
                versus[mode][stage] = round(theirs["median"] / ours["median"], 2)
    return {"stages": table, "metadata_wait": waits, "ratio_to_floor_ready": ratios,
            "service_vs_drive": versus}  # fmt: skip


def _wait(result: BootResult) -> float | None:
    obtained, local = result.stages.get("metadata obtained"), result.stages.get("cloud-init local")
    return None if obtained is None or local is None else obtained - local


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
    legend_below(ax, offset=-0.22, ncol=5)
    return save_figure(fig, out / "boot-stages.png")


def legend_below(ax: Any, *, offset: float, ncol: int) -> None:
    """The axes' legend under it, one entry per label (bars repeat their labels)."""
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=False))
    ax.legend(seen.values(), seen.keys(), loc="upper center", bbox_to_anchor=(0.5, offset),
              fontsize=7, ncol=ncol, frameon=False)  # fmt: skip


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write as PNG and close ``fig``; the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _setup(modes: Sequence[Mode], say: Progress, prefix: str) -> tuple[HostConfig, Path]:
    """The host every benchmark boots on (plain QEMU, ISO drive) with a fresh work directory
    for its instances; every image is built (or found cached) first: not part of any boot."""
    for mode in modes:
        say(f"image for {mode}: {_image_dir(MODES[mode].variant)}")
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(work, 0o755)  # the hypervisor's user reads the instances below it
    host = HostConfig(backend=BackendKind.QEMU, accelerator=Accelerator.AUTO,
                      config_drive_format=DriveFormat.ISO9660,
                      instances_path=work / "instances")  # fmt: skip
    return host, work


def _head(title: str, modes: Sequence[Mode], accelerator: str, started: float) -> dict[str, Any]:
    """What every result document opens with: the modes, the machine and the versions."""
    return {
        "benchmark": title,
        "modes": {str(m): MODES[m].description for m in modes},
        "service_hops": {str(m): _hops_doc(MODES[m].hops) for m in modes if MODES[m].hops},
        "accelerator": accelerator,
        "machine": machine_info(),
        "versions": _versions(),
        "wall_seconds": round(time.monotonic() - started, 1),
    }


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
    host, work = _setup(modes, say, "configdrive-bench-")
    results: list[BootResult] = []
    started = time.monotonic()
    chains: dict[Mode, MetadataChain] = {}
    try:
        for mode in modes:
            hops = MODES[mode].hops
            if hops is not None:
                chains[mode] = MetadataChain(work, hops)
        for run in range(1, runs + 1):
            for mode in modes:
                say(f"boot {len(results) + 1}/{runs * len(modes)}: {mode} run {run}")
                result = boot_once(
                    MODES[mode], run, work, seed_spec=seed_spec, progress=say, host=host,
                    chain=chains.get(mode),
                )  # fmt: skip
                results.append(result)
    finally:
        for chain in chains.values():
            chain.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)
    accelerator = ",".join(sorted({r.accelerator for r in results}))
    document: dict[str, Any] = {
        **_head("first boot by injection mode", modes, accelerator, started),
        "runs_per_mode": runs,
        "interleaved": True,
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


def _storm_once(
    spec: ModeSpec,
    k: int,
    host: HostConfig,
    *,
    seed_spec: Path,
    chain: MetadataChain | None,
    timeout: float,
    say: Progress,
) -> list[BootResult]:
    """Start ``k`` guests of one mode back to back; every time counts from the first start."""
    from concurrent.futures import ThreadPoolExecutor

    guests = [
        _prepare(spec, i + 1, host, seed_spec=seed_spec, network=True, chain=chain,
                 address=f"169.254.3.{i + 1}", name=f"storm{i + 1}")
        for i in range(k)
    ]  # fmt: skip
    t0 = time.monotonic()
    started: list[_Guest] = []
    try:
        for guest in guests:
            _start(guest, host, t0)
            started.append(guest)
        say(f"storm {spec.mode}: {k} guests started in {time.monotonic() - t0:.1f} s")
        with ThreadPoolExecutor(max_workers=k) as pool:
            futures = [pool.submit(_finish, guest, host, timeout) for guest in started]
            results = [f.result() for f in futures]
    except BaseException:
        for guest in started:  # _finish deletes what it waited for; this catches the rest
            with contextlib.suppress(ConfigDriveError):
                delete(host, guest.request.instance.uuid)
        raise
    last = max(r.stages["ready"] or 0.0 for r in results)
    say(f"storm {spec.mode}: all {k} ready at {last:.1f} s")
    return results


def run_storm(
    modes: Sequence[Mode],
    k: int,
    out: Path,
    *,
    seed_spec: Path,
    progress: Progress | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """A boot storm per mode: ``k`` guests started at once, each mode in turn; write
    storm.json and storm.png into ``out``; return the result document."""
    if k < 1:
        raise ConfigDriveError("a storm needs at least one guest")
    say = progress or (lambda _m: None)
    host, work = _setup(modes, say, "configdrive-storm-")
    storms: dict[str, list[BootResult]] = {}
    started = time.monotonic()
    try:
        for mode in modes:
            spec = MODES[mode]
            chain = MetadataChain(work, spec.hops) if spec.hops is not None else None
            try:
                storms[str(mode)] = _storm_once(spec, k, host, seed_spec=seed_spec, chain=chain,
                                                timeout=timeout, say=say)  # fmt: skip
            finally:
                if chain is not None:
                    chain.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {}
    for name, results in storms.items():
        summary[name] = {
            stage: _stat([r.stages.get(stage) for r in results])
            for stage in ("metadata obtained", "cloud-init finished", "ready")
        }
        ready = [t for r in results if (t := r.stages.get("ready")) is not None]
        summary[name]["all ready"] = max(ready) if ready else None
    accelerator = ",".join(sorted({r.accelerator for rs in storms.values() for r in rs}))
    document: dict[str, Any] = {
        **_head("boot storm: K guests started at once, per mode", modes, accelerator, started),
        "k": k,
        "summary": summary,
        "boots": {mode: [vars(r) for r in results] for mode, results in storms.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "storm.json").write_text(json.dumps(document, indent=2) + "\n")
    _plot_storm(storms, out, accelerator, k)
    return document


def _plot_storm(storms: dict[str, list[BootResult]], out: Path, accelerator: str, k: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = plt.get_cmap("tab10")
    for i, (mode, results) in enumerate(storms.items()):
        for stage, style in (("metadata obtained", ":"), ("ready", "-")):
            times = sorted(t for r in results if (t := r.stages.get(stage)) is not None)
            if not times:
                continue
            xs = [0.0, *times]
            ys = list(range(len(times) + 1))
            ax.step(xs, ys, where="post", linestyle=style, color=colors(i),
                    label=f"{mode}: {stage}")  # fmt: skip
    ax.set_xlabel(f"seconds since the first guest was started (accelerator: {accelerator})")
    ax.set_ylabel("guests")
    ax.set_yticks(range(k + 1))
    ax.set_title(f"Boot storm: {k} guests started at once")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, out / "storm.png")


def _hops_doc(hops: Sequence[HopSpec] | None) -> list[dict[str, Any]]:
    from configdrive.service.haproxy import haproxy_version

    first = {
        "hop": "haproxy",
        "kind": "real",
        "version": haproxy_version(),
        "config": "neutron's metadata-proxy template (configdrive.service.haproxy)",
    }
    return [first] + [
        {"hop": name, "kind": hop.kind, "latency_ms": round(hop.latency * 1000, 3)}
        for name, hop in zip(SERVICE_HOP_NAMES, hops or (), strict=True)
    ]


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
