"""Read what cloud-init's network renderers wrote back into one shape, to check it against a spec.

Each reader takes the files one renderer wrote (relative path -> text, as the judge returns them)
and gives, per NIC, what the guest's network stack will configure: addresses with prefixes,
default gateways, other routes, DNS servers, MTU, DHCPv4, DHCPv6, and whether router
advertisements are accepted (``ra``: True on, False off, None the stack's default). The readers
follow each stack's documented semantics (ifupdown's interfaces(5), netplan, systemd.network,
initscripts' ifcfg, NetworkManager keyfiles), not cloud-init's code.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import yaml

__all__ = ["READERS", "Nic", "Rendered", "read"]


@dataclass
class Nic:
    name: str
    mac: str | None = None
    addresses: set[str] = field(default_factory=set)  # "ip/prefix", compressed
    gateways: set[str] = field(default_factory=set)  # next hops of default routes
    routes: set[tuple[str, str]] = field(default_factory=set)  # (destination CIDR, next hop)
    dns: set[str] = field(default_factory=set)
    mtu: int | None = None
    dhcp4: bool = False
    dhcp6: bool = False
    ra: bool | None = None


@dataclass
class Rendered:
    nics: dict[str, Nic] = field(default_factory=dict)  # by interface name
    dns: set[str] = field(default_factory=set)  # resolver-wide servers

    def nic(self, name: str) -> Nic:
        return self.nics.setdefault(name, Nic(name))

    def by_mac(self, mac: str) -> Nic:
        found = [n for n in self.nics.values() if n.mac and n.mac.lower() == mac.lower()]
        assert len(found) == 1, f"{len(found)} NICs with MAC {mac}: {sorted(self.nics)}"
        return found[0]


def _iface(address: str, prefix: str | int | None = None) -> str:
    text = address if prefix in (None, "") else f"{address}/{prefix}"
    return ipaddress.ip_interface(text).with_prefixlen


def _net(text: str) -> str:
    return ipaddress.ip_network(text, strict=False).with_prefixlen


def _is_default(dest: str) -> bool:
    return dest in ("default", "") or ipaddress.ip_network(dest, strict=False).prefixlen == 0


def _route(nic: Nic, dest: str, via: str) -> None:
    if _is_default(dest):
        nic.gateways.add(str(ipaddress.ip_address(via)))
    else:
        nic.routes.add((_net(dest), str(ipaddress.ip_address(via))))


def _flag(value: object) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "2", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


# ---------------------------------------------------------------------------------------------
# udev rules (eni, sysconfig): NAME by ATTR{address}

_UDEV = re.compile(r'ATTR\{address\}=="([0-9a-fA-F:]+)".*NAME="([^"]+)"')


def _udev_names(files: dict[str, str]) -> dict[str, str]:
    names = {}
    for path, text in files.items():
        if path.endswith("70-persistent-net.rules"):
            for mac, name in _UDEV.findall(text):
                names[name] = mac.lower()
    return names


# ---------------------------------------------------------------------------------------------
# ifupdown: interfaces(5)


def _eni_route(nic: Nic, words: list[str]) -> None:
    # post-up route add [-A inet6] [-net|-host] DEST|default gw GW [metric N] || true
    # post-up ip [-family inet6] route add DEST|default via GW [metric N] || true
    words = words[: words.index("||")] if "||" in words else words
    if "add" not in words:
        return
    rest = words[words.index("add") + 1 :]
    dest, via = "", ""
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in ("-A", "-family", "metric"):
            i += 2
            continue
        if word in ("-net", "-host"):
            i += 1
            continue
        if word in ("gw", "via"):
            via = rest[i + 1]
            i += 2
            continue
        dest = "default" if word == "default" else word
        i += 1
    if via:
        _route(nic, dest, via)


def read_eni(files: dict[str, str]) -> Rendered:
    out = Rendered()
    ra_default: dict[str, bool] = {}
    text = "\n".join(t for p, t in sorted(files.items()) if "/network/interfaces" in p)
    current: tuple[Nic, str, str] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] in ("auto", "allow-hotplug", "source", "source-directory", "mapping"):
            current = None
            continue
        if words[0] == "iface":
            name, family, method = words[1], words[2], words[3]
            if name == "lo":
                current = (out.nic("lo"), family, method)
                continue
            nic = out.nic(name)
            current = (nic, family, method)
            if family == "inet" and method == "dhcp":
                nic.dhcp4 = True
            if family == "inet6":
                if method == "dhcp":
                    nic.dhcp6 = True
                # interfaces(5): accept_ra defaults to 0 for static, 1 for dhcp, 2 for auto
                ra_default[name] = method in ("auto", "dhcp")
            continue
        if current is None:
            continue
        nic, family, method = current
        key, args = words[0], words[1:]
        if key == "address":
            nic.addresses.add(_iface(args[0]))
        elif key == "netmask" and nic.addresses:
            pass  # cloud-init writes address/prefix
        elif key == "gateway":
            nic.gateways.add(str(ipaddress.ip_address(args[0])))
        elif key == "mtu":
            nic.mtu = int(args[0])
        elif key == "dns-nameservers":
            (out.dns if nic.name == "lo" else nic.dns).update(args)  # lo's: resolver-wide
        elif key in ("accept_ra", "accept-ra") and family == "inet6":
            nic.ra = _flag(args[0])  # an inet6 method's option; in an inet stanza it is ignored
        elif key == "post-up":
            _eni_route(nic, args)
    for name, mac in _udev_names(files).items():
        out.nic(name).mac = mac
    for name, default in ra_default.items():
        if out.nics[name].ra is None:
            out.nics[name].ra = default
    out.nics.pop("lo", None)
    return out


# ---------------------------------------------------------------------------------------------
# netplan


def read_netplan(files: dict[str, str]) -> Rendered:
    out = Rendered()
    for path, text in sorted(files.items()):
        if not path.startswith("etc/netplan/"):
            continue
        doc = yaml.safe_load(text) or {}
        for key, cfg in (doc.get("network", doc).get("ethernets") or {}).items():
            nic = out.nic(cfg.get("set-name") or key)
            nic.mac = (cfg.get("match") or {}).get("macaddress")
            for address in cfg.get("addresses") or []:
                nic.addresses.add(_iface(address))
            for gw in ("gateway4", "gateway6"):
                if cfg.get(gw):
                    nic.gateways.add(str(ipaddress.ip_address(cfg[gw])))
            for route in cfg.get("routes") or []:
                _route(nic, str(route["to"]), str(route["via"]))
            nic.dns.update((cfg.get("nameservers") or {}).get("addresses") or [])
            nic.mtu = cfg.get("mtu")
            nic.dhcp4 = bool(cfg.get("dhcp4"))
            nic.dhcp6 = bool(cfg.get("dhcp6"))
            nic.ra = _flag(cfg.get("accept-ra"))
    return out


# ---------------------------------------------------------------------------------------------
# systemd.network: repeated sections, repeated keys


def _sections(text: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    section, entries = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            if section:
                yield section, entries
            section, entries = line[1:-1], []
            continue
        key, _, value = line.partition("=")
        entries.append((key.strip(), value.strip()))
    if section:
        yield section, entries


def read_networkd(files: dict[str, str]) -> Rendered:
    out = Rendered()
    for path, text in sorted(files.items()):
        if not path.endswith(".network"):
            continue
        sections = list(_sections(text))
        match = {k: v for s, e in sections if s == "Match" for k, v in e}
        nic = out.nic(match.get("Name") or path)
        nic.mac = match.get("MACAddress")
        for section, entries in sections:
            values = dict(entries)
            if section == "Link" and "MTUBytes" in values:
                nic.mtu = int(values["MTUBytes"])
            elif section == "Network":
                for key, value in entries:
                    if key == "DHCP":
                        nic.dhcp4 = value in ("yes", "ipv4", "true")
                        nic.dhcp6 = nic.dhcp6 or value in ("yes", "ipv6", "true")
                    elif key == "DNS":
                        nic.dns.update(value.split())
                    elif key == "IPv6AcceptRA":
                        nic.ra = _flag(value)
                    elif key == "Address":
                        nic.addresses.add(_iface(value))
                    elif key == "Gateway":
                        nic.gateways.add(value)
            elif section == "Address":
                nic.addresses.add(_iface(values["Address"]))
            elif section == "Route" and "Gateway" in values:
                _route(nic, values.get("Destination", ""), values["Gateway"])
        # systemd.network: with RAs accepted (the default), an RA's managed flag starts DHCPv6
        nic.dhcp6 = nic.dhcp6 or nic.ra is not False
    return out


# ---------------------------------------------------------------------------------------------
# initscripts' ifcfg (sysconfig)


def _shell_vars(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = " ".join(shlex.split(value))
    return values


def read_sysconfig(files: dict[str, str]) -> Rendered:
    out = Rendered()
    scripts = "etc/sysconfig/network-scripts/"
    for path, text in sorted(files.items()):
        if path.startswith(scripts + "ifcfg-"):
            v = _shell_vars(text)
            nic = out.nic(v.get("DEVICE") or path.rsplit("ifcfg-", 1)[1])
            nic.mac = v.get("HWADDR")
            for key, value in v.items():
                suffix = key.removeprefix("IPADDR")
                if key.startswith("IPADDR") and (suffix == "" or suffix.isdigit()):
                    prefix = v.get(f"PREFIX{suffix}") or v.get(f"NETMASK{suffix}")
                    nic.addresses.add(_iface(value, prefix))
            for key in ("IPV6ADDR", "IPV6ADDR_SECONDARIES"):
                nic.addresses.update(_iface(a) for a in v.get(key, "").split())
            for key in ("GATEWAY", "IPV6_DEFAULTGW"):
                if v.get(key):
                    nic.gateways.add(v[key].split("%")[0])
            nic.dns.update(value for key, value in v.items() if re.fullmatch(r"DNS\d+", key))
            nic.mtu = int(v["MTU"]) if "MTU" in v else None
            nic.dhcp4 = v.get("BOOTPROTO") == "dhcp"
            nic.dhcp6 = v.get("DHCPV6C") == "yes"
            autoconf = _flag(v.get("IPV6_AUTOCONF"))
            forced = _flag(v.get("IPV6_FORCE_ACCEPT_RA"))
            nic.ra = (
                True if (autoconf or forced) else (autoconf if autoconf is not None else forced)
            )
        elif path.startswith(scripts + "route-"):
            nic = out.nic(path.rsplit("route-", 1)[1])
            v = _shell_vars(text)
            for key, dest in v.items():
                if key.startswith("ADDRESS"):
                    n = key.removeprefix("ADDRESS")
                    _route(nic, _net(f"{dest}/{v[f'NETMASK{n}']}"), v[f"GATEWAY{n}"])
        elif path.startswith(scripts + "route6-"):
            nic = out.nic(path.rsplit("route6-", 1)[1])
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if "via" in words:
                    _route(nic, words[0], words[words.index("via") + 1])
        elif path == "etc/resolv.conf":
            for line in text.splitlines():
                words = line.split()
                if words[:1] == ["nameserver"]:
                    out.dns.add(words[1])
    return out


# ---------------------------------------------------------------------------------------------
# NetworkManager keyfiles


def read_network_manager(files: dict[str, str]) -> Rendered:
    out = Rendered()
    for path, text in sorted(files.items()):
        if not path.endswith(".nmconnection"):
            continue
        ini = configparser.ConfigParser(interpolation=None, strict=False)
        ini.optionxform = str  # type: ignore[assignment,method-assign]
        ini.read_string(text)
        name = ini.get("connection", "interface-name", fallback=None) or path
        nic = out.nic(name)
        if ini.has_option("ethernet", "mac-address"):
            nic.mac = ini.get("ethernet", "mac-address").lower()
        if ini.has_option("ethernet", "mtu"):
            nic.mtu = int(ini.get("ethernet", "mtu"))
        for family in ("ipv4", "ipv6"):
            if not ini.has_section(family):
                continue
            method = ini.get(family, "method", fallback="auto")
            if family == "ipv4":
                nic.dhcp4 = method == "auto"
            else:
                nic.dhcp6 = method in ("auto", "dhcp")
                nic.ra = {"auto": True, "dhcp": None}.get(method, False)
            for key, value in ini.items(family):
                if re.fullmatch(r"address\d+", key):
                    address, _, gw = value.partition(",")
                    nic.addresses.add(_iface(address))
                    if gw:
                        nic.gateways.add(gw)
                elif re.fullmatch(r"route\d+", key):
                    dest, via, *_ = value.split(",") + [""]
                    if via:
                        _route(nic, dest, via)
                elif key == "gateway":
                    nic.gateways.add(value)
                elif key == "dns":
                    nic.dns.update(d for d in value.split(";") if d)
    # cloud-init names each keyfile after its interface: cloud-init-<name>.nmconnection
    renamed = Rendered(dns=out.dns)
    for key, nic in out.nics.items():
        match = re.search(r"cloud-init-(.+)\.nmconnection$", key)
        nic.name = match.group(1) if match else key
        renamed.nics[nic.name] = nic
    return renamed


READERS: dict[str, Callable[[dict[str, str]], Rendered]] = {
    "eni": read_eni,
    "netplan": read_netplan,
    "networkd": read_networkd,
    "sysconfig": read_sysconfig,
    "network-manager": read_network_manager,
}


def read(renderer: str, files: dict[str, str]) -> Rendered:
    return READERS[renderer](files)
