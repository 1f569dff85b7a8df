"""Spec loading and validation: nova's rules, one SpecError per broken rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from configdrive.errors import SpecError
from configdrive.model import BootSource, Instance
from configdrive.render import RenderOptions
from configdrive.spec import Limits, instance_from_mapping, load_spec, sanitize_hostname

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqeJxY3mzEZao3fNNRPvN0D7lxRlZ6Ebw2Y+w7ozNzn me@host"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("myinstance", "myinstance"),
        ("Hello World", "hello-world"),
        ("test_host", "test-host"),
        ("....test.example.com...", "test-example-com"),
        ("<}\x1fh\x10e\x08l\x02l\x05o\x12!{>", "hello"),
        ("\u7684.test.example.com", "test-example-com"),
        ("a" * 80, "a" * 63),
    ],
)
def test_sanitize_hostname_like_nova(name: str, expected: str) -> None:
    assert sanitize_hostname(name) == expected


def test_empty_sanitised_hostname_falls_back_to_server_uuid() -> None:
    inst = instance_from_mapping({"name": "\u7684", "uuid": "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"})
    assert inst.hostname == "Server-37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"


def test_seed_example_spec_loads() -> None:
    data, base = load_spec(EXAMPLES / "seed" / "instance.yaml")
    inst = instance_from_mapping(data, base=base)
    assert inst.name == "myinstance" and inst.hostname == "myinstance"
    assert inst.fqdn == "myinstance.novalocal"
    assert inst.meta == {"role": "webservers", "essential": "false"}
    assert [f.path for f in inst.files] == ["/etc/network/interfaces", "known_hosts"]
    assert inst.files[0].content == (EXAMPLES / "seed" / "instance-interfaces").read_bytes()
    assert inst.key_pairs[0].name == "mykey"
    assert inst.user_data == (EXAMPLES / "seed" / "my-user-data.txt").read_bytes()


def test_dual_stack_spec_loads() -> None:
    data, base = load_spec(EXAMPLES / "dual-stack.yaml")
    inst = instance_from_mapping(data, base=base)
    assert inst.hostname == "web-01-example"
    assert len(inst.ports) == 2 and inst.ports[0].subnets[1].version == 6
    assert inst.ports[1].subnets[0].dhcp


def test_limits_are_configurable() -> None:
    data = {"name": "x", "user_data": "a" * 49152}  # 65536 base64 chars
    with pytest.raises(SpecError, match="user_data: is 49152 bytes, 65536 once base64-encoded"):
        instance_from_mapping(data)
    inst = instance_from_mapping(data, limits=Limits().replace("user_data_b64", 70000))
    assert inst.user_data is not None and len(inst.user_data) == 49152
    assert instance_from_mapping({"name": "x", "user_data": "a" * 49149}).user_data  # 65532: ok


def test_guest_paths() -> None:
    ok = instance_from_mapping(
        {"name": "x", "files": {"a/../b": {"content": ""}, "/etc/x": {"content": "y"}}}
    )
    assert [f.path for f in ok.files] == ["a/../b", "/etc/x"]
    with pytest.raises(SpecError, match=r"files\[\.\./x\]: guest path must not escape"):
        instance_from_mapping({"name": "x", "files": {"../x": {"content": ""}}})


# ---------------------------------------------------------------------------------------------
# every limit exactly at its boundary: the largest value passes, one more is refused


def _files(n: int, size: int = 1, path_len: int = 8) -> dict[str, object]:
    return {f"/{i}" + "p" * (path_len - 1 - len(str(i))): {"content": "x" * size} for i in range(n)}


@pytest.mark.parametrize(
    ("ok", "over", "error"),
    [
        ({"files": _files(5)}, {"files": _files(6)}, "files: 6 injected files, over the quota of 5"),
        ({"files": _files(1, size=10240)}, {"files": _files(1, size=10241)}, "content is 10241 bytes, over 10240"),
        ({"files": _files(1, path_len=255)}, {"files": _files(1, path_len=256)}, "guest path is longer than 255 bytes"),
        ({"files": {"/" + "\u00e9" * 127: {"content": ""}}}, {"files": {"/" + "\u00e9" * 128: {"content": ""}}}, "guest path is longer than 255 bytes"),
        ({"meta": {f"k{i}": "v" for i in range(128)}}, {"meta": {f"k{i}": "v" for i in range(129)}}, "meta: has 129 items, over 128"),
        ({"meta": {"k" * 255: "v"}}, {"meta": {"k" * 256: "v"}}, "key is longer than 255 characters"),
        ({"meta": {"k": "v" * 255}}, {"meta": {"k": "v" * 256}}, "meta.k: value is longer than 255 characters"),
        ({"name": "n" * 255}, {"name": "n" * 256}, "name: is longer than 255 characters"),
        ({"user_data": "a" * 49149}, {"user_data": "a" * 49150}, "user_data: is 49150 bytes, 65536 once base64-encoded"),
        ({"keys": [{"name": "k" * 255, "public_key": KEY}]}, {"keys": [{"name": "k" * 256, "public_key": KEY}]}, "keys[0].name: is longer than 255 characters"),
        ({"hostname": "h" * 255}, {"hostname": "h" * 256}, "hostname: 'hhhh"),
        ({"availability_zone": "z" * 255}, {"availability_zone": "z" * 256}, "availability_zone: must be 1 to 255"),
    ],
    ids=["files", "file-bytes", "path-bytes", "path-utf8-bytes", "meta-items", "meta-key",
         "meta-value", "name", "user-data", "key-name", "hostname", "zone"],
)  # fmt: skip
def test_limit_boundaries(ok: dict[str, object], over: dict[str, object], error: str) -> None:
    instance_from_mapping({"name": "x", **ok})
    with pytest.raises(SpecError) as raised:
        instance_from_mapping({"name": "x", **over})
    assert error in str(raised.value)


PORT = {"mac": "fa:16:3e:00:00:01", "id": "1f6b0c52-3c8a-4f5e-9e2a-7b1d2c3e4f50"}


def _subnet_spec(**kw: object) -> dict[str, object]:
    return {"name": "x", "networks": [{**PORT, "subnets": [kw]}]}


# ---------------------------------------------------------------------------------------------
# what nova holds: names and hostnames, duplicates, addresses


def test_requested_hostname_is_kept_and_a_derived_one_sanitised() -> None:
    assert instance_from_mapping({"name": "x", "hostname": "Web-01.Example"}).hostname == (
        "Web-01.Example"
    )
    assert instance_from_mapping({"name": "Web Server_01"}).hostname == "web-server-01"
    assert instance_from_mapping({"name": "web\n"}).name == "web"  # nova strips it


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"name": " web"}, "name: ' web' is not a name nova accepts"),
        ({"name": "a\tb"}, "is not a name nova accepts"),
        ({"name": "\U0001f600"}, "is not a name nova accepts"),
        ({"name": "x", "hostname": "a b"}, "hostname: 'a b' is not a hostname nova accepts"),
        ({"name": "x", "availability_zone": "a:b"}, "availability_zone: 'a:b' is not a zone name"),
        ({"name": "x", "ec2_instance_id": "i-123"}, "ec2_instance_id: 'i-123' is not an EC2 id"),
        ({"name": "x", "ami_id": "ami-XYZ00000"}, "ami_id: 'ami-XYZ00000' is not an EC2 id"),
        ({"name": "x", "boot_source": "volume", "image_id": "b1d2e3f4-0000-4000-8000-00000000abcd"}, "image_id: a server booted from a volume has no image"),
        ({"name": "x", "boot_source": "disk"}, "boot_source: must be image or volume"),
        ({"name": "x", "block_devices": [{"type": "swap", "device": "vdb"}, {"type": "swap", "device": "vdc"}]}, "block_devices: nova gives a server at most one swap device"),
        ({"name": "x", "block_devices": [{"type": "volume", "device": "/dev/vda"}]}, "block_devices[0].device: /dev/vda is already the root"),
        ({"name": "x", "block_devices": [{"type": "volume", "device": "/dev/VDB"}]}, "is not a guest device name"),
        ({"name": "x", "floating_ip": "203.0.113.9"}, "floating_ip: is associated with a fixed IPv4 address"),
        ({"name": "x", "networks": [{**PORT, "vif_type": "bridge"}]}, "networks[0].vif_type: nova 34 refuses Linux bridge VIFs"),
        (_subnet_spec(cidr="10.0.0.0/24"), "networks[0].subnets[0].ips: needs the port's address"),
        (_subnet_spec(cidr="10.0.0.0/24", ips=["10.0.0.2", "10.0.0.2"]), "lists an address twice"),
        (_subnet_spec(cidr="fd00::/64", ipv6_address_mode="slaac", ips=["fd00::5"]), "only its EUI-64 address (fd00::f816:3eff:fe00:1"),
        ({"name": "x", "networks": [{**PORT, "subnets": [{"cidr": "10.0.0.0/16", "ips": ["10.0.0.2"]}, {"cidr": "10.0.1.0/24", "ips": ["10.0.1.2"]}]}]}, "subnets[1].cidr: 10.0.1.0/24 overlaps 10.0.0.0/16"),
        ({"name": "x", "devices": [{"type": "disk", "bus": "pci", "address": "0000:00:03"}]}, "devices[0].address: '0000:00:03' is not a PCI address"),
        ({"name": "x", "devices": [{"type": "disk", "bus": "scsi", "address": "0:0:1"}]}, "is not a scsi address"),
        ({"name": "x", "devices": [{"type": "disk", "bus": "ide", "address": "2:0"}]}, "is not a ide address"),
        ({"name": "x", "devices": [{"type": "disk", "bus": "usb", "address": "1"}]}, "is not a usb address"),
        ({"name": "x", "devices": [{"type": "disk", "bus": "xen", "address": "5"}]}, "is not a xen address"),
        ({"name": "x", "devices": [{"type": "disk", "address": "0:0"}]}, "a device without a bus has no address"),
    ],
)  # fmt: skip
def test_inputs_nova_never_holds_are_refused(spec: dict[str, object], error: str) -> None:
    with pytest.raises(SpecError) as raised:
        instance_from_mapping(spec)
    assert error in str(raised.value)
    assert "\n" not in str(raised.value)


def test_duplicates_are_dropped_as_nova_does() -> None:
    route = {"cidr": "192.168.0.0/24", "gateway": "10.0.0.254"}
    inst = instance_from_mapping(
        {**_subnet_spec(cidr="10.0.0.0/24", ips=["10.0.0.2"], dns=["10.0.0.3", "9.9.9.9", "10.0.0.3"],
                        routes=[route, {**route, "gateway": "10.0.0.253"}, route]),
         "dedicated_cpus": [3, 1, 3]}
    )  # fmt: skip
    subnet = inst.ports[0].subnets[0]
    assert subnet.dns == ("10.0.0.3", "9.9.9.9")
    assert [(r.cidr, r.gateway) for r in subnet.routes] == [
        ("192.168.0.0/24", "10.0.0.254"),
        ("192.168.0.0/24", "10.0.0.253"),
    ]
    assert inst.dedicated_cpus == frozenset({1, 3})


def test_slaac_subnet_gets_neutrons_eui64_address() -> None:
    for mode in ("slaac", "dhcpv6-stateless"):
        inst = instance_from_mapping(_subnet_spec(cidr="2001:db8::/64", ipv6_address_mode=mode))
        assert inst.ports[0].subnets[0].ips == ("2001:db8::f816:3eff:fe00:1",)


def test_bus_addresses_are_stored_as_nova_stores_them() -> None:
    devices = [
        {"type": "disk", "bus": "pci", "address": "0000:00:0A.0"},
        {"type": "disk", "bus": "scsi", "address": "0:0:1:0"},
        {"type": "disk", "bus": "pci"},
    ]
    inst = instance_from_mapping({"name": "x", "devices": devices})
    assert [d.address for d in inst.devices] == ["0000:00:0a.0", "0:0:1:0", None]


# ---------------------------------------------------------------------------------------------
# the nova boot flags for boot source and block devices


def _from_flags(*argv: str) -> tuple[Instance, RenderOptions]:
    from configdrive.cli import make_parser
    from configdrive.cli.drives import _render_options, spec_from_args

    args = make_parser().parse_args(["build", "vm", "--uuid", UUID, *argv])
    data, base = spec_from_args(args)
    return instance_from_mapping(data, base=base), _render_options(args)


UUID = "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"


def test_block_device_flags_are_named_as_the_libvirt_driver_names_disks() -> None:
    inst, _ = _from_flags(
        "--image-id", "b1d2e3f4-0000-4000-8000-00000000abcd",
        "--block-device", "source=volume,dest=volume",
        "--block-device", "source=volume,dest=volume,device=vdz",
        "--swap", "512", "--ephemeral", "size=1", "--ephemeral", "size=2,format=ext4",
    )  # fmt: skip
    assert inst.ec2_ami_id == "ami-0000abcd"
    assert [(str(d.kind), d.device) for d in inst.block_devices] == [
        ("ephemeral", "/dev/vdb"), ("ephemeral", "/dev/vdc"), ("swap", "/dev/vdd"),
        ("volume", "/dev/vde"), ("volume", "/dev/vdz"),
    ]  # fmt: skip


def test_boot_volume_flag_and_host_zone_flag() -> None:
    inst, options = _from_flags(
        "--boot-volume", "00000000-0000-4000-8000-000000000001",
        "--default-availability-zone", "home",
    )  # fmt: skip
    assert inst.boot_source is BootSource.VOLUME and inst.ec2_ami_id is None
    assert options.default_availability_zone == "home"
    assert _from_flags()[1].default_availability_zone == "nova"
