"""`configdrive update` on a stopped instance, `start`/`stop` refusals, and update's bad input.

The instance is made as ``boot`` leaves one whose guest has powered off: its directory with
``instance.json``, ``spec.json`` (compute.write_instance_spec) and ``disk.config`` (the
builder's drive for the spec), under a host config with the plain QEMU backend. The running
guest's medium swap, the guest's view of each ``--instance-id`` rule and the reboot through a
metadata outage are the vm tier's (tests/test_update_guest.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from configdrive.builder import render_for
from configdrive.compute import InstanceRecord, load_image, write_instance_spec
from configdrive.drive import DriveFormat, read_drive, write_drive
from configdrive.guest.image import ImageVariant
from configdrive.guest.image import recipe as image_recipe
from configdrive.spec import instance_from_mapping
from configdrive.virt.domain import GuestSpec

UUID = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"
SPEC: dict[str, Any] = {
    "name": "upd",
    "uuid": UUID,
    "admin_pass": "s3cret-Pass",
    "meta": {"role": "web", "tier": "gold"},
    "user_data": "#cloud-config\nruncmd:\n  - [touch, /var/tmp/first]\n",
    "keys": [
        {
            "name": "k1",
            "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1uZGVub3RhcmVhbGtleWF0YWxsMDAwMDA= k1",
        }
    ],
    "files": {"/etc/injected": {"content": "injected at boot\n"}},
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path: its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_instance(
    root: Path, spec: dict[str, Any], *, drive: bool = True, rereads: bool | None = None
) -> Path:
    """An instance directory as boot leaves it once the guest has powered off."""
    inst = instance_from_mapping(spec)
    directory = root / "instances" / inst.uuid
    directory.mkdir(parents=True)
    guest = GuestSpec(
        name=inst.name, uuid=inst.uuid, vcpus=1, ram_mb=512, machine="pc", accel="tcg",
        disk=directory / "disk", console_log=directory / "console.log",
        config_drive=directory / "disk.config" if drive else None,
        qmp_socket=directory / "qmp.sock", pidfile=directory / "qemu.pid",
    )  # fmt: skip
    data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(guest).items()}
    record = InstanceRecord(
        name=inst.name, uuid=inst.uuid, path=directory, backend="qemu", accel="tcg",
        accel_reason="test", machine="pc", flavor="m1.tiny",
        config_drive="iso9660" if drive else None, created="2026-12-03T00:00:00+00:00",
        spec=data, cloud_init="22.4.2-1+deb12u4", rereads_drive=rereads,
    )  # fmt: skip
    (directory / "instance.json").write_text(record.to_json())
    write_instance_spec(directory, inst)
    if drive:
        write_drive(render_for(inst, DriveFormat.ISO9660), directory / "disk.config",
                    DriveFormat.ISO9660)  # fmt: skip
    return directory


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    conf = tmp_path / "host.conf"
    conf.write_text(
        f"[DEFAULT]\ninstances_path = {tmp_path / 'instances'}\n[configdrive]\nbackend = qemu\n"
    )
    yield conf


def meta_data(directory: Path) -> dict[str, Any]:
    files = read_drive(directory / "disk.config").files
    return dict(json.loads(files["openstack/latest/meta_data.json"]))


def test_update_keeps_what_the_change_does_not_touch(tmp_path: Path, host: Path) -> None:
    directory = make_instance(tmp_path, SPEC)
    before = read_drive(directory / "disk.config").files
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nbootcmd:\n  - [touch, /var/tmp/every-boot]\n")
    proc = cli("update", "upd", "--meta", "tier=", "--meta", "zone=b", "--user-data",
               str(user_data), "--host-config", str(host))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    after = read_drive(directory / "disk.config").files
    meta = meta_data(directory)
    assert meta["meta"] == {"role": "web", "zone": "b"}  # tier removed, zone added
    assert meta["uuid"] == UUID and meta["admin_pass"] == SPEC["admin_pass"]
    assert after["openstack/latest/user_data"] == user_data.read_bytes()
    # the injected file and the key pair are as the first boot had them
    assert meta["files"] == json.loads(before["openstack/latest/meta_data.json"])["files"]
    content = [p for p in before if p.startswith("openstack/content/")]
    assert content and all(after[p] == before[p] for p in content)
    assert meta["public_keys"] == {"k1": SPEC["keys"][0]["public_key"]}
    # the stored spec is the new instance, so the next update starts from it
    stored = json.loads((directory / "spec.json").read_text())
    assert stored["meta"] == {"role": "web", "zone": "b"} and stored["uuid"] == UUID
    assert (directory / "spec.json").stat().st_mode & 0o777 == 0o600
    # what changed, per file and key, and what cloud-init 22.4 (the image's) applies again
    assert "openstack/latest/meta_data.json" in proc.stdout and "meta.tier" in proc.stdout
    (again,) = [line for line in proc.stdout.splitlines() if "applies again at boot" in line]
    assert again.startswith("cloud-init 22.4 (Debian 12) applies again at boot: ")
    assert "user data's bootcmd" in again and "the hostname" in again
    assert "25.1" not in proc.stdout
    assert "the guest is stopped: it reads the new drive when it starts" in proc.stdout


def test_update_dry_run_changes_nothing(tmp_path: Path, host: Path) -> None:
    directory = make_instance(tmp_path, SPEC)
    was = snapshot(directory)
    proc = cli("update", "upd", "--meta", "role=db", "--dry-run", "--json",
               "--host-config", str(host))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] and doc["changed"] and doc["applied"] is None
    assert snapshot(directory) == was
    changed = {f["path"] for f in doc["diff"]["files"]}
    assert "openstack/latest/meta_data.json" in changed


def test_update_with_a_new_instance_id_warns_about_host_keys(tmp_path: Path, host: Path) -> None:
    directory = make_instance(tmp_path, SPEC)
    proc = cli("update", "upd", "--instance-id", "new", "--host-config", str(host))
    assert proc.returncode == 0, proc.stderr
    meta = meta_data(directory)
    assert meta["uuid"] != UUID and meta["admin_pass"] == SPEC["admin_pass"]
    assert "regenerates its SSH host keys" in proc.stderr
    assert "applies again at boot" not in proc.stdout
    # the instance itself (its directory, domain and listing) keeps its uuid
    listed = json.loads(cli("list", "--json", "--host-config", str(host)).stdout)
    assert [i["uuid"] for i in listed] == [UUID]


@pytest.mark.parametrize("rereads", [None, False, True])
def test_keep_warns_of_cloud_inits_cached_drive_unless_the_image_rereads_it(
    tmp_path: Path, host: Path, rereads: bool | None
) -> None:
    """Unknown images and untuned ones restore cloud-init's cached copy of a config-2 drive;
    an image with tune-image's reread-drive step reads the new drive at its next boot."""
    make_instance(tmp_path, SPEC, rereads=rereads)
    proc = cli("update", "upd", "--meta", "role=db", "--host-config", str(host))
    assert proc.returncode == 0, proc.stderr
    assert ("restores its cached copy" in proc.stderr) == (rereads is not True), proc.stderr


def test_update_without_a_change_writes_nothing(tmp_path: Path, host: Path) -> None:
    directory = make_instance(tmp_path, SPEC)
    was = snapshot(directory)
    proc = cli("update", "upd", "--meta", "role=web", "--host-config", str(host))
    assert proc.returncode == 0, proc.stderr
    assert "no change" in proc.stdout
    assert snapshot(directory) == was


@pytest.mark.parametrize(
    ("args", "setup", "message"),
    [
        (["update", "nosuch", "--meta", "a=b"], "drive", "error: instance: no instance named"),
        (["update", "upd", "--meta", "a=b"], "no-drive", "has no config drive to update"),
        (["update", "upd", "--meta", "a=b"], "no-spec", "has no stored spec"),
        (["update", "upd", "--uuid", UUID], "drive", "error: update starts from"),
        (["update", "upd", "--user-data", "/nonexistent/ud"], "drive", "error: "),
        (["update", "upd", "--instance-id", "maybe"], "drive", "error: "),
        (["start", "nosuch"], "drive", "error: instance: no instance named"),
        (["stop", "upd", "--timeout", "-1"], "drive", "error: timeout: must be 0 or more"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, host: Path, args: list[str], setup: str, message: str
) -> None:
    directory = make_instance(tmp_path, SPEC, drive=setup != "no-drive")
    if setup == "no-spec":
        (directory / "spec.json").unlink()
    was = snapshot(tmp_path)
    proc = cli(*args, "--host-config", str(host))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    # one line: the error (argparse's own refusals come after its usage lines)
    assert message in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert snapshot(tmp_path) == was


def test_stop_of_a_stopped_instance_is_a_no_op(tmp_path: Path, host: Path) -> None:
    directory = make_instance(tmp_path, SPEC)
    was = snapshot(directory)
    proc = cli("stop", "upd", "--host-config", str(host))
    assert proc.returncode == 0, proc.stderr
    assert "upd is not running" in proc.stderr
    assert snapshot(directory) == was


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (ImageVariant.TUNED, True),
        (ImageVariant.FLOOR, False),
        (ImageVariant.UNTUNED, False),
        (None, None),
    ],  # fmt: skip
)
def test_an_images_manifest_says_whether_it_rereads_the_drive(
    tmp_path: Path, variant: ImageVariant | None, expected: bool | None
) -> None:
    """boot records it from the manifest's recipe (what the image was built with); a manifest
    without a recipe says nothing."""
    (tmp_path / "disk.qcow2").write_bytes(b"")
    manifest: dict[str, Any] = {"qcow2": "disk.qcow2"}
    if variant is not None:
        manifest["recipe"] = image_recipe(variant)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert load_image(tmp_path).rereads_drive is expected
