"""cloud-init 22.4, 25.1 and 26.x (Debian's packages, unpacked) judge every drive we write.

Each drive is extracted by an independent tool (xorriso for ISO9660, mcopy for VFAT), never
by our own reader, and handed to cloud-init's own datasource code; the values it reads back
must equal the spec's. Every test runs once per cloud-init (the ``cloudinit`` fixture).
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from configdrive import DriveFormat, Instance, build, instance_from_mapping, load_spec
from configdrive.drive import NOVA_VFAT_SIZE

pytestmark = [pytest.mark.tools, pytest.mark.cloudinit]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Run = Callable[..., subprocess.CompletedProcess[bytes]]


def example(name: str) -> Instance:
    data, base = load_spec(EXAMPLES / name)
    return instance_from_mapping(data, base=base)


def assert_config_drive_read(result: dict[str, Any], inst: Instance) -> None:
    md = result["metadata"]
    assert md["instance-id"] == inst.uuid
    assert md["local-hostname"] == inst.fqdn
    assert md["name"] == inst.name
    assert md.get("meta", {}) == dict(inst.meta)
    assert md["availability_zone"] == inst.availability_zone
    assert isinstance(md["random_seed"], bytes) and len(md["random_seed"]) == 512
    assert result["userdata"] == (inst.user_data if inst.user_data is not None else "")
    assert result["files"] == {f.path: f.content for f in inst.files}
    if inst.key_pairs:
        assert md["public_keys"] == {k.name: k.public_key for k in inst.key_pairs}
    assert result["version"] == 2
    assert result["ec2-metadata"]["instance-id"] == inst.ec2_id
    assert result["vendordata"] == (dict(inst.vendor_data) if inst.vendor_data else {})


FORMATS = [
    pytest.param(DriveFormat.ISO9660, None, "iso9660", id="iso9660"),
    pytest.param(DriveFormat.VFAT, None, "vfat", id="vfat-fit"),
    pytest.param(DriveFormat.VFAT, NOVA_VFAT_SIZE, "vfat", id="vfat-64MiB"),
]


@pytest.mark.parametrize(("fmt", "size", "fstype"), FORMATS)
@pytest.mark.parametrize("spec", ["seed/instance.yaml", "dual-stack.yaml"])
def test_cloud_init_accepts_config_drive(
    tmp_path: Path,
    cloudinit: Any,
    extract: Callable[[Path, Path], Path],
    sh: Run,
    fmt: DriveFormat,
    size: int | None,
    fstype: str,
    spec: str,
) -> None:
    inst = example(spec)
    image = tmp_path / "disk.config"
    build(inst, image, fmt, vfat_size=size)
    assert image.stat().st_mode & 0o777 == 0o600
    if size is not None:
        assert image.stat().st_size == size
    blkid = sh(["blkid", "-p", "-o", "export", str(image)]).stdout.decode()
    assert f"TYPE={fstype}" in blkid.splitlines()
    assert "LABEL=config-2" in blkid.splitlines()
    root = extract(image, tmp_path / "x")
    result = cloudinit.read_config_drive(root)
    assert_config_drive_read(result, inst)
    if inst.ports:
        net = result["networkdata"]
        assert [link["ethernet_mac_address"] for link in net["links"]] == [
            p.mac for p in inst.ports
        ]
        macs = {p.mac: f"eth{i}" for i, p in enumerate(inst.ports)}
        cfg = cloudinit.convert_net_json(net, known_macs=macs)
        physical = [c for c in cfg["config"] if c["type"] == "physical"]
        assert [c["name"] for c in physical] == ["eth0", "eth1"]
        static = physical[0]["subnets"][0]
        assert static["type"] == "static" and static["address"] == "10.10.0.5"
        assert static["netmask"] == "255.255.255.0"
        assert {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.10.0.1"} in static[
            "routes"
        ]
        assert physical[0]["subnets"][1]["type"] == "static6"
        assert physical[0]["mtu"] == 1450
        assert physical[1]["subnets"][0]["type"] == "dhcp4"
        assert physical[1]["subnets"][1]["type"] == "ipv6_slaac"
        nameservers = [c for c in cfg["config"] if c["type"] == "nameserver"]
        assert [n["address"] for n in nameservers] == ["10.10.0.2", "9.9.9.9", "fd00:10::2"]
    # the tree cloud-init would not read (older/newer versions) is there too, byte-exact
    assert sorted(p.name for p in (root / "openstack").iterdir()) == sorted(
        [
            "2012-08-10",
            "2013-04-04",
            "2013-10-17",
            "2015-10-15",
            "2016-06-30",
            "2016-10-06",
            "2017-02-22",
            "2018-08-27",
            "2020-10-14",
            "2025-04-04",
            "latest",
            "content",
        ][: 12 if inst.files else 11]
    )


@pytest.mark.parametrize("fmt", [DriveFormat.NOCLOUD, DriveFormat.NOCLOUD_VFAT], ids=str)
def test_cloud_init_accepts_nocloud(
    tmp_path: Path, cloudinit: Any, extract: Callable[[Path, Path], Path], sh: Run, fmt: DriveFormat
) -> None:
    data, base = load_spec(EXAMPLES / "dual-stack.yaml")
    data["user_data"] = "#cloud-config\nruncmd: [[true]]\n"
    data["meta"] = {"role": "db"}
    data["keys"] = [{"name": "k", "public_key_file": str(EXAMPLES / "seed" / "mykey.pub")}]
    inst = instance_from_mapping(data, base=base)
    image = tmp_path / "seed.img"
    build(inst, image, fmt)
    blkid = sh(["blkid", "-p", "-o", "export", str(image)]).stdout.decode().splitlines()
    assert "LABEL=cidata" in blkid
    root = extract(image, tmp_path / "x")
    nics = {"ens3": inst.ports[0].mac, "ens4": inst.ports[1].mac}
    ds = cloudinit.nocloud_datasource(root, tmp_path / "work", nics=nics)
    assert ds is not None, "cloud-init's NoCloud datasource did not accept the seed"
    assert ds["instance_id"] == inst.uuid
    assert ds["metadata"]["local-hostname"] == inst.fqdn
    assert ds["userdata_raw"] == inst.user_data
    assert ds["public_ssh_keys"] == [inst.key_pairs[0].public_key]
    assert ds["metadata"]["meta"] == dict(inst.meta) == {"role": "db"}
    assert yaml.safe_load(ds["vendordata_raw"]) is not None
    # the network config cloud-init applies is the seed's (renderers: test_network_renderers)
    assert ds["network"]["source"] == "ds"
    physical = [c for c in ds["network"]["config"]["config"] if c["type"] == "physical"]
    assert [(c["name"], c["mac_address"]) for c in physical] == [
        ("eth0", inst.ports[0].mac),
        ("eth1", inst.ports[1].mac),
    ]


def test_nocloud_files_travel_as_vendor_data(
    tmp_path: Path, cloudinit: Any, extract: Callable[[Path, Path], Path]
) -> None:
    inst = example("seed/instance.yaml")
    image = tmp_path / "seed.iso"
    build(inst, image, DriveFormat.NOCLOUD)
    ds = cloudinit.nocloud_datasource(extract(image, tmp_path / "x"), tmp_path / "work")
    assert ds is not None
    vendor = yaml.safe_load(ds["vendordata_raw"])
    written = {w["path"]: base64.b64decode(w["content"]) for w in vendor["write_files"]}
    assert written == {"/" + f.path.lstrip("/"): f.content for f in inst.files}


@pytest.mark.parametrize(("fmt", "size", "fstype"), FORMATS)
def test_config_drive_datasource_network_config(
    tmp_path: Path, cloudinit: Any, extract: Callable[[Path, Path], Path], fmt: DriveFormat,
    size: int | None, fstype: str,
) -> None:  # fmt: skip
    """A whole DataSourceConfigDrive on the drive: the network config stages.Init picks is
    network_data.json's, on the guest's NICs found by MAC under their own names."""
    inst = example("dual-stack.yaml")
    image = tmp_path / "disk.config"
    build(inst, image, fmt, vfat_size=size)
    nics = {"enp0s3": inst.ports[0].mac, "enp0s4": inst.ports[1].mac}
    ds = cloudinit.datasource(
        "ConfigDrive", tmp_path / "work", seed=extract(image, tmp_path / "x"), nics=nics,
        instance_id=inst.uuid,
    )  # fmt: skip
    assert ds["found"] and ds["instance_id"] == inst.uuid
    assert ds["network"]["source"] == "ds"
    config = ds["network"]["config"]
    physical = [c for c in config["config"] if c["type"] == "physical"]
    assert [(c["name"], c["mac_address"]) for c in physical] == list(nics.items())
    assert [s["type"] for s in physical[0]["subnets"]] == ["static", "static6"]
    assert [s["type"] for s in physical[1]["subnets"]] == ["dhcp4", "ipv6_slaac"]


def test_isoinfo_sees_joliet_and_rock_ridge(tmp_path: Path, sh: Run) -> None:
    image = tmp_path / "disk.config"
    build(example("seed/instance.yaml"), image)
    info = sh(["isoinfo", "-d", "-i", str(image)]).stdout.decode()
    assert "Volume id: config-2" in info
    assert "Joliet with UCS level 3 found" in info
    assert "Rock Ridge signatures version 1 found" in info
    listing = sh(["isoinfo", "-R", "-f", "-i", str(image)]).stdout.decode().splitlines()
    assert "/openstack/latest/meta_data.json" in listing
    joliet = sh(["isoinfo", "-J", "-f", "-i", str(image)]).stdout.decode().splitlines()
    assert "/openstack/2018-08-27/vendor_data2.json" in joliet


@pytest.mark.parametrize("size", [None, NOVA_VFAT_SIZE], ids=["fit", "64MiB"])
def test_fsck_vfat_is_clean(tmp_path: Path, sh: Run, size: int | None) -> None:
    image = tmp_path / "disk.config"
    build(example("dual-stack.yaml"), image, DriveFormat.VFAT, vfat_size=size)
    proc = sh(["fsck.vfat", "-n", str(image)])
    out = proc.stdout.decode()
    assert proc.returncode == 0
    assert not [line for line in out.splitlines()[1:] if "files," not in line], out


NOVA_ARGV = [
    "genisoimage",
    "-o",
    "{out}",
    "-ldots",
    "-allow-lowercase",
    "-allow-multidot",
    "-l",
    "-publisher",
    "OpenStack Nova 31.0.0",
    "-quiet",
    "-J",
    "-r",
    "-V",
    "config-2",
    "{dir}",
]


@pytest.mark.parametrize("spec", ["seed/instance.yaml", "dual-stack.yaml"])
def test_parity_with_nova_genisoimage(
    tmp_path: Path, sh: Run, extract: Callable[[Path, Path], Path], spec: str
) -> None:
    """nova's path (stage the tree in a directory, genisoimage with nova's exact argv) and our
    in-process writer give drives that read back identically."""
    from configdrive.drive import write_drive
    from configdrive.render import render

    tree = render(example(spec))
    staging = tmp_path / "staging"
    for path, data in tree.items():
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(data)
    nova = tmp_path / "nova.iso"
    sh([a.format(out=nova, dir=staging) for a in NOVA_ARGV])
    ours = tmp_path / "ours.iso"
    write_drive(tree, ours, DriveFormat.ISO9660)

    def snapshot(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

    from_nova = snapshot(extract(nova, tmp_path / "a"))
    from_ours = snapshot(extract(ours, tmp_path / "b"))
    assert from_ours == from_nova == tree
    for image in (nova, ours):
        info = sh(["isoinfo", "-d", "-i", str(image)]).stdout.decode()
        assert "Volume id: config-2" in info and "Rock Ridge" in info and "Joliet" in info
    # and our reader (used by `inspect`) agrees on both
    from configdrive import read_drive

    assert read_drive(nova).files == read_drive(ours).files == tree


def test_openstacksdk_compatible_pack(
    tmp_path: Path, sh: Run, extract: Callable[[Path, Path], Path]
) -> None:
    import gzip

    from configdrive import sdk

    packed = sdk.build(
        {"uuid": "u-1", "hostname": "h"}, user_data="#!/bin/sh\n", network_data={"links": []}
    )
    image = tmp_path / "sdk.iso"
    image.write_bytes(gzip.decompress(base64.b64decode(packed)))
    root = extract(image, tmp_path / "x")
    assert json.loads((root / "openstack/latest/meta_data.json").read_text()) == {
        "uuid": "u-1",
        "hostname": "h",
    }
    assert (root / "openstack/2012-08-10/user_data").read_bytes() == b"#!/bin/sh\n"
    assert (
        "LABEL=config-2"
        in sh(["blkid", "-p", "-o", "export", str(image)]).stdout.decode().splitlines()
    )
    assert gzip.decompress(base64.b64decode(sdk.pack(root)))[32769:32774] == b"CD001"
