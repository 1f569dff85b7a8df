"""`configdrive inspect`: drives made by genisoimage/mkfs.vfat (as nova makes them) and by us,
good and broken; the verdict must match what cloud-init's reader does with the same drive."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from configdrive import DriveFormat, build, inspect, instance_from_mapping, load_spec, render

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parent.parent
Run = Callable[..., subprocess.CompletedProcess[bytes]]
UUID = "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"


def seed_tree() -> dict[str, bytes]:
    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    return render(instance_from_mapping(data, base=base))


def genisoimage(tree: dict[str, bytes], tmp: Path, sh: Run, label: str = "config-2") -> Path:
    staging = tmp / "staging"
    for path, data in tree.items():
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(data)
    image = tmp / "nova.iso"
    sh(["genisoimage", "-o", str(image), "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
        "-publisher", "OpenStack Nova", "-quiet", "-J", "-r", "-V", label, str(staging)])  # fmt: skip
    return image


def mkfs_vfat(tree: dict[str, bytes], tmp: Path, sh: Run) -> Path:
    staging = tmp / "vstaging"
    for path, data in tree.items():
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(data)
    image = tmp / "nova.vfat"
    sh(["mkfs.vfat", "-n", "config-2", "-C", str(image), "65536"])
    sh(["mcopy", "-s", "-i", str(image), *[str(p) for p in staging.iterdir()], "::/"])
    return image


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


def test_inspect_nova_made_iso_and_vfat(tmp_path: Path, sh: Run) -> None:
    tree = seed_tree()
    for image in (genisoimage(tree, tmp_path, sh), mkfs_vfat(tree, tmp_path, sh)):
        report = inspect(image)
        assert report.ok, report.problems
        assert report.kind == "config-drive" and report.version_used == "2018-08-27"
        assert report.summary["uuid"] == UUID and report.summary["keys"] == ["mykey"]
        assert report.summary["injected_files"] == ["/etc/network/interfaces", "known_hosts"]
        assert set(report.files) == set(tree)
        proc = cli("inspect", str(image))
        assert proc.returncode == 0, proc.stderr
        assert "verdict: OK" in proc.stdout and "openstack/latest/meta_data.json" in proc.stdout


def test_inspect_json_and_cat(tmp_path: Path) -> None:
    image = tmp_path / "disk.config"
    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    build(instance_from_mapping(data, base=base), image)
    proc = cli("inspect", "--json", str(image))
    report = json.loads(proc.stdout)
    assert report["ok"] and report["label"] == "config-2" and report["filesystem"] == "iso9660"
    cat = subprocess.run(
        [sys.executable, "-m", "configdrive", "inspect", str(image), "--cat", "openstack/content/0000"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert cat.stdout == (ROOT / "examples/seed/instance-interfaces").read_bytes()


def _drop_uuid(tree: dict[str, bytes]) -> None:
    for path in list(tree):
        if path.endswith("meta_data.json"):
            md = json.loads(tree[path])
            del md["uuid"]
            tree[path] = json.dumps(md).encode()


def _bad_seed(tree: dict[str, bytes]) -> None:
    md = json.loads(tree["openstack/2018-08-27/meta_data.json"])
    md["random_seed"] = md["random_seed"][:-3]
    tree["openstack/2018-08-27/meta_data.json"] = json.dumps(md).encode()


BROKEN: list[tuple[str, Callable[[dict[str, bytes]], Any], str]] = [
    ("no-uuid", _drop_uuid, "has no 'uuid'"),
    ("bad-seed", _bad_seed, "random_seed is not valid base64"),
    ("missing-content", lambda t: t.pop("openstack/content/0001"), "points at missing openstack/content/0001"),
    ("empty-vendor-data", lambda t: t.update({"openstack/2018-08-27/vendor_data.json": b""}), "is empty"),
    ("bad-network-json", lambda t: t.update({"openstack/2018-08-27/network_data.json": b"{"}), "network_data.json is not valid JSON"),
    ("meta-data-list", lambda t: t.update({"openstack/2018-08-27/meta_data.json": b"[]"}), "must hold a JSON object"),
    ("bad-ec2", lambda t: t.update({"ec2/latest/meta-data.json": b"nope"}), "ec2/latest/meta-data.json is not valid JSON"),
    ("no-known-version", lambda t: [t.pop(p) for p in list(t) if p.startswith("openstack/") and "/content/" not in p], "no openstack/<version>/ directory"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "reason"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_inspect_rejects_what_cloud_init_rejects(
    tmp_path: Path, sh: Run, cloudinit: Any, extract: Callable[[Path, Path], Path],
    mutate: Callable[[dict[str, bytes]], Any], reason: str,
) -> None:  # fmt: skip
    tree = seed_tree()
    mutate(tree)
    image = genisoimage(tree, tmp_path, sh)
    report = inspect(image)
    assert not report.ok and any(reason in p for p in report.problems), report.problems
    proc = cli("inspect", str(image))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and reason in proc.stderr
    # cloud-init agrees: its reader refuses the same drive
    root = extract(image, tmp_path / "x")
    with pytest.raises(Exception) as excinfo:  # noqa: PT011 - any of its NonReadable/BrokenMetadata
        cloudinit.read_config_drive(root)
    assert type(excinfo.value).__name__ in ("BrokenMetadata", "NonReadable")


def test_inspect_wrong_label(tmp_path: Path, sh: Run) -> None:
    image = genisoimage(seed_tree(), tmp_path, sh, label="CDROM")
    report = inspect(image)
    assert not report.ok and "volume label is 'CDROM'" in report.problems[0]


def test_inspect_nocloud_seed(tmp_path: Path, sh: Run) -> None:
    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    inst = instance_from_mapping(data, base=base)
    image = tmp_path / "seed.iso"
    build(inst, image, DriveFormat.NOCLOUD)
    report = inspect(image)
    assert report.ok and report.kind == "nocloud" and report.summary["uuid"] == inst.uuid
    # a cloud-localds-style seed missing user-data is rejected
    staging = tmp_path / "nc"
    staging.mkdir()
    (staging / "meta-data").write_text("instance-id: iid-local01\n")
    bad = tmp_path / "bad.iso"
    sh(
        [
            "genisoimage",
            "-output",
            str(bad),
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            str(staging / "meta-data"),
        ]
    )
    report = inspect(bad)
    assert not report.ok and "user-data is missing" in report.problems[0]


def test_injected_interfaces_with_networks_is_warned_about(tmp_path: Path, sh: Run) -> None:
    """The seed injects /etc/network/interfaces; with a port as well, the guest would ignore
    cloud-init's network config. build warns on stderr, inspect lists it for any maker's drive."""
    seed = (ROOT / "examples/seed/instance.yaml").read_text()
    for name in ("instance-interfaces", "known_hosts", "my-user-data.txt", "mykey.pub"):
        (tmp_path / name).write_bytes((ROOT / "examples/seed" / name).read_bytes())
    plain = tmp_path / "seed.yaml"
    plain.write_text(seed.replace(f"uuid: {UUID}", f"uuid: {UUID}\n"))
    networked = tmp_path / "net.yaml"
    networked.write_text(seed + '\nnetworks:\n  - mac: "fa:16:3e:00:00:01"\n    subnets:\n'
                         '      - {cidr: 10.0.0.0/24, ips: [10.0.0.5], gateway: 10.0.0.1}\n')  # fmt: skip
    cli = [sys.executable, "-m", "configdrive"]
    for spec, warned in ((plain, False), (networked, True)):
        drive = tmp_path / f"{spec.stem}.iso"
        built = subprocess.run([*cli, "build", "--spec", str(spec), "-o", str(drive), "--json"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert built.returncode == 0, built.stderr
        json.loads(built.stdout)  # the warning stays off stdout
        assert ("warning: injects /etc/network/interfaces" in built.stderr) is warned
        # the same verdict from a drive nova's way would make (genisoimage), read back
        data, base = load_spec(spec)
        nova = genisoimage(render(instance_from_mapping(data, base=base)), tmp_path / spec.stem, sh)
        for image in (drive, nova):
            shown = subprocess.run([*cli, "inspect", str(image)], capture_output=True, text=True,
                                   check=False)  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert ("warning: injects /etc/network/interfaces" in shown.stdout) is warned, image
