"""Real guests: `configdrive boot` starts the project's Debian 12 guest with the seed example's
drive, through libvirt and through plain QEMU, and the guest itself reports (on its serial
console, from a check unit that runs after cloud-init) what it applied.

The guests are started together (at most CONFIGDRIVE_VM_PARALLEL at a time, default 2: one per
core, since the other pytest worker boots guests too) by a session fixture, since each boot under
TCG takes minutes; the tests then read each guest's own report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from configdrive.builder import inspect as inspect_drive
from configdrive.guest.image import GuestImage, parse_check_report

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED = EXAMPLES / "seed"
BOOT_TIMEOUT = float(os.environ.get("CONFIGDRIVE_VM_TIMEOUT", "1200"))
PARALLEL = int(os.environ.get("CONFIGDRIVE_VM_PARALLEL", "2"))
END = "CONFIGDRIVE-CHECK end"


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"configdrive {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
    return proc


@dataclass
class Guest:
    case: str
    backend: str
    machine: str
    fmt: str
    image: Path
    work: Path
    extra: tuple[str, ...] = ()
    uuid: str = ""
    spec: Path = SEED / "instance.yaml"
    record: dict[str, Any] = field(default_factory=dict)
    console: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def host_conf(self) -> Path:
        return self.work / "host.conf"

    def host_args(self) -> tuple[str, ...]:
        return ("--host-config", str(self.host_conf))

    def start(self) -> None:
        self.work.mkdir(parents=True)
        os.chmod(self.work, 0o755)
        self.host_conf.write_text(
            f"[DEFAULT]\ninstances_path = {self.work / 'instances'}\n"
            f"config_drive_format = {self.fmt}\n"
            f"[libvirt]\nvirt_type = auto\nhw_machine_type = {self.machine}\n"
            f"[configdrive]\nbackend = {self.backend}\n"
        )
        self.started = time.monotonic()
        self.uuid = str(uuid.uuid4())  # the seed's own uuid once per libvirt connection
        proc = cli("boot", "myinstance", "--spec", str(self.spec), "--uuid", self.uuid,
                   "--image", str(self.image),
                   "--flavor", "1", "--config-drive", "true", "--append", "configdrive.poweroff=1",
                   *self.host_args(), "--json", *self.extra)  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"{self.case}: boot failed: {proc.stderr}", pytrace=False)
        self.record = json.loads(proc.stdout)

    @property
    def console_path(self) -> Path:
        return Path(self.record["path"]) / "console.log"

    def finished(self) -> bool:
        text = self.console_path.read_text(errors="replace") if self.console_path.exists() else ""
        if END in text:
            self.console = text
            self.seconds = time.monotonic() - self.started
            self.report = parse_check_report(text)
            return True
        if time.monotonic() - self.started > BOOT_TIMEOUT:
            self.console = text
            return True
        return False


def run_all(guests: list[Guest]) -> None:
    pending = list(guests)
    running: list[Guest] = []
    while pending or running:
        while pending and len(running) < PARALLEL:
            guest = pending.pop(0)
            guest.start()
            running.append(guest)
        running = [g for g in running if not g.finished()]
        time.sleep(1)


# case -> (backend, machine, drive format); each backend boots pc and q35, and each drive
# format once (libvirt's vfat disk XML is golden-tested in test_libvirt_define)
CASES = {
    "libvirt-pc-iso9660": ("libvirt", "pc", "iso9660"),
    "libvirt-q35-iso9660": ("libvirt", "q35", "iso9660"),
    "qemu-q35-iso9660": ("qemu", "q35", "iso9660"),
    "qemu-q35-vfat": ("qemu", "q35", "vfat"),
    "qemu-pc-nocloud": ("qemu", "pc", "nocloud"),
}


@pytest.fixture(scope="session")
def vm_root() -> Iterator[Path]:
    # under /var/tmp, world-traversable: libvirt runs QEMU as libvirt-qemu
    root = Path(tempfile.mkdtemp(prefix="configdrive-vm-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def guests(
    tuned_image: GuestImage, untuned_image: GuestImage, libvirtd: str, vm_root: Path
) -> Iterator[dict[str, Guest]]:
    image_dir = tuned_image.qcow2.parent
    booted = {
        case: Guest(case, backend, machine, fmt, image_dir, vm_root / case)
        for case, (backend, machine, fmt) in CASES.items()
    }
    # the stock image, for contrast with tune-image's result
    booted["qemu-pc-untuned"] = Guest(
        "qemu-pc-untuned", "qemu", "pc", "iso9660", untuned_image.qcow2.parent,
        vm_root / "qemu-pc-untuned",
    )  # fmt: skip
    try:
        run_all(list(booted.values()))
        summary = {c: round(g.seconds, 1) for c, g in booted.items()}
        print(f"\nboot seconds until the check report: {summary}", file=sys.stderr)
        yield booted
    finally:
        for guest in booted.values():
            if guest.record:
                cli("delete", "myinstance", *guest.host_args())


def assert_seed_applied(guest: Guest, datasource: str) -> None:
    report = guest.report
    assert report.get("complete"), (
        f"{guest.case}: no complete report; console tail:\n{guest.console[-3000:]}"
    )
    assert str(report["datasource"]).startswith(datasource), report["datasource"]
    assert report["hostname"] == "myinstance"
    key = (SEED / "mykey.pub").read_text().strip()
    assert key in (report["user_authorized_keys"] or ""), report.get("user_authorized_keys")
    assert key in (report["authorized_keys"] or "")
    assert "configdrive-runcmd-ok myinstance" in (report["runcmd"] or "")
    assert report["meta"] == {"role": "webservers", "essential": "false"}
    assert report["cloud_init_result"] == []
    assert report["dmi_product"] == "OpenStack Nova"  # nova's sysinfo reached the guest


@pytest.mark.parametrize("case", [c for c in CASES if not c.endswith("nocloud")])
def test_guest_applies_the_seed_example(guests: dict[str, Guest], case: str) -> None:
    guest = guests[case]
    assert_seed_applied(guest, "DataSourceConfigDrive")
    assert guest.report["files"] == {
        "/etc/network/interfaces": (SEED / "instance-interfaces").read_bytes(),
        "/known_hosts": (SEED / "known_hosts").read_bytes(),
    }
    source = "/dev/sr0" if guest.fmt == "iso9660" else "/dev/vdb"
    assert f"source={source}" in guest.report["datasource"], guest.report["datasource"]
    assert guest.record["backend"] == guest.backend and guest.record["machine"] == guest.machine
    assert guest.record["accelerator"] in ("tcg", "kvm")
    directory = Path(guest.record["path"])
    assert sorted(p.name for p in directory.iterdir() if p.name != "qmp.sock" and p.name != "qemu.pid") == [
        "console.log", "disk", "disk.config", "instance.json", "libvirt.xml",
        "spec.json"]  # fmt: skip
    assert directory.name == guest.uuid == guest.record["uuid"]
    assert f"<name>instance-{guest.uuid}</name>" in (directory / "libvirt.xml").read_text()


def test_nocloud_drive_boots_with_nocloud(guests: dict[str, Guest]) -> None:
    guest = guests["qemu-pc-nocloud"]
    assert_seed_applied(guest, "DataSourceNoCloud")
    # NoCloud has no personality files: configdrive carries the spec's as vendor-data
    # write_files, which cloud-init must have written byte for byte, with the mode its
    # ConfigDrive datasource gives injected files (0660), each path absolute
    assert guest.report["written"] == {
        "/etc/network/interfaces": (0o660, (SEED / "instance-interfaces").read_bytes()),
        "/known_hosts": (0o660, (SEED / "known_hosts").read_bytes()),
    }
    assert guest.report["files"] == {}  # a NoCloud seed's meta-data names no files


def test_untuned_image_runs_pollinate_and_has_no_datasource_list(guests: dict[str, Guest]) -> None:
    """The stock image: what tune-image changes (test_tune_image_on_the_untuned_image)."""
    guest = guests["qemu-pc-untuned"]
    assert_seed_applied(guest, "DataSourceConfigDrive")  # ds-identify still finds the drive
    assert guest.report["pollinate_ran"] == "yes", guest.report["pollinate"]
    assert "UnitFileState=enabled" in guest.report["pollinate"]
    assert "datasource_list" not in (guest.report.get("cloud_cfg_d") or "")


def test_list_and_duplicate_name(guests: dict[str, Guest]) -> None:
    guest = guests["qemu-q35-iso9660"]
    listed = json.loads(cli("list", *guest.host_args(), "--json", check=True).stdout)
    assert [(r["name"], r["backend"], r["config_drive"]) for r in listed] == [
        ("myinstance", "qemu", "iso9660")
    ]
    directory = Path(listed[0]["directory"])
    assert directory.parent == guest.work / "instances" and (directory / "instance.json").is_file()
    assert listed[0]["drive"] == str(directory / "disk.config")
    assert inspect_drive(directory / "disk.config").ok  # the drive the guest booted with
    before = sorted((guest.work / "instances").iterdir())
    proc = cli("boot", "myinstance", "--image", str(guest.image), "--uuid", str(uuid.uuid4()),
               *guest.host_args())  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        "error: name: an instance named 'myinstance' already exists"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted((guest.work / "instances").iterdir()) == before
    console = cli("console", "myinstance", *guest.host_args(), check=True).stdout
    assert END in console


def test_delete_removes_domain_and_directory(
    tuned_image: GuestImage, libvirtd: str, vm_root: Path
) -> None:
    guest = Guest(
        "delete", "libvirt", "pc", "iso9660", tuned_image.qcow2.parent, vm_root / "delete"
    )
    guest.start()
    directory = Path(guest.record["path"])
    state = subprocess.run(["virsh", "-c", libvirtd, "domstate", guest.record["uuid"]],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert state.stdout.strip() == "running", state.stderr
    proc = cli("delete", "myinstance", *guest.host_args())
    assert proc.returncode == 0, proc.stderr
    assert not directory.exists()
    gone = subprocess.run(["virsh", "-c", libvirtd, "domstate", guest.record["uuid"]],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert gone.returncode != 0  # the domain is undefined
    assert json.loads(cli("list", *guest.host_args(), "--json").stdout) == []


def test_tune_image_on_the_untuned_image(
    untuned_image: GuestImage, libvirtd: str, vm_root: Path
) -> None:
    work = vm_root / "tuned-copy"
    work.mkdir()
    os.chmod(work, 0o755)
    src = untuned_image.qcow2.parent
    manifest = json.loads((src / "manifest.json").read_text())
    for name in ("qcow2", "kernel", "initrd", "kernel_generic", "initrd_generic"):
        shutil.copyfile(src / manifest[name], work / manifest[name])
    manifest["key"] = "tuned-copy-" + uuid.uuid4().hex[:8]
    (work / "manifest.json").write_text(json.dumps(manifest))
    image = work / manifest["qcow2"]
    dry = cli("tune-image", str(image), "--dry-run", "--json", check=True)
    assert json.loads(dry.stdout)["changes"], dry.stdout
    first = cli("tune-image", str(image), "--json", check=True)
    assert json.loads(first.stdout)["changed"] is True
    second = cli("tune-image", str(image), "--json", check=True)
    assert json.loads(second.stdout) == {
        **json.loads(second.stdout),
        "changed": False,
        "changes": [],
    }
    guest = Guest("tuned-copy", "qemu", "pc", "iso9660", work, vm_root / "tuned-copy-guest")
    run_all([guest])
    try:
        assert_seed_applied(guest, "DataSourceConfigDrive")
        assert guest.report["pollinate_ran"] == "no", guest.report.get("pollinate")
        assert "masked" in guest.report["pollinate"], guest.report["pollinate"]
        assert "99_configdrive.cfg" in (guest.report.get("cloud_cfg_d") or ""), guest.report.keys()
        assert "datasource_list: [ ConfigDrive, Ec2, NoCloud ]" in (
            guest.report.get("cloud_cfg_d") or ""
        )
    finally:
        cli("delete", "myinstance", *guest.host_args())


def test_boot_bad_input_leaves_nothing(tuned_image: GuestImage, vm_root: Path) -> None:
    work = vm_root / "bad"
    work.mkdir()
    conf = work / "host.conf"
    conf.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\n[configdrive]\nbackend = qemu\n"
    )
    image = str(tuned_image.qcow2.parent)
    cases = [
        (["--image", str(work / "nope")], 2, "error: image: no image at"),
        (["--image", image, "--flavor", "m9.huge"], 2, "error: flavor: unknown flavor 'm9.huge'"),
        (
            ["--image", image, "--config-drive", "maybe"],
            2,
            "error: config_drive: must be true or false",
        ),
    ]
    for extra, code, message in cases:
        proc = cli("boot", "vm1", *extra, "--host-config", str(conf))
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1, (
            proc.stderr
        )
        assert not (work / "instances").exists() or not any((work / "instances").iterdir())
    # no accelerator: KVM demanded; on this machine kind /dev/kvm fails a real boot
    from configdrive.host import Accelerator
    from configdrive.virt.accel import probe_accelerator

    probe = probe_accelerator(Accelerator.AUTO, kernel=tuned_image.kernel)
    conf.write_text(conf.read_text() + "[libvirt]\nvirt_type = kvm\n")
    proc = cli("boot", "vm1", "--image", image, "--host-config", str(conf))
    if probe.accel == "tcg":
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("error: accelerator: KVM requested but")
        assert not any((work / "instances").iterdir()) if (work / "instances").exists() else True
    else:  # a host where KVM proved itself: the same request boots
        assert proc.returncode == 0, proc.stderr
        cli("delete", "vm1", "--host-config", str(conf), check=True)


def test_restricted_network_reaches_only_the_forwarded_loopback_service(
    tuned_image: GuestImage, vm_root: Path
) -> None:
    """A guest with a NIC reaches the loopback service its guestfwd rule names — every
    connection, not just the first — and nothing else: not the internet, not the host."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            body = f"guestfwd-ok {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = vm_root / "netcheck-files"
    work.mkdir()
    user_data = work / "user-data"
    user_data.write_text(
        "#cloud-config\nruncmd:\n"
        "  - [sh, -c, 'for n in first second; do echo \"$n=$(curl -s -m 20 "
        'http://169.254.169.254/latest/$n)"; done > /var/tmp/runcmd.out 2>&1; '
        'curl -s -m 5 http://1.1.1.1/ >/dev/null 2>&1; echo "internet_rc=$?" >> /var/tmp/runcmd.out; '
        'curl -s -m 5 http://169.254.0.2:22/ >/dev/null 2>&1; echo "host_rc=$?" >> /var/tmp/runcmd.out\']\n'
    )
    # the seed's injected /etc/network/interfaces would replace Debian's (and its
    # `source interfaces.d/*`), so this guest gets the port alone
    spec = work / "netcheck.yaml"
    spec.write_text("name: myinstance\n")
    port = server.server_address[1]
    guest = Guest("netcheck", "qemu", "pc", "iso9660", tuned_image.qcow2.parent, vm_root / "netcheck", spec=spec,
                  extra=("--user-data", str(user_data), "--guestfwd", f"169.254.169.254:80=127.0.0.1:{port}",
                         # the port, as nova's network_data.json gives it: DHCP from QEMU's user network
                         "--nic", "mac=fa:16:3e:00:00:99,v4-cidr=169.254.0.0/16,v4-fixed-ip=169.254.0.15,dhcp=true"))  # fmt: skip
    try:
        run_all([guest])
        report = guest.report
        assert report.get("complete"), guest.console[-3000:]
        out = report["runcmd"] or ""
        assert "first=guestfwd-ok /latest/first" in out, out
        assert "second=guestfwd-ok /latest/second" in out, out  # a second connection works too
        assert seen == ["/latest/first", "/latest/second"]
        internet = int(out.split("internet_rc=")[1].split()[0])
        host = int(out.split("host_rc=")[1].split()[0])
        assert internet != 0 and host != 0, out  # restrict=on: nothing else is reachable
    finally:
        server.shutdown()
        server.server_close()
        if guest.record:
            cli("delete", "myinstance", *guest.host_args())
