"""A real guest through its lifecycle: `update` while it runs and while it is stopped, each
``--instance-id`` rule as the guest sees it, and a reboot through a metadata outage.

One guest (Debian 12's cloud image, and Debian 13's, ``fast`` variant: ``datasource_list: [ConfigDrive, Ec2,
NoCloud]``), plain QEMU, booted with a config drive and one restricted NIC whose only way out
is 169.254.169.254:80, forwarded to a server here that answers every request with 503. Four
boots, each checked over SSH:

1. first boot: user data makes the user ``ops`` and counts ``runcmd`` runs; the test then
   deletes ``ops``, as an operator would;
2. ``update --instance-id keep`` while it runs (new meta data, new user data with a
   ``bootcmd``): the CD-ROM's medium is swapped, and the guest mounts the new drive at once.
   The guest then reboots (``-no-reboot``: its QEMU ends) and ``configdrive start`` boots it
   with the metadata service still answering 503. Its host keys, instance-id and users are
   as they were (``ops`` stays deleted, ``runcmd`` ran once), the service was never asked,
   and cloud-init read the new drive (tune-image's reread-drive step dropped its cached
   copy): the new meta data, and the every-boot ``bootcmd`` ran;
3. ``stop``, ``update --instance-id keep`` on the stopped guest, ``start``: the new meta data
   again, with no warning about cloud-init's cache (the image rereads the drive), and still
   no first boot;
4. ``stop``, ``update --instance-id new``, ``start``: cloud-init sees a new instance; runcmd
   runs again, ``ops`` is made again and the host keys are new, as update warned.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configdrive.login import Login, wait_for_login
from configdrive.virt.qemu import pid_alive, read_pid

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = float(os.environ.get("CONFIGDRIVE_VM_TIMEOUT", "1200"))
USER_DATA = """#cloud-config
users:
  - default
  - {name: ops, shell: /bin/bash}
runcmd:
  - [sh, -c, 'date +%s >> /var/tmp/runcmd-runs']
"""
# the same, plus an every-boot module
USER_DATA_2 = USER_DATA + "bootcmd:\n  - [sh, -c, 'date +%s >> /var/tmp/bootcmd-runs']\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


class Outage(http.server.BaseHTTPRequestHandler):
    """The metadata service, down: 503 to everything, counted."""

    requests = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_GET  # noqa: N815 (IMDSv2's token request)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def outage() -> Iterator[tuple[int, type[Outage]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Outage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], Outage
    server.shutdown()
    server.server_close()


@pytest.fixture
def work() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="configdrive-update-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def sh(login: Login, command: str) -> str:
    # ssh hands the remote shell its arguments joined by spaces: give it the command whole
    proc = login.run([command], timeout=120)
    assert proc.returncode == 0, (command, proc.stderr)
    return proc.stdout.strip()


def state(login: Login) -> dict[str, Any]:
    """What the first-boot rule is about, read in the guest once cloud-init is done."""
    sh(login, "cloud-init status --wait >/dev/null; true")
    return {
        "host_key": sh(login, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1],
        "instance_id": sh(login, "cat /var/lib/cloud/data/instance-id"),
        "runcmd_runs": int(sh(login, "wc -l < /var/tmp/runcmd-runs")),
        "ops": login.run(["id", "ops"]).returncode == 0,
        "bootcmd_runs": int(sh(login, "cat /var/tmp/bootcmd-runs 2>/dev/null | wc -l")),
        "role": sh(login, "sudo cloud-init query ds.meta_data.meta.role"),
        "datasource": sh(login, "sudo cat /run/cloud-init/status.json"),
    }


def powered_off(directory: Path, pid: int) -> None:
    deadline = time.monotonic() + 300
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the guest did not power off"
        time.sleep(1)
    assert read_pid(directory / "qemu.pid") is None or not pid_alive(pid)


@pytest.mark.parametrize(
    ("os_", "cloud_init"), [("debian-12", "22.4 (Debian 12)"), ("debian-13", "25.1 (Debian 13)")]
)
def test_update_keep_and_new_and_a_reboot_through_a_metadata_outage(
    cloud_image: Any, work: Path, outage: tuple[int, type[Outage]], os_: str, cloud_init: str
) -> None:
    image = cloud_image(os_, "fast")
    port, counter = outage
    host = work / "host.conf"
    host.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\nforce_config_drive = true\n"
        "[configdrive]\nbackend = qemu\n"
    )
    hc = ("--host-config", str(host))
    identity = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)],
                   check=True)  # fmt: skip
    (work / "ud1").write_text(USER_DATA)
    (work / "ud2").write_text(USER_DATA_2)
    proc = cli("boot", "life", "--image", str(image.manifest("bios")), *hc,
               "--wait", "cloud-init", "--identity", str(identity),
               "--user-data", str(work / "ud1"), "--meta", "role=web",
               "--guestfwd", f"169.254.169.254:80=127.0.0.1:{port}",
               "--timeout", str(BOOT_TIMEOUT), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    directory = Path(record["path"])
    login = Login(port=record["ssh_port"], identity=identity, user="debian")

    def restart() -> None:
        started = cli("start", "life", *hc)
        assert started.returncode == 0, started.stderr
        wait_for_login(login, BOOT_TIMEOUT)

    try:
        first = state(login)
        assert first["instance_id"] == record["uuid"] and first["runcmd_runs"] == 1
        assert first["ops"] and first["bootcmd_runs"] == 0 and first["role"] == "web"
        assert "DataSourceConfigDrive" in first["datasource"]
        sh(login, "sudo userdel ops")

        # 2. keep, running: the medium is swapped, the guest reads the new drive now
        upd = cli("update", "life", "--meta", "role=db", "--user-data", str(work / "ud2"),
                  *hc, "--json")  # fmt: skip
        assert upd.returncode == 0, upd.stderr
        doc = json.loads(upd.stdout)
        assert doc["applied"].startswith("swapped the running guest's CD-ROM medium"), doc
        assert "user data's bootcmd" in doc["every_boot"][cloud_init]
        seen = sh(login, "sudo mount -o ro /dev/sr0 /mnt && "
                  "cat /mnt/openstack/latest/meta_data.json; sudo umount /mnt")  # fmt: skip
        assert json.loads(seen)["meta"]["role"] == "db"
        # the guest reboots (its QEMU ends: -no-reboot) and starts again; the only metadata
        # service it could reach still answers 503
        pid = read_pid(directory / "qemu.pid")
        assert pid is not None
        login.run(["sudo", "systemctl", "reboot"], timeout=60)
        powered_off(directory, pid)
        restart()
        second = state(login)
        print(f"states: {first} {second}", file=sys.stderr)
        assert {k: second[k] for k in ("host_key", "instance_id", "runcmd_runs", "ops")} == {
            "host_key": first["host_key"], "instance_id": record["uuid"], "runcmd_runs": 1,
            "ops": False,
        }  # fmt: skip
        # the reread-drive step dropped cloud-init's cached copy: the new drive was read, and
        # the every-boot bootcmd of the new user data ran
        assert second["bootcmd_runs"] == 1 and second["role"] == "db", second
        assert "DataSourceConfigDrive" in second["datasource"]
        assert counter.requests == 0  # with its drive, the guest never needed the service

        # 3. keep, stopped: the guest reads the drive at its next boot
        stopped = cli("stop", "life", *hc)
        assert stopped.returncode == 0, stopped.stderr
        upd = cli("update", "life", "--meta", "role=cache", *hc)
        assert upd.returncode == 0 and "the guest is stopped" in upd.stdout, upd.stderr
        assert "cached copy" not in upd.stderr  # the image rereads its drive
        restart()
        third = state(login)
        assert third["role"] == "cache" and third["bootcmd_runs"] == 2, third
        assert third["instance_id"] == record["uuid"] and third["runcmd_runs"] == 1
        assert third["host_key"] == first["host_key"] and not third["ops"]
        assert counter.requests == 0

        # 4. new: every per-instance module runs again, host keys included
        assert cli("stop", "life", *hc).returncode == 0
        upd = cli("update", "life", "--instance-id", "new", *hc, "--json")
        assert upd.returncode == 0, upd.stderr
        new_uuid = json.loads(upd.stdout)["uuid"]
        assert new_uuid != record["uuid"]
        assert "regenerates its SSH host keys" in " ".join(json.loads(upd.stdout)["warnings"])
        restart()
        fourth = state(login)
        assert fourth["instance_id"] == new_uuid and fourth["runcmd_runs"] == 2
        assert fourth["ops"] and fourth["host_key"] != first["host_key"]
        assert fourth["bootcmd_runs"] == 3
        assert fourth["role"] == "cache"
    finally:
        deleted = cli("delete", "life", *hc)
    assert deleted.returncode == 0, deleted.stderr


def _open_drives(uuid: str) -> list[str]:
    """The config drives the guest's QEMU process holds open (``/proc/PID/fd`` targets; a
    replaced file shows as ``… (deleted)``)."""
    found = subprocess.run(["pgrep", "-f", "--", f"-uuid {uuid}"], capture_output=True, text=True)
    pids = found.stdout.split()
    assert len(pids) == 1, found
    fds = Path("/proc") / pids[0] / "fd"
    targets = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "disk.config" in target:
            targets.append(target)
    return targets


@pytest.mark.parametrize("backend", ["qemu", "libvirt"])
def test_update_swaps_a_running_guests_medium(
    backend: str, tuned_image: Any, libvirtd: str, work: Path
) -> None:
    """Host side, on both backends: after update, the running QEMU holds the new drive file,
    not the replaced one. (The guest's side is the test above.)"""
    host = work / "host.conf"
    host.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\nforce_config_drive = true\n"
        f"[configdrive]\nbackend = {backend}\n"
    )
    hc = ("--host-config", str(host))
    proc = cli("boot", "swap", "--image", str(tuned_image.directory), *hc, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    drive = Path(record["path"]) / "disk.config"
    try:
        assert _open_drives(record["uuid"]) == [str(drive)]
        upd = cli("update", "swap", "--meta", "role=db", *hc)
        assert upd.returncode == 0, upd.stderr
        assert "swapped the running guest's CD-ROM medium" in upd.stdout, upd.stdout
        assert _open_drives(record["uuid"]) == [str(drive)]  # the new file, not "(deleted)"
        assert b'"role": "db"' in drive.read_bytes()
    finally:
        deleted = cli("delete", "swap", *hc)
    assert deleted.returncode == 0, deleted.stderr
