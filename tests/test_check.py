"""`configdrive check`: the pre-flight rules, on our drives and on third-party ones
(genisoimage with nova's argv), with cloud-init's own schema code as the judge (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_inspect import genisoimage, seed_tree

from configdrive.lifecycle import SchemaJudge, check_drive

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples/seed/instance.yaml"
NIC = "fa:16:3e:00:00:01"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def build(tmp: Path, *flags: str) -> Path:
    out = tmp / "disk.config"
    proc = cli("build", "--spec", str(SEED), "-o", str(out), "--force", *flags)
    assert proc.returncode == 0, proc.stderr
    return out


def judge_of(cloudinit: Any) -> SchemaJudge:
    return SchemaJudge(sys.executable, str(cloudinit.dist_packages))


def everywhere(tree: dict[str, bytes], name: str, data: bytes) -> dict[str, bytes]:
    """``tree`` with ``openstack/<every version>/name`` set to ``data``, as a platform's
    builder writes it (cloud-init reads the newest version it knows)."""
    versions = {p.split("/")[1] for p in tree if p.endswith("/meta_data.json")}
    return {**tree, **{f"openstack/{v}/{name}": data for v in versions}}


def rules(report: Any, level: str = "problem") -> list[tuple[str, str]]:
    return [(f.rule, f.message) for f in report.findings if f.level == level]


def test_the_seed_drive_is_clean_for_every_cloud_init(tmp_path: Path, cloudinit: Any) -> None:
    drive = build(tmp_path)
    proc = cli("check", str(drive), "--cloud-init", str(cloudinit.dist_packages), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["findings"] == []
    assert report["schema"] == f"cloud-init {cloudinit.version}"


def test_schema_errors_in_user_and_vendor_data(tmp_path: Path, cloudinit: Any) -> None:
    user = tmp_path / "ud"
    user.write_text("#cloud-config\nruncmd: 5\nwrite_files: [{content: x}]\n")
    vendor = tmp_path / "vendor.json"
    vendor.write_text(json.dumps({"cloud-init": "#cloud-config\npackages: yes\n"}))
    drive = build(tmp_path, "--user-data", str(user), "--vendor-data", str(vendor))
    report = check_drive(drive, judge=judge_of(cloudinit))
    found = rules(report)
    assert not report.ok
    messages = [m for rule, m in found if rule == "schema"]
    assert any(m.startswith("user data: runcmd") for m in messages), messages
    assert any(m.startswith("user data: write_files") for m in messages), messages
    assert any(m.startswith("vendor data (vendor_data.json): packages") for m in messages)
    proc = cli("check", str(drive), "--cloud-init", str(cloudinit.root))  # a package root too
    assert proc.returncode == 1 and "problem: schema: user data: runcmd" in proc.stdout


def test_without_cloud_init_the_schema_is_said_to_be_unchecked(tmp_path: Path) -> None:
    report = check_drive(build(tmp_path), judge=None)
    assert report.ok and report.schema.startswith("not checked: no cloud-init on this host")


@pytest.mark.tools
def test_an_empty_network_description_and_unmatched_macs(tmp_path: Path, sh: Any) -> None:
    tree = everywhere(seed_tree(), "network_data.json", b"{}")  # a platform's empty file
    report = check_drive(genisoimage(tree, tmp_path, sh))
    assert any(r == "network" and "empty" in m for r, m in rules(report))
    links = {
        "links": [{"id": "tap1", "type": "phy", "ethernet_mac_address": NIC, "mtu": 1500}],
        "networks": [{"id": "n1", "link": "tap1", "type": "ipv4_dhcp", "network_id": "x"}],
        "services": [],
    }
    tree = everywhere(tree, "network_data.json", json.dumps(links).encode())
    (tmp_path / "b").mkdir()
    drive = genisoimage(tree, tmp_path / "b", sh)
    assert check_drive(drive, macs=[NIC.upper()]).ok  # MACs compare case-insensitively
    found = rules(check_drive(drive, macs=["fa:16:3e:00:00:02"]))
    assert ("network", f"the drive describes {NIC}, which no NIC of the guest has") in found
    assert (
        "network",
        "NIC fa:16:3e:00:00:02 is described by no link: it stays unconfigured",
    ) in found
    proc = cli("check", str(drive), "--mac", "fa:16:3e:00:00:02")
    assert proc.returncode == 1


@pytest.mark.tools
def test_sizes_against_nova_and_platform_limits(tmp_path: Path, sh: Any) -> None:
    tree = everywhere(seed_tree(), "user_data", b"#!/bin/sh\n" + b"#" * (20 * 1024))
    report = check_drive(genisoimage(tree, tmp_path, sh))
    assert report.ok  # over EC2's and KubeVirt's limits: warnings, nova takes it
    warnings = [m for r, m in rules(report, "warning") if r == "size"]
    assert any("over EC2's 16 KiB" in m for m in warnings)
    assert any("over KubeVirt inline's 2 KiB" in m for m in warnings)
    tree = everywhere(tree, "user_data", b"#!/bin/sh\n" + b"#" * 60_000)
    (tmp_path / "big").mkdir()
    found = rules(check_drive(genisoimage(tree, tmp_path / "big", sh)))
    assert [r for r, m in found] == ["size"] and "nova allows 65535" in found[0][1]


@pytest.mark.tools
def test_a_nocloud_seed_names_the_missing_file(tmp_path: Path, sh: Any) -> None:
    seed = genisoimage({"meta-data": b"instance-id: i-1\n"}, tmp_path, sh, label="cidata")
    proc = cli("check", str(seed))
    assert proc.returncode == 1
    assert "problem: drive: user-data is missing (NoCloud needs both meta-data and user-data)" in (
        proc.stdout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/etc/hostname"], "error: /etc/hostname is neither an ISO9660 nor a VFAT image"),
        (["missing.iso"], "error: cannot read missing.iso"),
        (["x", "--mac", "nope"], "error: --mac: 'nope' is not a MAC address"),
        (["x", "--cloud-init", "/tmp"], "error: /tmp holds no cloudinit package"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(args: list[str], message: str) -> None:
    proc = cli("check", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr


# ---------------------------------------------------------------------------------------------
# --patch: Ironic's re-mastering of a third-party drive

PORT = f"mac={NIC},v4-fixed-ip=10.0.0.5,v4-cidr=10.0.0.0/24,v4-gateway=10.0.0.1"


def _liberty_and_later(tree: dict[str, bytes]) -> dict[str, bytes]:
    versions = {p.split("/")[1] for p in tree if p.endswith("/meta_data.json")}
    return {
        **tree,
        **{f"openstack/{v}/network_data.json": b"{}" for v in versions if v >= "2015-10-15"},
    }


@pytest.mark.tools
@pytest.mark.parametrize("kind", ["iso9660", "vfat"])
def test_patch_remasters_a_third_party_drive(tmp_path: Path, sh: Any, kind: str) -> None:
    from conftest import extract_image
    from test_inspect import mkfs_vfat

    tree = _liberty_and_later(seed_tree())
    drive = genisoimage(tree, tmp_path, sh) if kind == "iso9660" else mkfs_vfat(tree, tmp_path, sh)
    assert cli("check", str(drive)).returncode == 1  # the empty network description
    out = tmp_path / "patched"
    proc = cli("check", str(drive), "--patch", "--nic", PORT, "-o", str(out), "--mac", NIC)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # independent readers: blkid for the label, xorriso/mcopy for every file
    label = sh(["blkid", "-p", "-s", "LABEL", "-o", "value", str(out)]).stdout.decode().strip()
    before = sh(["blkid", "-p", "-s", "LABEL", "-o", "value", str(drive)]).stdout.decode().strip()
    assert label == before
    old, new = extract_image(drive, tmp_path / "old", sh), extract_image(out, tmp_path / "new", sh)
    old_files = {
        p.relative_to(old).as_posix(): p.read_bytes() for p in old.rglob("*") if p.is_file()
    }
    new_files = {
        p.relative_to(new).as_posix(): p.read_bytes() for p in new.rglob("*") if p.is_file()
    }
    assert set(old_files) == set(new_files)
    rewritten = {p for p in old_files if p.endswith("/network_data.json")}
    assert rewritten and all(old_files[p] == new_files[p] for p in set(old_files) - rewritten)
    for path in rewritten:
        network = json.loads(new_files[path])
        assert [link["ethernet_mac_address"] for link in network["links"]] == [NIC]
        assert network["networks"][0]["ip_address"] == "10.0.0.5"


@pytest.mark.tools
def test_patch_refusals_leave_nothing(tmp_path: Path, sh: Any) -> None:
    seed = genisoimage({"meta-data": b"a: 1\n", "user-data": b""}, tmp_path, sh, label="cidata")
    out = tmp_path / "out"
    cases = [
        ([str(seed), "--patch", "--nic", PORT, "-o", str(out)], "is labelled 'cidata'"),
        ([str(seed), "--patch", "-o", str(out)], "--patch, --nic and -o/--output go together"),
        ([str(seed), "--nic", "none", "--patch", "-o", str(out)], "--nic none describes no port"),
    ]
    for args, message in cases:
        proc = cli("check", *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nova.iso", "staging"]
    # an existing OUT is kept without --force
    drive = genisoimage(_liberty_and_later(seed_tree()), tmp_path / "x", sh)
    out.write_bytes(b"keep")
    proc = cli("check", str(drive), "--patch", "--nic", PORT, "-o", str(out))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert out.read_bytes() == b"keep" and not list(tmp_path.glob(".out*"))
