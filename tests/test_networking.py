""" "No NIC" (``networks: none``, nova's ``--nic none``) and "a NIC no spec describes"
(``networks`` left out, ``--nic auto``) are two cases, on the drive, in the service, and in
cloud-init's hands.

The unmarked tests pin the trees; the ``cloudinit`` ones (every supported cloud-init) show
what the guest gets: for ``auto``, each datasource finds no network description and
``stages.Init`` falls back to DHCP on the guest's NIC, whatever its name or MAC; for ``none``,
cloud-init applies an empty config and brings nothing up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from netreaders import read

from configdrive import (
    DriveFormat,
    Instance,
    Layout,
    Networking,
    SpecError,
    build,
    instance_from_mapping,
    render,
)
from configdrive.render import LIBERTY, OPENSTACK_VERSIONS, openstack_file, openstack_files
from configdrive.service.client import instance_spec

ROOT = Path(__file__).resolve().parent.parent
PORT = {"mac": "fa:16:3e:00:00:0a", "subnets": [{"cidr": "10.0.0.0/24", "ips": ["10.0.0.5"]}]}
DESCRIBED = [v for v in (*OPENSTACK_VERSIONS, "latest") if v == "latest" or v >= LIBERTY]


def spec(**fields: Any) -> Instance:
    return instance_from_mapping(
        {"name": "vm", "uuid": "1b9e7a52-8d44-4c2e-9a51-3f0c6d7e8b90", **fields}
    )


# ---------------------------------------------------------------------------------------------
# spec, model, CLI


@pytest.mark.parametrize(
    ("fields", "mode"),
    [
        ({}, Networking.AUTO),
        ({"networks": "auto"}, Networking.AUTO),
        ({"networks": "none"}, Networking.NONE),
        ({"networks": []}, Networking.NONE),
        ({"networks": [PORT]}, Networking.PORTS),
    ],
    ids=["absent", "auto", "none", "empty-list", "ports"],
)
def test_spec_networks_modes(fields: dict[str, Any], mode: Networking) -> None:
    inst = spec(**fields)
    assert inst.networking is mode
    assert bool(inst.ports) == (mode is Networking.PORTS)


@pytest.mark.parametrize("value", [None, "dhcp", 5], ids=["null", "unknown-word", "number"])
def test_spec_networks_rejects_other_values(value: object) -> None:
    with pytest.raises(SpecError) as excinfo:
        spec(networks=value)
    assert excinfo.value.field == "networks"


def test_model_rejects_contradictions() -> None:
    port = spec(networks=[PORT]).ports[0]
    assert Instance(name="vm", ports=(port,)).networking is Networking.PORTS
    with pytest.raises(ValueError, match="networking none with 1 ports"):
        Instance(name="vm", ports=(port,), networking=Networking.NONE)
    with pytest.raises(ValueError, match="networking ports with 0 ports"):
        Instance(name="vm", networking=Networking.PORTS)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "configdrive", "build", "vm", "--dry-run", "--json", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "network_files"),
    [([], 0), (["--nic", "auto"], 0), (["--nic", "none"], len(DESCRIBED)),
     (["--nic", "mac=fa:16:3e:00:00:0b,v4-cidr=10.0.0.0/24,v4-fixed-ip=10.0.0.9"], len(DESCRIBED))],
    ids=["no-nic", "nic-auto", "nic-none", "nic-port"],
)  # fmt: skip
def test_cli_nic_modes(args: list[str], network_files: int) -> None:
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)["files"]
    assert len([p for p in files if p.endswith("/network_data.json")]) == network_files


@pytest.mark.parametrize("mode", ["none", "auto"])
def test_cli_nic_mode_stands_alone(mode: str) -> None:
    proc = cli("--nic", mode, "--nic", "mac=fa:16:3e:00:00:0b")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: nic: --nic {mode} cannot be combined with another --nic")


# ---------------------------------------------------------------------------------------------
# the trees


def test_auto_tree_has_no_network_description() -> None:
    inst = spec()
    tree = render(inst)
    assert not [p for p in tree if p.endswith("network_data.json")]
    for version in DESCRIBED:
        assert "network_data.json" not in openstack_files(version, inst)
        with pytest.raises(KeyError):
            openstack_file(inst, version, "network_data.json")
    # everything else nova writes is still there
    assert "openstack/latest/vendor_data2.json" in tree
    assert "network-config" not in render(inst, Layout.NOCLOUD)


def test_none_tree_is_novas_empty_network_data() -> None:
    tree = render(spec(networks="none"))
    assert {p: tree[p] for p in tree if p.endswith("network_data.json")} == {
        f"openstack/{v}/network_data.json": b"{}" for v in DESCRIBED
    }
    nocloud = render(spec(networks="none"), Layout.NOCLOUD)
    assert json.loads(nocloud["network-config"]) == {"version": 1, "config": []}


@pytest.mark.parametrize("networks", [None, "none", [PORT]], ids=["auto", "none", "ports"])
def test_admin_api_spec_keeps_the_mode(networks: object) -> None:
    inst = spec() if networks is None else spec(networks=networks)
    again = instance_from_mapping(json.loads(json.dumps(instance_spec(inst))))
    assert again.networking is inst.networking
    assert again.ports == inst.ports


# ---------------------------------------------------------------------------------------------
# cloud-init, every supported version: the drive as the guest's datasource reads it

DRIVES = [
    pytest.param(DriveFormat.ISO9660, "ConfigDrive", id="iso9660"),
    pytest.param(DriveFormat.VFAT, "ConfigDrive", id="vfat"),
    pytest.param(DriveFormat.NOCLOUD, "NoCloud", id="nocloud"),
    pytest.param(DriveFormat.NOCLOUD_VFAT, "NoCloud", id="nocloud-vfat"),
]
# whatever the guest's kernel and hypervisor named the NIC and gave it as MAC
GUEST_NICS = [
    pytest.param("ens3", "52:54:00:12:34:56", id="ens3-qemu"),
    pytest.param("enp1s0", "0a:1b:2c:3d:4e:5f", id="enp1s0-local"),
    pytest.param("eth0", "fa:16:3e:7b:2a:01", id="eth0-nova"),
]


def drive_root(inst: Instance, fmt: DriveFormat, tmp_path: Path, extract: Any) -> Path:
    image = tmp_path / "drive.img"
    build(inst, image, fmt)
    root: Path = extract(image, tmp_path / "x")
    return root


@pytest.mark.parametrize(("name", "mac"), GUEST_NICS)
@pytest.mark.parametrize(("fmt", "kind"), DRIVES)
def test_undescribed_nic_gets_dhcp(
    tmp_path: Path, cloudinit: Any, extract: Any, fmt: DriveFormat, kind: str, name: str,
    mac: str,
) -> None:  # fmt: skip
    inst = instance_from_mapping(
        {"name": "vm", "uuid": "1b9e7a52-8d44-4c2e-9a51-3f0c6d7e8b90"}
    )  # networks left out: a NIC no spec describes
    ds = cloudinit.datasource(
        kind, tmp_path / "ds", seed=drive_root(inst, fmt, tmp_path, extract), nics={name: mac},
        instance_id=inst.uuid,
    )  # fmt: skip
    assert ds["found"] and ds["instance_id"] == inst.uuid
    assert ds["network"]["source"] == "fallback", ds["network"]
    config = ds["network"]["config"]
    assert list(config["ethernets"]) == [name]
    assert config["ethernets"][name]["match"] == {"macaddress": mac}
    # what the guest's network stack is then told: DHCP on that NIC, under its own name
    files = cloudinit.render(config, "eni", tmp_path / "target", nics={name: mac})
    nic = read("eni", files).nics[name]
    assert nic.dhcp4 and not nic.addresses


@pytest.mark.parametrize(("fmt", "kind"), DRIVES)
def test_no_nic_configures_nothing(
    tmp_path: Path, cloudinit: Any, extract: Any, fmt: DriveFormat, kind: str
) -> None:
    """nova's ``--nic none``: cloud-init applies the empty config; a NIC the guest has anyway
    is left alone (no fallback DHCP), as on a nova server without ports."""
    inst = spec(networks="none")
    nics = {"ens3": "52:54:00:12:34:56"}
    ds = cloudinit.datasource(
        kind, tmp_path / "ds", seed=drive_root(inst, fmt, tmp_path, extract), nics=nics,
        instance_id=inst.uuid,
    )  # fmt: skip
    assert ds["found"]
    assert ds["network"] == {"source": "ds", "config": {"version": 1, "config": []}}
    files = cloudinit.render(ds["network"]["config"], "eni", tmp_path / "target", nics=nics)
    assert read("eni", files).nics == {}


def test_nocloud_network_config_is_v1_every_cloud_init_renders() -> None:
    """The forms tests/test_network_renderers.py found every version to render: a subnet's
    gateway (not a ``to: default`` or ``::/0`` route), SLAAC as cloud-init's own type (not a
    static address plus ``accept-ra``), NICs named by port index."""
    inst = spec(networks=[
        {"mac": "fa:16:3e:00:00:01"},  # no subnets: not configured, keeps eth0 for its index
        {"mac": "FA:16:3E:00:00:02", "mtu": 1400, "subnets": [
            {"cidr": "10.1.0.0/24", "ips": ["10.1.0.5"], "gateway": "10.1.0.1", "dns": ["10.1.0.2"],
             "routes": [{"cidr": "10.9.0.0/16", "gateway": "10.1.0.254"}]},
            {"cidr": "2001:db8::/64", "ipv6_address_mode": "slaac",
             "dns": ["10.1.0.2", "2001:db8::53"]},
        ]},
    ])  # fmt: skip
    config = json.loads(render(inst, Layout.NOCLOUD)["network-config"])
    assert config == {
        "version": 1,
        "config": [
            {
                "type": "physical", "name": "eth1", "mac_address": "fa:16:3e:00:00:02", "mtu": 1400,
                "subnets": [
                    {"type": "static", "address": "10.1.0.5/24", "gateway": "10.1.0.1",
                     "dns_nameservers": ["10.1.0.2"],
                     "routes": [{"network": "10.9.0.0", "prefix": 16, "gateway": "10.1.0.254"}]},
                    {"type": "ipv6_slaac", "dns_nameservers": ["10.1.0.2", "2001:db8::53"]},
                ],
            },
            {"type": "nameserver", "address": ["10.1.0.2", "2001:db8::53"]},
        ],
    }  # fmt: skip


def test_boot_refuses_a_network_for_no_nic(tmp_path: Path) -> None:
    """``networks: none`` means no NIC: a boot that would give the guest one is refused
    before anything is made."""
    from configdrive.compute import BootImage, BootRequest, boot
    from configdrive.host import BackendKind, HostConfig, find_flavor

    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"")
    host = HostConfig(instances_path=tmp_path / "instances", backend=BackendKind.QEMU)
    request = BootRequest(
        spec(networks="none"), find_flavor("1"), BootImage(disk=disk), True, user_net=()
    )
    with pytest.raises(SpecError) as excinfo:
        boot(request, host)
    assert excinfo.value.field == "networks"
    assert not (tmp_path / "instances").exists()


def test_undescribed_nic_mac_is_novas_and_per_instance() -> None:
    from configdrive.compute import guest_mac

    first, second = spec(), spec(uuid="2c0f8b63-9e55-4d3f-8b62-4a1d7e8f9c01")
    assert guest_mac(first).startswith("fa:16:3e:") and guest_mac(first) != guest_mac(second)
    assert guest_mac(first) == guest_mac(spec())  # the instance's, not a fresh draw
    assert guest_mac(spec(networks=[PORT])) == PORT["mac"]
