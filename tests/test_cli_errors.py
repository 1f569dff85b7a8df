"""Bad-input corpus: every case exits 2 (usage/bad input) with one `error: <field>: <rule>` line
on stderr, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = (EXAMPLES / "seed" / "mykey.pub").read_text().strip()


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent))
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args],
        cwd=cwd, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


# (id, files to create {name: bytes}, argv after "build", expected "error: <field>: …" prefix)
CASES: list[tuple[str, dict[str, bytes], list[str], str]] = [
    ("no-name", {}, [], "error: name: is required"),
    ("bad-uuid", {}, ["vm", "--uuid", "not-a-uuid"], "error: uuid: 'not-a-uuid' is not a UUID"),
    ("uuid-short", {}, ["vm", "--uuid", "1234"], "error: uuid:"),
    (
        "user-data-missing",
        {},
        ["vm", "--user-data", "nope.txt"],
        "error: user_data_file: cannot read",
    ),
    (
        "user-data-too-big",
        {"ud": b"x" * 49152},
        ["vm", "--user-data", "ud"],
        "error: user_data: is 49152 bytes",
    ),
    (
        "user-data-is-dir",
        {"d/x": b""},
        ["vm", "--user-data", "d"],
        "error: user_data_file: cannot read",
    ),
    (
        "six-files",
        {f"f{i}": b"x" for i in range(6)},
        ["vm"] + [a for i in range(6) for a in ("--file", f"/f{i}=f{i}")],
        "error: files: 6 injected files, over the quota of 5",
    ),
    (
        "file-too-big",
        {"big": b"x" * 10241},
        ["vm", "--file", "/big=big"],
        "error: files[/big]: content is 10241 bytes, over 10240",
    ),
    (
        "file-src-missing",
        {},
        ["vm", "--file", "/etc/x=missing"],
        "error: files[/etc/x]: cannot read",
    ),
    (
        "file-no-equals",
        {},
        ["vm", "--file", "/etc/x"],
        "error: file: '/etc/x' is not of the form KEY=VALUE",
    ),
    (
        "file-path-escape",
        {"a": b"x"},
        ["vm", "--file", "../../etc/passwd=a"],
        "error: files[../../etc/passwd]: guest path must not escape",
    ),
    ("file-path-long", {"a": b"x"}, ["vm", "--file", "/" + "p" * 255 + "=a"], "error: files[/ppp"),
    (
        "meta-no-equals",
        {},
        ["vm", "--meta", "role"],
        "error: meta: 'role' is not of the form KEY=VALUE",
    ),
    ("meta-key-long", {}, ["vm", "--meta", "k" * 256 + "=v"], "error: meta.kkkk"),
    (
        "meta-value-long",
        {},
        ["vm", "--meta", "k=" + "v" * 256],
        "error: meta.k: value is longer than 255 characters",
    ),
    ("key-file-missing", {}, ["vm", "--key-file", "nokey.pub"], "error: key_file: cannot read"),
    (
        "key-name-only",
        {},
        ["vm", "--key-name", "mykey"],
        "error: key_name: no public key for 'mykey'",
    ),
    (
        "key-garbage",
        {"k.pub": b"hello world"},
        ["vm", "--key-file", "k.pub"],
        "error: keys[0].public_key: unknown OpenSSH key type 'hello'",
    ),
    (
        "key-bad-base64",
        {"k.pub": b"ssh-rsa !!!notbase64"},
        ["vm", "--key-file", "k.pub"],
        "error: keys[0].public_key: key data is not valid base64",
    ),
    (
        "key-type-mismatch",
        {"k.pub": KEY.replace("ssh-ed25519", "ssh-rsa", 1).encode()},
        ["vm", "--key-file", "k.pub"],
        "error: keys[0].public_key: key data does not encode a ssh-rsa key",
    ),
    (
        "key-one-word",
        {"k.pub": b"ssh-ed25519"},
        ["vm", "--key-file", "k.pub"],
        "error: keys[0].public_key: is not an OpenSSH public key",
    ),
    (
        "nic-bad-mac",
        {},
        ["vm", "--nic", "mac=zz:00:00:00:00:00,v4-cidr=10.0.0.0/24,v4-fixed-ip=10.0.0.5"],
        "error: networks[0].mac: 'zz:00:00:00:00:00' is not a MAC address",
    ),
    (
        "nic-bad-cidr",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/33,v4-fixed-ip=10.0.0.5"],
        "error: networks[0].subnets[0].cidr: '10.0.0.0/33' is not a network CIDR",
    ),
    (
        "nic-cidr-host-bits",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.5/24,v4-fixed-ip=10.0.0.5"],
        "error: networks[0].subnets[0].cidr:",
    ),
    (
        "nic-bad-ip",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/24,v4-fixed-ip=10.0.0.300"],
        "error: networks[0].subnets[0].ips[0]: '10.0.0.300' is not an IP address",
    ),
    (
        "nic-ip-outside",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/24,v4-fixed-ip=10.0.1.5"],
        "error: networks[0].subnets[0].ips[0]: 10.0.1.5 is outside 10.0.0.0/24",
    ),
    (
        "nic-ip-wrong-family",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/24,v4-fixed-ip=fd00::1"],
        "error: networks[0].subnets[0].ips[0]: fd00::1 is not an IPv4 address",
    ),
    (
        "nic-bad-gateway",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/24,v4-fixed-ip=10.0.0.5,v4-gateway=gw"],
        "error: networks[0].subnets[0].gateway: 'gw' is not an IP address",
    ),
    (
        "nic-bad-dns",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/24,v4-fixed-ip=10.0.0.5,dns=8.8.8"],
        "error: networks[0].subnets[0].dns[0]: '8.8.8' is not an IP address",
    ),
    ("nic-unknown-key", {}, ["vm", "--nic", "colour=red"], "error: nic[0]: unknown key 'colour'"),
    (
        "nic-ip-without-cidr",
        {},
        ["vm", "--nic", "v4-fixed-ip=10.0.0.5"],
        "error: nic[0]: v4-fixed-ip needs v4-cidr",
    ),
    (
        "nic-bad-mtu",
        {},
        ["vm", "--nic", "mtu=9,v4-cidr=10.0.0.0/24"],
        "error: networks[0].mtu: must be at least 68, got 9",
    ),
    (
        "nic-bad-v6-mode",
        {},
        ["vm", "--nic", "v6-cidr=fd00::/64,v6-mode=magic"],
        "error: networks[0].subnets[0].ipv6_address_mode: must be one of",
    ),
    (
        "nic-bad-port-id",
        {},
        ["vm", "--nic", "port-id=xyz,v4-cidr=10.0.0.0/24"],
        "error: networks[0].id: 'xyz' is not a UUID",
    ),
    ("spec-missing", {}, ["--spec", "nope.yaml"], "error: spec: cannot read"),
    (
        "spec-bad-yaml",
        {"s.yaml": b"name: [unclosed\n"},
        ["--spec", "s.yaml"],
        "error: spec: s.yaml is not valid YAML at line",
    ),
    (
        "spec-not-mapping",
        {"s.yaml": b"- a\n- b\n"},
        ["--spec", "s.yaml"],
        "error: spec: s.yaml must hold a mapping of fields, not a list",
    ),
    (
        "spec-unknown-field",
        {"s.yaml": b"name: x\ncolour: red\n"},
        ["--spec", "s.yaml"],
        "error: colour: unknown field",
    ),
    (
        "spec-launch-index",
        {"s.yaml": b"name: x\nlaunch_index: -1\n"},
        ["--spec", "s.yaml"],
        "error: launch_index: must be at least 0, got -1",
    ),
    (
        "spec-meta-list",
        {"s.yaml": b"name: x\nmeta: [a]\n"},
        ["--spec", "s.yaml"],
        "error: meta: must be a mapping, not a list",
    ),
    (
        "spec-two-keys",
        {
            "s.yaml": (
                f"name: x\nkeys:\n - {{name: a, public_key: '{KEY}'}}\n"
                f" - {{name: b, public_key: '{KEY}'}}\n"
            ).encode()
        },
        ["--spec", "s.yaml"],
        "error: keys: nova takes one key pair per instance",
    ),
    (
        "spec-bad-hostname",
        {},
        ["vm", "--hostname", "bad_host!"],
        "error: hostname: 'bad_host!' is not a hostname nova accepts",
    ),
    (
        "vendor-data-not-json",
        {"v.json": b"{nope"},
        ["vm", "--vendor-data", "v.json"],
        "error: vendor_data: v.json is not valid JSON",
    ),
    (
        "vendor-data-list",
        {"v.json": b"[1]"},
        ["vm", "--vendor-data", "v.json"],
        "error: vendor_data: must be a mapping, not a list",
    ),
    (
        "network-file-bad-yaml",
        {"n.yaml": b"- mac: [\n"},
        ["vm", "--network-file", "n.yaml"],
        "error: spec: n.yaml is not valid YAML",
    ),
    (
        "bad-size",
        {},
        ["vm", "--format", "vfat", "--size", "huge"],
        "error: size: 'huge' is not fit, nova or a byte count",
    ),
    ("size-on-iso", {}, ["vm", "--size", "nova"], "error: --size applies to VFAT formats only"),
    (
        "bad-limit",
        {},
        ["vm", "--limit", "files=lots"],
        "error: limit.files: 'lots' is not a non-negative integer",
    ),
    ("unknown-limit", {}, ["vm", "--limit", "colours=3"], "error: limit: unknown limit 'colours'"),
    (
        "nocloud-files-vs-vendor",
        {"v.json": b'{"cloud-init": "#cloud-config\\n"}', "a": b"x"},
        ["vm", "--format", "nocloud", "--vendor-data", "v.json", "--file", "/a=a"],
        "error: files: a NoCloud seed carries injected files",
    ),
    (
        "image-id-bad",
        {},
        ["vm", "--image-id", "my-image"],
        "error: image_id: 'my-image' is not a UUID",
    ),
    (
        "boot-volume-bad",
        {},
        ["vm", "--boot-volume", "vol"],
        "error: boot_volume: 'vol' is not a UUID",
    ),
    (
        "block-device-key",
        {},
        ["vm", "--block-device", "source=volume,colour=red"],
        "error: block_device[0]: unknown key 'colour'",
    ),
    (
        "block-device-kind",
        {},
        ["vm", "--block-device", "source=image,dest=local"],
        "error: block_device[0]: source=image,dest=local is not a block device",
    ),
    (
        "block-device-root",
        {},
        ["vm", "--block-device", "source=volume,dest=volume,device=vda"],
        "error: block_devices[0].device: /dev/vda is already the root",
    ),
    ("swap-size", {}, ["vm", "--swap", "big"], "error: swap: 'big' is not a size in MiB"),
    (
        "two-swaps",
        {},
        ["vm", "--swap", "512", "--block-device", "source=blank,dest=local,format=swap"],
        "error: block_devices: nova gives a server at most one swap device",
    ),
    (
        "ephemeral-size",
        {},
        ["vm", "--ephemeral", "format=ext4"],
        "error: ephemeral[0]: needs size=GiB",
    ),
    (
        "host-zone",
        {},
        ["vm", "--default-availability-zone", "a:b"],
        "error: default_availability_zone: 'a:b' is not a zone name",
    ),
    (
        "zone",
        {},
        ["vm", "--availability-zone", " az"],
        "error: availability_zone: ' az' is not a zone name",
    ),
    ("name-control", {}, ["a\tb"], "error: name: 'a\\tb' is not a name nova accepts"),
    (
        "nic-no-ip",
        {},
        ["vm", "--nic", "v4-cidr=10.0.0.0/24"],
        "error: networks[0].subnets[0].ips: needs the port's address",
    ),
    (
        "nic-bridge",
        {},
        ["vm", "--nic", "vif-type=bridge"],
        "error: networks[0].vif_type: nova 34 refuses Linux bridge VIFs",
    ),
]


@pytest.mark.parametrize(
    ("files", "argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(tmp_path: Path, files: dict[str, bytes], argv: list[str], expected: str) -> None:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = run_cli(
        ["build", *argv, "-o", "out/disk.config"] if "-o" not in argv else ["build", *argv],
        tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(expected), lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_existing_drive_is_kept_without_force(tmp_path: Path) -> None:
    target = tmp_path / "disk.config"
    target.write_bytes(b"precious")
    proc = run_cli(["build", "vm", "-o", str(target)], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: {target} already exists; a drive is not overwritten "
        "(hint: pass --force to replace it)"
    )
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.config"]
    proc = run_cli(["build", "vm", "-o", str(target), "--force"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes()[32769:32774] == b"CD001"
    assert target.stat().st_mode & 0o777 == 0o600


def test_missing_output_directory(tmp_path: Path) -> None:
    proc = run_cli(["build", "vm", "-o", str(tmp_path / "no" / "disk.config")], tmp_path)
    assert proc.returncode == 1
    assert "directory" in proc.stderr and "does not exist" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_inspect_bad_inputs(tmp_path: Path) -> None:
    proc = run_cli(["inspect", "nothere.img"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: drive: nothere.img does not exist"
    )
    (tmp_path / "junk.img").write_bytes(b"\0" * 70000)
    proc = run_cli(["inspect", "junk.img"], tmp_path)
    assert proc.returncode == 1 and "neither an ISO9660 nor a VFAT image" in proc.stderr
    proc = run_cli(["build"], tmp_path)
    assert proc.returncode == 2
