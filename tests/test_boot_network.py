"""Real guests: a NIC no spec describes comes up with DHCP; a described port as described.

`configdrive boot` with a spec that leaves ``networks`` out gives the guest one NIC on QEMU's
restricted user network (its DHCP server, nothing beyond) and a drive with no network
description. The guest's own report (the check unit, after cloud-init) must show cloud-init's
DHCP fallback rendered for that NIC, and the NIC holding a DHCP lease from QEMU's DHCP server
with its on-link route.

Guest images are a parameter (``IMAGES``): the project's Debian 12 kernel-boot image, and the
cloud-shaped Debian 13 image (cloud-init 25.1, systemd 257, netplan), booted by its own GRUB.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from configdrive.compute import guest_mac
from configdrive.guest.cloudimage import CloudOS, CloudVariant, build_cloud_image
from configdrive.guest.image import ImageVariant, build_image, parse_check_report
from configdrive.spec import instance_from_mapping

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = float(os.environ.get("CONFIGDRIVE_VM_TIMEOUT", "1200"))
END = "CONFIGDRIVE-CHECK end"
# the guest images: the kernel-boot Debian 12 test image, and the cloud-shaped Debian 13 one
IMAGES = [
    pytest.param("debian12", id="debian12"),
    pytest.param("debian13-cloud", id="debian13-cloud"),
]


@dataclass(frozen=True)
class GuestImage:
    path: Path  # an image directory or manifest, for boot --image
    append: tuple[str, ...]  # boot's --append (direct kernel boot only)


def guest_image(name: str) -> GuestImage:
    def say(message: str) -> None:
        print(f"image: {message}", file=sys.stderr)

    if name == "debian12":
        image = build_image(ImageVariant.TUNED, progress=say)
        return GuestImage(image.directory, ("--append", "configdrive.poweroff=1"))
    cloud = build_cloud_image(CloudOS.DEBIAN_13, CloudVariant.STOCK, progress=say)
    return GuestImage(cloud.manifest("bios"), ())  # its bootloader owns the command line


def rendered_for(rendered: str, ifname: str) -> bool:
    """Whether cloud-init's rendered network config (ENI or netplan) configures ``ifname``."""
    return f"iface {ifname} inet " in rendered or f" {ifname}:" in rendered


# config-2 (ConfigDrive datasource) and NoCloud, both without a network description. The cloud
# image's config-2 case is test_cloudimage's boot (the same fallback, lease and route checks,
# under both firmwares), so that it is not booted twice in CI.
UNDESCRIBED = [
    pytest.param(variant, fmt, datasource, id=f"{variant}-{fmt_id}")
    for variant in ("debian12", "debian13-cloud")
    for fmt, datasource, fmt_id in (
        ("iso9660", "DataSourceConfigDrive", "config-2"),
        ("nocloud", "DataSourceNoCloud", "nocloud"),
    )
    if (variant, fmt) != ("debian13-cloud", "iso9660")
]
USER_NET = ipaddress.ip_network("169.254.0.0/16")  # configdrive.virt.domain.USER_NET


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def vm_dir() -> Iterator[Path]:
    # under /var/tmp, world-traversable: QEMU may run as another user
    root = Path(tempfile.mkdtemp(prefix="configdrive-vmnet-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def boot_and_report(
    work: Path, image: GuestImage, fmt: str, name: str, networks: list[dict[str, Any]] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Boot ``name`` with one restricted NIC and ``networks`` as its spec's (None: left out):
    the guest's report and the instance's record."""
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    host = work / "host.conf"
    host.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\nconfig_drive_format = {fmt}\n"
        "[libvirt]\nvirt_type = auto\nhw_machine_type = pc\n[configdrive]\nbackend = qemu\n"
    )
    spec = work / "spec.json"
    data: dict[str, Any] = {"name": name}
    if networks is not None:
        data["networks"] = networks
    spec.write_text(json.dumps(data))
    proc = cli("boot", name, "--spec", str(spec), "--image", str(image.path), "--config-drive",
               "true", "--guest-net", "restricted", *image.append,
               "--host-config", str(host), "--json")  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"boot failed: {proc.stderr}", pytrace=False)
    record = json.loads(proc.stdout)
    console = Path(record["path"]) / "console.log"
    deadline = time.monotonic() + BOOT_TIMEOUT
    text = ""
    try:
        while time.monotonic() < deadline:
            text = console.read_text(errors="replace") if console.exists() else ""
            if END in text:
                break
            time.sleep(1)
        instance = json.loads((Path(record["path"]) / "instance.json").read_text())
    finally:
        cli("delete", name, "--host-config", str(host))
    report = parse_check_report(text)
    assert report.get("complete"), f"no complete report; console tail:\n{text[-3000:]}"
    return report, instance


def nic_of(report: dict[str, Any], mac: str) -> str:
    """The guest's name for the NIC with ``mac``."""
    links = (report["net_links"] or "").splitlines()
    names = [line.split(":")[1].strip() for line in links if f"link/ether {mac}" in line]
    assert len(names) == 1, links
    return names[0].split("@")[0]


def ipv4_of(report: dict[str, Any], ifname: str) -> list[list[str]]:
    """``ip -o addr`` words of each IPv4 address on ``ifname``."""
    return [
        line.split()
        for line in (report["net_addr"] or "").splitlines()
        if line.split()[1] == ifname and " inet " in line
    ]


@pytest.mark.parametrize(("variant", "fmt", "datasource"), UNDESCRIBED)
def test_undescribed_nic_comes_up_with_dhcp(
    vm_dir: Path, variant: str, fmt: str, datasource: str
) -> None:
    image = guest_image(variant)
    name = f"vmnet-{fmt}"
    work = vm_dir / f"{variant}-{fmt}"
    report, record = boot_and_report(work, image, fmt, name, None)
    mac = record["spec"]["nic_mac"]
    assert str(report["datasource"]).startswith(datasource), report["datasource"]
    assert report["cloud_init_result"] == []
    # the MAC boot gave the NIC is configdrive's own choice for an undescribed NIC
    assert mac == guest_mac(instance_from_mapping({"name": name, "uuid": record["uuid"]}))
    assert_fallback_dhcp(report, mac)


def assert_fallback_dhcp(report: dict[str, Any], mac: str) -> None:
    """The guest's report shows cloud-init's DHCP fallback for the NIC with ``mac``, rendered,
    and that NIC holding a lease from QEMU's DHCP server with its on-link route."""
    ifname = nic_of(report, mac)
    assert "Applying network configuration from fallback" in (report["network_events"] or ""), (
        report["network_events"]
    )
    rendered = report["cloud_network"] or ""
    assert rendered_for(rendered, ifname), rendered
    assert "inet dhcp" in rendered or "dhcp4: true" in rendered, rendered
    # (No IPv4 default route: with restrict=on, QEMU's DHCP server (libslirp) sends neither a
    # router nor a DNS option.)
    (words,) = ipv4_of(report, ifname)
    address = ipaddress.ip_interface(words[words.index("inet") + 1])
    assert address.ip in USER_NET and "dynamic" in words, words
    routes = (report["net_route"] or "").split("\n")
    connected = f"{USER_NET} dev {ifname} proto kernel scope link src {address.ip}"
    assert any(r.startswith(connected) for r in routes), routes


PORT_MAC = "fa:16:3e:00:00:42"
DHCP_PORT = {"cidr": str(USER_NET), "ips": ["169.254.0.15"], "dhcp": True}
STATIC_PORT = {"cidr": str(USER_NET), "ips": ["169.254.0.40"], "gateway": "169.254.0.2"}


@pytest.mark.parametrize(
    ("fmt", "datasource", "subnet"),
    [
        # (NoCloud with DHCP is rendered by every cloud-init in test_network_renderers; booting
        # it as well only repeated config-2-dhcp's lease)
        pytest.param("iso9660", "DataSourceConfigDrive", DHCP_PORT, id="config-2-dhcp"),
        pytest.param("nocloud", "DataSourceNoCloud", STATIC_PORT, id="nocloud-static"),
    ],
)
@pytest.mark.parametrize("variant", IMAGES)
def test_described_port_comes_up_as_the_spec_says(
    vm_dir: Path, variant: str, fmt: str, datasource: str, subnet: dict[str, Any]
) -> None:
    """The contrast: a described port is configured from the drive (not the fallback), with
    its address; NoCloud's NIC is renamed to ``eth0`` (docs/formats.md, network-config),
    config-2's keeps its kernel name."""
    image = guest_image(variant)
    name = f"vmport-{fmt}"
    work = vm_dir / f"{variant}-{fmt[:3]}-{'d' if subnet.get('dhcp') else 's'}"
    networks = [{"mac": PORT_MAC, "subnets": [subnet]}]
    report, record = boot_and_report(work, image, fmt, name, networks)
    assert record["spec"]["nic_mac"] == PORT_MAC
    assert record["warnings"] == []  # boot's NIC check: the port is the guest's NIC
    assert str(report["datasource"]).startswith(datasource), report["datasource"]
    assert report["cloud_init_result"] == []
    assert "Applying network configuration from ds" in (report["network_events"] or ""), report[
        "network_events"
    ]
    ifname = nic_of(report, PORT_MAC)
    if fmt == "nocloud":
        assert ifname == "eth0", report["net_links"]
    assert rendered_for(report["cloud_network"] or "", ifname), report["cloud_network"]
    (words,) = ipv4_of(report, ifname)
    address = ipaddress.ip_interface(words[words.index("inet") + 1])
    assert address == ipaddress.ip_interface(f"{subnet['ips'][0]}/{USER_NET.prefixlen}")
    assert ("dynamic" in words) == bool(subnet.get("dhcp")), words
    if subnet.get("gateway"):
        routes = (report["net_route"] or "").split("\n")
        default = f"default via {subnet['gateway']} dev {ifname}"
        assert any(r.startswith(default) for r in routes), routes


def test_boot_warns_of_a_described_port_the_guest_has_no_nic_for(vm_dir: Path) -> None:
    """check's MAC rule, run by boot: a port with no NIC (``--guest-net none``) is one
    cloud-init would wait for. (The guest is deleted as soon as it has started.)"""
    work = vm_dir / "nonic"
    work.mkdir()
    host = work / "host.conf"
    host.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\n[configdrive]\nbackend = qemu\n"
    )
    spec = work / "spec.json"
    # (a port needs a subnet to be described: nova leaves a port without one out of
    # network_data.json, and check then reports the empty description instead)
    port = {"mac": PORT_MAC, "subnets": [DHCP_PORT]}
    spec.write_text(json.dumps({"name": "nonic", "networks": [port]}))
    image = build_image(ImageVariant.TUNED)
    proc = cli("boot", "nonic", "--spec", str(spec), "--image", str(image.directory),
               "--config-drive", "true", "--host-config", str(host), "--json")  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout)
        assert record["warnings"] == [
            f"the drive describes {PORT_MAC}, which no NIC of the guest has"
        ], record
        assert f"warning: the drive describes {PORT_MAC}" in proc.stderr
    finally:
        cli("delete", "nonic", "--host-config", str(host))
