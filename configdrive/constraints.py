"""Value formats nova and neutron accept, as their own code checks them.

Each check returns the value as nova stores it (PCI addresses lowercased, for instance) or
raises :class:`SpecError` naming the rule. The sources, all nova 34.0.0 unless noted:

- server and availability-zone names: ``nova/api/validation/parameter_types.py``
  (``valid_name_regex``, ``valid_az_name_regex``): printable characters of the Basic
  Multilingual Plane, no leading or trailing whitespace; a zone name has no ``:``;
- requested hostnames: the API schema of microversion 2.94 (``parameter_types.fqdn``);
- device bus addresses: ``nova/objects/fields.py`` (``USBAddress``, ``SCSIAddress``,
  ``IDEAddress``, ``XenAddress``: ``re.match``, so only a prefix must match, and the value is kept
  as given) and oslo.versionedobjects' ``PCIAddress`` (lowercased, whole string);
- EC2 ids: ``nova/objects/ec2.py`` (``<type>-%08x`` of an integer);
- SLAAC addresses: neutron's EUI-64 address of the port's MAC on the subnet's prefix.

tests/test_nova_oracle.py checks every one of these against nova's own code.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata

from configdrive.errors import SpecError
from configdrive.model import DeviceBus

__all__ = [
    "az_name",
    "bus_address",
    "ec2_id",
    "eui64_address",
    "requested_hostname",
    "server_name",
]


def _printable(char: str) -> bool:
    # parameter_types._is_printable: not "other" (C*), no separator but a space (Zs)
    category = unicodedata.category(char)
    return not category.startswith("C") and (not category.startswith("Z") or category == "Zs")


@functools.cache
def _name_rule(exclude: str) -> re.Pattern[str]:
    """nova's name regex: every character printable, the first and last not a space. nova
    builds its character ranges over U+0000..U+FFFE only, so nothing beyond the BMP matches."""

    def ok(char: str, edge: bool) -> bool:
        if char in exclude or not _printable(char):
            return False
        return not (edge and unicodedata.category(char) == "Zs")

    def ranges(edge: bool) -> str:
        out = []
        start = None
        for code in range(0xFFFF + 1):
            inside = code < 0xFFFF and ok(chr(code), edge)
            if inside and start is None:
                start = code
            elif not inside and start is not None:
                out.append(f"\\U{start:08x}-\\U{code - 1:08x}")
                start = None
        return "".join(out)

    edge, middle = ranges(True), ranges(False)
    return re.compile(f"^(?:[{edge}](?:[{middle}]*[{edge}])?)?$")


def server_name(text: str, field: str, max_chars: int) -> str:
    """A server (display) name: 1..``max_chars`` printable characters, no edge whitespace.

    nova checks with ``re.search`` and ``$``, which also matches before one final newline, then
    strips the name (``normalize_name``): ``"web\n"`` is accepted as ``"web"``.
    """
    if not text:
        raise SpecError(field, "must not be empty")
    if len(text) > max_chars:
        raise SpecError(field, f"is longer than {max_chars} characters")
    if not _name_rule("").search(text):
        raise SpecError(
            field,
            f"{text[:40]!r} is not a name nova accepts (printable characters of the Basic "
            "Multilingual Plane, no leading or trailing whitespace)",
        )
    return text.strip()


def az_name(text: str, field: str) -> str:
    """An availability zone name: like a server name, at most 255, and without ``:``."""
    if not text or len(text) > 255:
        raise SpecError(field, "must be 1 to 255 characters")
    if not _name_rule(":").fullmatch(text):
        raise SpecError(
            field,
            f"{text[:40]!r} is not a zone name nova accepts (printable characters but ':', "
            "no leading or trailing whitespace)",
        )
    return text


_FQDN = re.compile(r"^[a-zA-Z0-9-._]*$")


def requested_hostname(text: str, field: str) -> str:
    """A hostname requested at boot (API >= 2.90; FQDNs from 2.94): kept exactly as given."""
    if not 1 <= len(text) <= 255 or not _FQDN.match(text):
        raise SpecError(
            field,
            f"{text[:40]!r} is not a hostname nova accepts "
            "(1 to 255 characters of A-Z a-z 0-9 '-' '.' '_')",
        )
    return text


# nova.objects.fields AddressBase subclasses use re.match: a matching prefix is enough.
_BUS_PATTERNS = {
    DeviceBus.USB: "[a-f0-9]+:[a-f0-9]+",
    DeviceBus.SCSI: "[a-f0-9]+:[a-f0-9]+:[a-f0-9]+:[a-f0-9]+",
    DeviceBus.IDE: "[0-1]:[0-1]",
    DeviceBus.XEN: "(00[0-9]{2}00)|[1-9][0-9]+",
}
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f].[0-7]$")  # oslo PCIAddress, as is


def bus_address(bus: DeviceBus, address: str, field: str) -> str:
    """A device's address on ``bus`` as nova's field stores it, or SpecError."""
    if bus is DeviceBus.NONE:
        raise SpecError(field, "a device without a bus has no address (nova shows 'none')")
    if bus is DeviceBus.PCI:
        lowered = address.lower()
        if _PCI.match(lowered):
            return lowered
        raise SpecError(field, f"{address!r} is not a PCI address (dddd:bb:ss.f, hex)")
    if re.match(_BUS_PATTERNS[bus], address):
        return address
    raise SpecError(field, f"{address!r} is not a {bus} address (nova: {_BUS_PATTERNS[bus]})")


def ec2_id(text: str, prefix: str, field: str) -> str:
    """An EC2 id as nova prints one: ``<prefix>-%08x`` of a non-negative integer."""
    if not re.fullmatch(rf"{prefix}-(?:[0-9a-f]{{8}}|[1-9a-f][0-9a-f]{{8,}})", text):
        raise SpecError(field, f"{text!r} is not an EC2 id ({prefix}- and 8 or more hex digits)")
    return text


def eui64_address(cidr: str, mac: str) -> str:
    """The address neutron gives a port on a SLAAC or DHCPv6-stateless subnet (EUI-64)."""
    net = ipaddress.IPv6Network(cidr)
    raw = bytearray(int(part, 16) for part in mac.split(":"))
    raw[0] ^= 0x02
    interface_id = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(net.network_address + int.from_bytes(interface_id, "big"))
