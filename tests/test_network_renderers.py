"""The guest's network, as every supported cloud-init renders it, is the spec's network.

For each spec, each layout (config-2: ``network_data.json`` read by the ConfigDrive datasource;
NoCloud: ``network-config`` read by the NoCloud datasource), each cloud-init (22.4, 25.1, 26.x)
and each of its renderers (eni, netplan, networkd, sysconfig, NetworkManager): cloud-init's
datasource reads the tree, ``stages.Init`` picks the network config, cloud-init's parser and the
renderer write the guest's files, and those files (read back by ``netreaders``) must carry the
spec's addresses and prefixes, default routes (v4 and v6), extra routes, DNS servers, MTU,
DHCPv4 / DHCPv6, and router advertisements accepted where the spec says SLAAC.

The guest's NICs are named as a kernel names them (``ens3``…), not as anything in the spec:
config-2 configures them under those names (cloud-init matches ``network_data.json`` links by
MAC), NoCloud under ``eth<port index>``, the names cloud-init renames them to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from netreaders import Rendered, read

from configdrive import Instance, Layout, instance_from_mapping, load_spec, render
from configdrive.render import NOCLOUD_NIC_PREFIX

pytestmark = pytest.mark.cloudinit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RENDERERS = ["eni", "netplan", "networkd", "sysconfig", "network-manager"]

# DHCP and DHCPv6 in all forms, v6-only static with its own route and DNS, a v4 subnet without
# gateway, jumbo MTU
MIXED: dict[str, Any] = {
    "name": "mixed",
    "uuid": "0c8e9f6a-1b2c-4d3e-8f4a-5b6c7d8e9f01",
    "networks": [
        {
            "mac": "fa:16:3e:10:00:01",
            "subnets": [
                {"cidr": "10.20.0.0/24", "ips": ["10.20.0.7"], "dhcp": True, "dns": ["10.20.0.2"]},
                {
                    "cidr": "fd00:20::/64",
                    "ips": ["fd00:20::7"],
                    "ipv6_address_mode": "dhcpv6-stateful",
                },
            ],
        },
        {
            "mac": "fa:16:3e:10:00:02",
            "mtu": 9000,
            "subnets": [
                {
                    "cidr": "2001:db8:30::/64",
                    "ips": ["2001:db8:30::9"],
                    "gateway": "2001:db8:30::1",
                    "dns": ["2001:db8:30::53"],
                    "routes": [{"cidr": "2001:db8:99::/48", "gateway": "2001:db8:30::fe"}],
                },
            ],
        },
        {
            "mac": "fa:16:3e:10:00:03",
            "subnets": [
                {"cidr": "192.168.7.0/24", "ips": ["192.168.7.20"]},
                {
                    "cidr": "2001:db8:40::/64",
                    "ipv6_address_mode": "dhcpv6-stateless",
                },
            ],
        },
    ],
}


def _spec(name: str) -> Instance:
    if name == "mixed":
        return instance_from_mapping(MIXED)
    data, base = load_spec(EXAMPLES / name)
    return instance_from_mapping(data, base=base)


SPECS = ["dual-stack.yaml", "mixed"]


@dataclass
class Expect:
    """What the spec says one port's NIC gets."""

    name: str
    addresses: set[str] = field(default_factory=set)
    gateways: set[str] = field(default_factory=set)
    routes: set[tuple[str, str]] = field(default_factory=set)
    dns: set[str] = field(default_factory=set)
    mtu: int | None = None
    dhcp4: bool = False
    dhcp6: bool = False
    accepts_ra: bool = False


def expected(inst: Instance, names: list[str]) -> dict[str, Expect]:
    """Per MAC, from the spec (nova uses a port's first IPv4 and first IPv6 subnet)."""
    out = {}
    for port, name in zip(inst.ports, names, strict=True):
        want = Expect(name=name, mtu=port.mtu)
        for version in (4, 6):
            subnet = next((s for s in port.subnets if s.version == version), None)
            if subnet is None:
                continue
            mode = subnet.ipv6_address_mode
            if mode in ("slaac", "dhcpv6-stateless"):
                want.accepts_ra = True
            elif mode == "dhcpv6-stateful" or (subnet.dhcp and version == 6):
                want.dhcp6 = True
            elif subnet.dhcp:
                want.dhcp4 = True
            elif subnet.ips:
                prefix = ipaddress.ip_network(subnet.cidr).prefixlen
                want.addresses.add(
                    ipaddress.ip_interface(f"{subnet.ips[0]}/{prefix}").with_prefixlen
                )
                if subnet.gateway:
                    want.gateways.add(subnet.gateway)
                want.routes |= {(r.cidr, r.gateway) for r in subnet.routes}
                want.dns |= set(subnet.dns)  # dynamic subnets: DNS comes with the lease / RA
        out[port.mac] = want
    return out


# cloud-init's own limits with nova's network_data.json, which a drive cannot change: each is
# checked to still hold (so a release that fixes it shows up here), not skipped.
# 22.4's convert_net_json puts DNS only into global nameserver entries (services), and its
# NetworkManager renderer writes no global DNS: the keyfiles carry none.
DNS_LOST = {("22.4", "config-2", "network-manager")}


def check(
    rendered: Rendered, want: dict[str, Expect], renderer: str, *, dns_lost: bool = False
) -> None:
    """Every difference from the spec, on every NIC, in one failure."""
    problems: list[str] = []

    def expect(ok: bool, what: str, got: object, wanted: object) -> None:
        if not ok:
            problems.append(f"{what}: {got!r}, the spec says {wanted!r}")

    assert len(rendered.nics) == len(want), f"{renderer}: NICs {sorted(rendered.nics)}"
    for mac, exp in want.items():
        nic = rendered.by_mac(mac)
        at = f"{renderer} {nic.name} ({mac})"
        expect(nic.dhcp4 == exp.dhcp4, f"{at} DHCPv4", nic.dhcp4, exp.dhcp4)
        expect(nic.dhcp6 or not exp.dhcp6, f"{at} DHCPv6", nic.dhcp6, exp.dhcp6)
        if exp.accepts_ra:  # SLAAC: router advertisements must not be turned off
            expect(nic.ra is not False, f"{at} router advertisements", "off", "SLAAC")
        expect(nic.gateways == exp.gateways, f"{at} default gateways", nic.gateways, exp.gateways)
        expect(nic.routes == exp.routes, f"{at} routes", nic.routes, exp.routes)
        expect(nic.addresses == exp.addresses, f"{at} addresses", nic.addresses, exp.addresses)
        dns = nic.dns | rendered.dns
        if dns_lost:
            expect(not dns, f"{at} DNS (known to be lost)", dns, "none written")
        else:
            expect(exp.dns <= dns, f"{at} DNS", dns, exp.dns)
        expect(nic.mtu == exp.mtu, f"{at} MTU", nic.mtu, exp.mtu)
        expect(nic.name == exp.name, f"{at} interface name", nic.name, exp.name)
    assert not problems, "\n".join(problems)


def seed(inst: Instance, layout: Layout, root: Path) -> Path:
    for path, data in render(inst, layout).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


LAYOUTS = [
    pytest.param(Layout.CONFIG_DRIVE, "ConfigDrive", id="config-2"),
    pytest.param(Layout.NOCLOUD, "NoCloud", id="nocloud"),
]


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize(("layout", "kind"), LAYOUTS)
@pytest.mark.parametrize("spec", SPECS)
def test_renderers_write_the_spec_network(
    tmp_path: Path, cloudinit: Any, spec: str, layout: Layout, kind: str, renderer: str
) -> None:
    inst = _spec(spec)
    kernel_names = [f"ens{3 + i}" for i in range(len(inst.ports))]
    nics = dict(zip(kernel_names, (p.mac for p in inst.ports), strict=True))
    ds = cloudinit.datasource(
        kind, tmp_path / "ds", seed=seed(inst, layout, tmp_path / "seed"), nics=nics,
        instance_id=inst.uuid,
    )  # fmt: skip
    assert ds["found"], f"cloud-init's {kind} datasource refused the tree"
    assert ds["network"]["source"] == "ds", ds["network"]
    files = cloudinit.render(ds["network"]["config"], renderer, tmp_path / "target", nics=nics)
    if layout is Layout.NOCLOUD:
        names = [f"{NOCLOUD_NIC_PREFIX}{i}" for i in range(len(inst.ports))]
    else:
        names = kernel_names
    lost = (cloudinit.release.expect.rstrip("."), str(layout), renderer) in DNS_LOST
    check(read(renderer, files), expected(inst, names), renderer, dns_lost=lost)
