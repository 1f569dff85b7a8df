"""Render tests: nova's layout, order and every version gate, checked against tables written
from nova's own unit tests (nova/tests/unit/test_metadata.py, test_network_info.py), not
against our output."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from configdrive.model import (
    BlockDevice,
    BlockDeviceKind,
    BootSource,
    Device,
    DeviceBus,
    DeviceKind,
    InjectedFile,
    Instance,
    KeyPair,
    Networking,
    Port,
    Route,
    Subnet,
)
from configdrive.render import (
    EC2_VERSIONS,
    OPENSTACK_VERSIONS,
    Layout,
    RenderOptions,
    ec2_metadata,
    meta_data,
    network_data,
    render,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqeJxY3mzEZao3fNNRPvN0D7lxRlZ6Ebw2Y+w7ozNzn me@host"


def counter_urandom() -> Callable[[int], bytes]:
    counter = itertools.count()
    return lambda n: bytes([next(counter) % 256]) * n


def make_instance(**kw: object) -> Instance:
    base: dict[str, object] = dict(
        name="myinstance",
        uuid="37bf37e7-fd38-4b31-aa1b-5dffa0c35abe",
        hostname="myinstance",
        key_pairs=(KeyPair("mykey", KEY),),
        user_data=b"#cloud-config\n",
        files=(
            InjectedFile("/etc/network/interfaces", b"auto lo\n"),
            InjectedFile("known_hosts", b"k\n"),
        ),
        meta={"role": "webservers", "essential": "false"},
        availability_zone="nova",
        project_id="p1",
    )
    base.update(kw)
    if not base.get("ports"):  # nova's fake instances: a server without ports (--nic none)
        base.setdefault("networking", Networking.NONE)
    return Instance(**base)  # type: ignore[arg-type]


# nova test_metadata.py test_InstanceMetadata_invoke_metadata_for_config_drive, defaults + user data
NOVA_ORDER = (
    [
        "ec2/2009-04-04/user-data",
        "ec2/2009-04-04/meta-data.json",
        "ec2/latest/user-data",
        "ec2/latest/meta-data.json",
    ]
    + [f"openstack/2012-08-10/{f}" for f in ("meta_data.json", "user_data")]
    + [f"openstack/2013-04-04/{f}" for f in ("meta_data.json", "user_data")]
    + [f"openstack/2013-10-17/{f}" for f in ("meta_data.json", "user_data", "vendor_data.json")]
    + [
        f"openstack/{v}/{f}"
        for v in ("2015-10-15", "2016-06-30")
        for f in ("meta_data.json", "user_data", "vendor_data.json", "network_data.json")
    ]
    + [
        f"openstack/{v}/{f}"
        for v in ("2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04", "latest")
        for f in (
            "meta_data.json",
            "user_data",
            "vendor_data.json",
            "network_data.json",
            "vendor_data2.json",
        )
    ]
    + ["openstack/content/0000", "openstack/content/0001"]
)


def test_drive_paths_and_order_match_nova() -> None:
    tree = render(make_instance())
    assert list(tree) == NOVA_ORDER


def test_no_user_data_means_no_user_data_files() -> None:
    tree = render(make_instance(user_data=None))
    assert not [p for p in tree if p.endswith(("user_data", "user-data"))]


# nova test_metadata.py test_as_json: top-level keys by version (with meta, files, keys)
BASE_KEYS = {
    "uuid",
    "meta",
    "files",
    "public_keys",
    "keys",
    "hostname",
    "name",
    "launch_index",
    "availability_zone",
}
EXPECTED_KEYS = {
    "2012-08-10": BASE_KEYS,
    "2013-04-04": BASE_KEYS | {"random_seed"},
    "2013-10-17": BASE_KEYS | {"random_seed"},
    "2015-10-15": BASE_KEYS | {"random_seed", "project_id"},
    "2016-06-30": BASE_KEYS | {"random_seed", "project_id", "devices"},
    "2016-10-06": BASE_KEYS | {"random_seed", "project_id", "devices"},
    "2017-02-22": BASE_KEYS | {"random_seed", "project_id", "devices"},
    "2018-08-27": BASE_KEYS | {"random_seed", "project_id", "devices"},
    "2020-10-14": BASE_KEYS | {"random_seed", "project_id", "devices", "dedicated_cpus"},
    "2025-04-04": BASE_KEYS | {"random_seed", "project_id", "devices", "dedicated_cpus"},
    "latest": BASE_KEYS | {"random_seed", "project_id", "devices", "dedicated_cpus"},
}


@pytest.mark.parametrize("version", [*OPENSTACK_VERSIONS, "latest"])
def test_meta_data_keys_by_version(version: str) -> None:
    tree = render(make_instance())
    md = json.loads(tree[f"openstack/{version}/meta_data.json"])
    assert set(md) == EXPECTED_KEYS[version]
    assert not [k for k in md if "-" in k]  # nova: no top-level key contains '-'


def test_meta_data_key_order_and_values() -> None:
    md = meta_data(make_instance(dedicated_cpus=(4, 0, 1)), "latest", urandom=bytes)
    assert list(md) == [
        "uuid",
        "meta",
        "files",
        "public_keys",
        "keys",
        "hostname",
        "name",
        "launch_index",
        "availability_zone",
        "random_seed",
        "project_id",
        "devices",
        "dedicated_cpus",
    ]
    assert md["hostname"] == "myinstance.novalocal"
    assert md["files"] == [
        {"path": "/etc/network/interfaces", "content_path": "/content/0000"},
        {"path": "known_hosts", "content_path": "/content/0001"},
    ]
    assert md["public_keys"] == {"mykey": KEY}
    assert md["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert md["devices"] == [] and md["dedicated_cpus"] == [0, 1, 4]


def test_random_seed_is_fresh_512_bytes_per_file() -> None:
    tree = render(make_instance())
    seeds = []
    for version in [*OPENSTACK_VERSIONS, "latest"]:
        md = json.loads(tree[f"openstack/{version}/meta_data.json"])
        if version == "2012-08-10":
            assert "random_seed" not in md
            continue
        raw = base64.b64decode(md["random_seed"], validate=True)
        assert len(raw) == 512
        seeds.append(raw)
    assert len(set(seeds)) == len(seeds) == 10


def test_admin_pass_only_on_drive_and_serialisation_is_json_dumps() -> None:
    inst = make_instance(admin_pass="pw")
    data = render(inst, urandom=bytes)["openstack/2012-08-10/meta_data.json"]
    # json.dumps defaults: ", " and ": " separators, ASCII escapes, no newline
    assert data.startswith(b'{"uuid": "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe", "meta": ')
    assert json.loads(data)["admin_pass"] == "pw"
    assert "admin_pass" not in meta_data(inst, "latest")  # the service passes no extra_md


def test_missing_key_pair_means_no_keys() -> None:
    md = meta_data(make_instance(key_pairs=()), "latest")
    assert "keys" not in md and "public_keys" not in md


def test_x509_key_type() -> None:
    from configdrive.model import KeyType

    md = meta_data(make_instance(key_pairs=(KeyPair("cert", "PEM", KeyType.X509),)), "latest")
    assert md["keys"] == [{"name": "cert", "type": "x509", "data": "PEM"}]


def test_vendor_data_files() -> None:
    tree = render(make_instance(vendor_data={"a": 1}, vendor_data2={"web": {"b": 2}}))
    assert json.loads(tree["openstack/2013-10-17/vendor_data.json"]) == {"a": 1}
    assert json.loads(tree["openstack/latest/vendor_data2.json"]) == {
        "static": {"a": 1},
        "web": {"b": 2},
    }
    empty = render(make_instance())
    assert empty["openstack/latest/vendor_data.json"] == b"{}"
    assert json.loads(empty["openstack/latest/vendor_data2.json"]) == {"static": {}}
    assert empty["openstack/latest/network_data.json"] == b"{}"


# devices: nova test_metadata.py fake device metadata, gated by version
DEVICES = (
    Device(
        DeviceKind.NIC, DeviceBus.PCI, "0000:00:02.0", ("foo",), mac="00:00:00:00:00:00", vlan=1000
    ),
    Device(
        DeviceKind.NIC, DeviceBus.PCI, "0000:00:03.0", (), mac="00:00:00:00:00:01", vf_trusted=True
    ),
    Device(
        DeviceKind.DISK,
        DeviceBus.SCSI,
        "0:0:0:0",
        ("bar",),
        serial="disk-vol-2352423",
        path="/dev/sda",
    ),
    Device(DeviceKind.DISK, DeviceBus.IDE, "0:0", ("baz",)),
    Device(DeviceKind.SHARE, DeviceBus.NONE, None, (), share_id="s1", share_tag="t1"),
)


def test_devices_gating() -> None:
    inst = make_instance(devices=DEVICES)
    newton = meta_data(inst, "2016-06-30")["devices"]
    assert newton[0] == {
        "type": "nic",
        "mac": "00:00:00:00:00:00",
        "bus": "pci",
        "address": "0000:00:02.0",
        "tags": ["foo"],
    }
    assert [d["type"] for d in newton] == ["nic", "disk", "disk"]  # untagged NIC hidden
    ocata = meta_data(inst, "2017-02-22")["devices"]
    assert ocata[0]["vlan"] == 1000 and "vf_trusted" not in ocata[0]
    rocky = meta_data(inst, "2018-08-27")["devices"]
    assert list(rocky[0]) == ["vlan", "vf_trusted", "type", "mac", "bus", "address", "tags"]
    assert rocky[1] == {
        "vf_trusted": True,
        "type": "nic",
        "mac": "00:00:00:00:00:01",
        "bus": "pci",
        "address": "0000:00:03.0",
    }
    assert rocky[2] == {
        "type": "disk",
        "serial": "disk-vol-2352423",
        "path": "/dev/sda",
        "bus": "scsi",
        "address": "0:0:0:0",
        "tags": ["bar"],
    }
    assert [d["type"] for d in meta_data(inst, "2020-10-14")["devices"]] == [
        "nic",
        "nic",
        "disk",
        "disk",
    ]
    epoxy = meta_data(inst, "2025-04-04")["devices"]
    assert epoxy[-1] == {
        "type": "share",
        "share_id": "s1",
        "tag": "t1",
        "bus": "none",
        "address": "none",
    }


# network_data: nova test_network_info.py TestNetworkMetadata reference
def nova_reference_port() -> Port:
    return Port(
        mac="aa:aa:aa:aa:aa:aa",
        id="1",
        network_id="1",
        vif_type="ethernet",
        mtu=1500,
        subnets=(
            Subnet(
                "10.10.0.0/24",
                ("10.10.0.2",),
                "10.10.0.1",
                ("1.2.3.4", "2.3.4.5"),
                (Route("0.0.0.0/24", "192.168.1.1"),),
            ),
            Subnet(
                "fd00::/48",
                ("fd00::2",),
                "fd00::1",
                ("1:2:3:4::", "2:3:4:5::"),
                (Route("::/48", "fd00::1:1"),),
            ),
        ),
    )


def test_network_data_matches_nova_reference() -> None:
    # nova's fixture VIF has no devname (link "interface0"); nova's neutron code always names
    # one "tap" + the port id, cut to 14 characters, so a port here always has that link id
    net = network_data(make_instance(ports=(nova_reference_port(),)))
    assert net is not None
    assert list(net) == ["links", "networks", "services"]
    assert net["links"] == [
        {
            "id": "tap1",
            "vif_id": "1",
            "type": "phy",
            "mtu": 1500,
            "ethernet_mac_address": "aa:aa:aa:aa:aa:aa",
        }
    ]
    v4, v6 = net["networks"]
    assert v4 == {
        "id": "network0",
        "type": "ipv4",
        "link": "tap1",
        "ip_address": "10.10.0.2",
        "netmask": "255.255.255.0",
        "routes": [
            {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.10.0.1"},
            {"network": "0.0.0.0", "netmask": "255.255.255.0", "gateway": "192.168.1.1"},
        ],
        "network_id": "1",
        "services": [{"type": "dns", "address": "1.2.3.4"}, {"type": "dns", "address": "2.3.4.5"}],
    }
    assert v6["id"] == "network1" and v6["type"] == "ipv6" and v6["ip_address"] == "fd00::2"
    assert v6["netmask"] == "ffff:ffff:ffff::"
    assert v6["routes"] == [
        {"network": "::", "netmask": "::", "gateway": "fd00::1"},
        {"network": "::", "netmask": "ffff:ffff:ffff::", "gateway": "fd00::1:1"},
    ]
    assert [s["address"] for s in net["services"]] == [
        "1.2.3.4",
        "2.3.4.5",
        "1:2:3:4::",
        "2:3:4:5::",
    ]


def test_network_data_dhcp_short_form_modes_types_and_dedup() -> None:
    dhcp = Port(
        mac="bb:bb:bb:bb:bb:bb",
        id="2",
        network_id="n2",
        vif_type="bridge",
        devname="tap2",
        subnets=(
            Subnet("192.168.0.0/24", ("192.168.0.9",), "192.168.0.1", ("1.2.3.4",), dhcp=True),
            Subnet("2001:db8::/64", ("2001:db8::9",), ipv6_address_mode="dhcpv6-stateful"),
        ),
    )
    v6only = Port(
        mac="cc:cc:cc:cc:cc:cc",
        id="3",
        network_id="n3",
        vif_type="ovs",
        subnets=(Subnet("2001:db9::/64", ("2001:db9::3",), ipv6_address_mode="slaac"),),
    )
    net = network_data(make_instance(ports=(nova_reference_port(), dhcp, v6only)))
    assert net is not None
    assert [n["id"] for n in net["networks"]] == [
        "network0",
        "network1",
        "network2",
        "network3",
        "network4",
    ]
    assert net["networks"][2] == {
        "id": "network2",
        "type": "ipv4_dhcp",
        "link": "tap2",
        "network_id": "n2",
    }
    assert net["networks"][3]["type"] == "ipv6_dhcpv6-stateful"
    assert net["networks"][3]["routes"] == []
    assert net["networks"][4]["type"] == "ipv6_slaac" and net["networks"][4]["link"] == "tap3"
    assert [link["type"] for link in net["links"]] == ["phy", "bridge", "ovs"]
    assert [s["address"] for s in net["services"]].count("1.2.3.4") == 1  # de-duplicated


def test_port_without_subnets_is_skipped_but_counted() -> None:
    bare = Port(mac="dd:dd:dd:dd:dd:dd", id="9", network_id="n9")
    net = network_data(make_instance(ports=(bare, nova_reference_port())))
    assert net is not None and [link["id"] for link in net["links"]] == ["tap1"]


def test_link_id_is_tap_and_the_first_11_characters_of_the_port_id() -> None:
    port = Port(mac="aa:aa:aa:aa:aa:01", id="1f6b0c52-3c8a-4f5e-9e2a-7b1d2c3e4f50",
                subnets=(Subnet("10.0.0.0/24", ("10.0.0.2",)),))  # fmt: skip
    named = Port(mac="aa:aa:aa:aa:aa:02", devname="eth-given",
                 subnets=(Subnet("10.1.0.0/24", ("10.1.0.2",)),))  # fmt: skip
    net = network_data(make_instance(ports=(port, named)))
    assert net is not None
    assert [link["id"] for link in net["links"]] == ["tap1f6b0c52-3c", "eth-given"]
    assert [n["link"] for n in net["networks"]] == ["tap1f6b0c52-3c", "eth-given"]


def test_a_port_with_a_dhcp_subnet_has_no_mtu() -> None:
    """nova netutils._get_link_mtu: null as soon as one subnet has a DHCP server."""
    v4 = Subnet("10.0.0.0/24", ("10.0.0.2",))
    v6_dhcp = Subnet("fd00::/64", ("fd00::2",), dhcp=True, ipv6_address_mode="dhcpv6-stateful")
    ports = (
        Port(mac="aa:aa:aa:aa:aa:01", id="a", mtu=1450, subnets=(v4,)),
        Port(mac="aa:aa:aa:aa:aa:02", id="b", mtu=1450, subnets=(v4, v6_dhcp)),
        Port(mac="aa:aa:aa:aa:aa:03", id="c", mtu=9000, subnets=(replace(v4, dhcp=True),)),
    )
    net = network_data(make_instance(ports=ports))
    assert net is not None and [link["mtu"] for link in net["links"]] == [1450, None, None]


# EC2 view: nova test_metadata.py / base.py get_ec2_metadata
def test_ec2_metadata_versions_and_public_keys() -> None:
    inst = make_instance()
    old = ec2_metadata(inst, "1.0")
    assert list(old) == [
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "instance-id",
        "hostname",
        "local-ipv4",
        "reservation-id",
        "security-groups",
        "public-keys",
    ]
    latest = ec2_metadata(inst, "latest")
    assert latest["public-keys"] == {"0": {"_name": "0=mykey", "openssh-key": KEY}}
    assert latest["placement"] == {"availability-zone": "nova"}
    assert latest["instance-action"] == "none" and latest["ami-manifest-path"] == "FIXME"
    assert latest["local-hostname"] == "myinstance.novalocal"
    assert latest["local-ipv4"] is None  # a drive with no fixed IPv4
    assert ec2_metadata(inst, "2007-12-15")["block-device-mapping"] == {
        "ami": "vda",
        "root": "/dev/vda",
    }
    assert "instance-type" not in ec2_metadata(inst, "2007-03-01")
    assert ec2_metadata(make_instance(root_device_name=None), "latest")["block-device-mapping"] == {
        "ami": "sda1",
        "ephemeral0": "sda2",
        "root": "/dev/sda1",
        "swap": "sda3",
    }
    with pytest.raises(KeyError):
        ec2_metadata(inst, "2010-01-01")


def test_ec2_meta_data_json_keeps_name_quirk_and_skip_versions() -> None:
    tree = render(make_instance())
    md = json.loads(tree["ec2/latest/meta-data.json"])
    assert md["public-keys"]["0"]["_name"] == "0=mykey"  # nova's del on the wrong dict
    all_versions = render(make_instance(), options=RenderOptions(skip_versions=()))
    assert sorted({p.split("/")[1] for p in all_versions if p.startswith("ec2/")}) == sorted(
        [
            "1.0",
            "2007-01-19",
            "2007-03-01",
            "2007-08-29",
            "2007-10-10",
            "2007-12-15",
            "2008-02-01",
            "2008-09-01",
            "2009-04-04",
            "latest",
        ]
    )
    no_latest = render(make_instance(), options=RenderOptions(skip_versions=("latest",)))
    assert "ec2/latest/meta-data.json" not in no_latest
    assert "ec2/2009-04-04/meta-data.json" in no_latest
    # skip-versions never applies to OpenStack versions (nova's doc/code mismatch)
    skip_os = render(make_instance(), options=RenderOptions(skip_versions=("2018-08-27",)))
    assert "openstack/2018-08-27/meta_data.json" in skip_os


def test_hostname_without_dhcp_domain() -> None:
    assert meta_data(make_instance(dhcp_domain=None), "latest")["hostname"] == "myinstance"


def test_nocloud_tree() -> None:
    import yaml

    inst = make_instance(files=(), ports=(nova_reference_port(),))
    tree = render(inst, Layout.NOCLOUD)
    assert list(tree) == ["meta-data", "user-data", "network-config"]
    md = yaml.safe_load(tree["meta-data"])
    assert md["instance-id"] == inst.uuid and md["local-hostname"] == "myinstance.novalocal"
    assert md["public-keys"] == [KEY]
    net = yaml.safe_load(tree["network-config"])
    assert net["version"] == 1
    nic, dns = net["config"]
    assert nic["type"] == "physical" and nic["mac_address"] == "aa:aa:aa:aa:aa:aa"
    assert [s["address"] for s in nic["subnets"]] == ["10.10.0.2/24", "fd00::2/48"]
    assert [s.get("gateway") for s in nic["subnets"]] == ["10.10.0.1", "fd00::1"]
    assert dns == {
        "type": "nameserver",
        "address": ["1.2.3.4", "2.3.4.5", "1:2:3:4::", "2:3:4:5::"],
    }
    with_files = render(make_instance(), Layout.NOCLOUD)
    vendor = yaml.safe_load(with_files["vendor-data"])
    assert vendor["write_files"][0]["path"] == "/etc/network/interfaces"
    assert base64.b64decode(vendor["write_files"][1]["content"]) == b"k\n"
    assert render(make_instance(user_data=None), Layout.NOCLOUD)["user-data"] == b""


# EC2 version gates, key by key (nova base.py get_ec2_metadata): every version's key list
EC2_BASE = ["ami-id", "ami-launch-index", "ami-manifest-path", "instance-id", "hostname",
            "local-ipv4", "reservation-id", "security-groups", "public-keys"]  # fmt: skip
EC2_GATES = {
    "2007-01-19": ["local-hostname", "public-hostname", "public-ipv4"],
    "2007-08-29": ["instance-type"],
    "2007-12-15": ["block-device-mapping", "kernel-id", "ramdisk-id"],
    "2008-02-01": ["placement"],
    "2008-09-01": ["instance-action"],
}


@pytest.mark.parametrize("version", [*EC2_VERSIONS, "latest"])
def test_every_ec2_version_gate(version: str) -> None:
    inst = make_instance(kernel_id="11111111-2222-4333-8444-555555555555",
                         ramdisk_id="66666666-7777-4888-8999-aaaaaaaaaaaa")  # fmt: skip
    resolved = EC2_VERSIONS[-1] if version == "latest" else version
    expected = list(EC2_BASE)
    for gate, keys in EC2_GATES.items():
        if EC2_VERSIONS.index(resolved) >= EC2_VERSIONS.index(gate):
            expected += keys
    assert list(ec2_metadata(inst, version)) == expected


def test_ec2_image_ids_follow_the_boot_source() -> None:
    uuid = "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"
    image = "b1d2e3f4-0000-4000-8000-00000000abcd"
    md = ec2_metadata(make_instance(image_id=image), "latest")
    assert md["ami-id"] == "ami-0000abcd"  # the image's EC2 id: its UUID's low 32 bits
    assert md["instance-id"] == "i-" + uuid.replace("-", "")[-8:]
    assert (
        ec2_metadata(make_instance(image_id=image, ami_id="ami-00000007"), "latest")["ami-id"]
        == "ami-00000007"
    )
    default = ec2_metadata(make_instance(), "latest")["ami-id"]
    assert default is not None and re.fullmatch(r"ami-[0-9a-f]{8}", default)
    assert default == ec2_metadata(make_instance(), "latest")["ami-id"]  # derived, not random
    volume = ec2_metadata(make_instance(boot_source=BootSource.VOLUME), "latest")
    assert volume["ami-id"] is None
    assert volume["block-device-mapping"] == {"ami": "vda", "root": "/dev/vda", "ebs0": "/dev/vda"}
    kernel = ec2_metadata(make_instance(kernel_id="11111111-2222-4333-8444-555555555555"), "latest")
    assert kernel["kernel-id"] == "aki-55555555" and "ramdisk-id" not in kernel


def test_block_device_mapping_as_nova_builds_it() -> None:
    """nova block_device.instance_block_mapping: ebsN sorted by device, ephemeralN in order,
    swap; the libvirt driver has set default_swap_device, so swap comes right after root."""
    devices = (
        BlockDevice(BlockDeviceKind.VOLUME, "/dev/vdf"),
        BlockDevice(BlockDeviceKind.EPHEMERAL, "/dev/vdc"),
        BlockDevice(BlockDeviceKind.VOLUME, "/dev/vdd"),
        BlockDevice(BlockDeviceKind.EPHEMERAL, "/dev/vdb"),
    )
    mapping = ec2_metadata(make_instance(block_devices=devices), "latest")["block-device-mapping"]
    assert list(mapping.items()) == [
        ("ami", "vda"), ("root", "/dev/vda"), ("ebs0", "/dev/vdd"), ("ebs1", "/dev/vdf"),
        ("ephemeral0", "/dev/vdc"), ("ephemeral1", "/dev/vdb"),
    ]  # fmt: skip
    swap = (*devices, BlockDevice(BlockDeviceKind.SWAP, "/dev/vde"))
    mapping = ec2_metadata(make_instance(block_devices=swap), "latest")["block-device-mapping"]
    assert list(mapping)[:3] == ["ami", "root", "swap"] and mapping["swap"] == "/dev/vde"
    bfv = make_instance(boot_source=BootSource.VOLUME, block_devices=devices[:1])
    mapping = ec2_metadata(bfv, "latest")["block-device-mapping"]
    assert (mapping["ebs0"], mapping["ebs1"]) == ("/dev/vda", "/dev/vdf")


def test_availability_zone_defaults_to_the_hosts() -> None:
    nowhere = make_instance(availability_zone=None)
    assert meta_data(nowhere, "latest")["availability_zone"] == "nova"
    home = RenderOptions(default_availability_zone="home")
    assert meta_data(nowhere, "latest", options=home)["availability_zone"] == "home"
    assert ec2_metadata(nowhere, "latest", options=home)["placement"] == {
        "availability-zone": "home"
    }
    tree = render(nowhere, options=home)
    assert json.loads(tree["openstack/2012-08-10/meta_data.json"])["availability_zone"] == "home"
    assert json.loads(tree["ec2/latest/meta-data.json"])["placement"]["availability-zone"] == "home"
    asked = make_instance(availability_zone="az-1")
    assert meta_data(asked, "latest", options=home)["availability_zone"] == "az-1"


def test_vendor_data2_drops_a_provider_whose_key_exists() -> None:
    tree = render(make_instance(vendor_data={"a": 1}, vendor_data2={"static": 2, "web": 3}))
    assert tree["openstack/latest/vendor_data2.json"] == b'{"static": {"a": 1}, "web": 3}'
