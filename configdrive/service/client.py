"""The admin API's client side: an instance as a self-contained spec, and (un)registration.

``configdrive register`` and ``configdrive boot`` (when the host config names
``metadata_admin_url``) both send an instance through :class:`AdminClient`; both turn it into
the request body with :func:`registration_payload`, so the two can never disagree.

The admin API accepts no file references and must build exactly the instance the caller
built (the one whose drive it may also have written). :func:`instance_spec` therefore
writes every field of a validated :class:`~configdrive.model.Instance` back as a spec
mapping: contents inline (user data and injected files as base64, keys as text) and every
value the validator would otherwise draw at random (uuid, project id, port and network ids)
pinned, so ``instance_from_mapping(instance_spec(i)) == i``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from configdrive.errors import ConfigDriveError
from configdrive.model import Device, DeviceKind, Instance, Networking, Port, Subnet
from configdrive.spec import sanitize_hostname

__all__ = [
    "ADMIN_TOKEN_ENV",
    "AdminClient",
    "RegistrationError",
    "instance_spec",
    "registration_payload",
]

ADMIN_TOKEN_ENV = "CONFIGDRIVE_ADMIN_TOKEN"


class RegistrationError(ConfigDriveError):
    """The metadata service's admin API refused a request (``status``) or could not be
    reached (``status`` None)."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None):
        super().__init__(message, hint=hint)
        self.status = status


def _subnet(subnet: Subnet) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": subnet.cidr, "ips": list(subnet.ips)}
    if subnet.gateway is not None:
        out["gateway"] = subnet.gateway
    if subnet.dns:
        out["dns"] = list(subnet.dns)
    if subnet.routes:
        out["routes"] = [{"cidr": r.cidr, "gateway": r.gateway} for r in subnet.routes]
    if subnet.dhcp:
        out["dhcp"] = True
    if subnet.ipv6_address_mode is not None:
        out["ipv6_address_mode"] = subnet.ipv6_address_mode
    return out


def _port(port: Port) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mac": port.mac,
        "id": port.id,
        "network_id": port.network_id,
        "vif_type": port.vif_type,
        "subnets": [_subnet(s) for s in port.subnets],
    }
    if port.devname is not None:
        out["devname"] = port.devname
    if port.mtu is not None:
        out["mtu"] = port.mtu
    return out


def _device(device: Device) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(device.kind), "bus": str(device.bus)}
    if device.tags:
        out["tags"] = list(device.tags)
    if device.kind is DeviceKind.NIC:
        out["mac"] = device.mac
    for key, value in (
        ("address", device.address),
        ("vlan", device.vlan),
        ("vf_trusted", device.vf_trusted),
        ("serial", device.serial),
        ("path", device.path),
        ("share_id", device.share_id),
        ("tag", device.share_tag),
    ):
        if value is not None:
            out[key] = value
    return out


def instance_spec(instance: Instance) -> dict[str, Any]:
    """A JSON-ready spec mapping that builds exactly ``instance`` again (see the module doc)."""
    spec: dict[str, Any] = {
        "name": instance.name,
        "uuid": instance.uuid,
        "dhcp_domain": instance.dhcp_domain,
        "project_id": instance.project_id,
        "launch_index": instance.launch_index,
        "flavor": instance.flavor,
        "security_groups": list(instance.security_groups),
        "root_device_name": instance.root_device_name,
        "meta": dict(instance.meta),
        "devices": [_device(d) for d in instance.devices],
        "dedicated_cpus": sorted(instance.dedicated_cpus),
        "vendor_data2": dict(instance.vendor_data2),
        "boot_source": str(instance.boot_source),
        "block_devices": [
            {"type": str(d.kind), "device": d.device} for d in instance.block_devices
        ],
    }
    # a requested hostname is validated as nova's API does; one derived from the name (which
    # may hold latin-1 letters the API refuses) is derived again
    if instance.hostname != sanitize_hostname(instance.name, default=f"Server-{instance.uuid}"):
        spec["hostname"] = instance.hostname
    if instance.networking is not Networking.AUTO:  # absent: a NIC no spec describes
        spec["networks"] = [_port(p) for p in instance.ports] or str(Networking.NONE)
    if instance.key_pairs:
        spec["keys"] = [
            {"name": k.name, "public_key": k.public_key, "type": str(k.type)}
            for k in instance.key_pairs
        ]
    if instance.user_data is not None:
        spec["user_data_base64"] = base64.b64encode(instance.user_data).decode()
    if instance.files:  # a list keeps nova's order (and a path given twice)
        spec["files"] = [
            {"path": f.path, "content_base64": base64.b64encode(f.content).decode()}
            for f in instance.files
        ]
    if instance.vendor_data is not None:
        spec["vendor_data"] = dict(instance.vendor_data)
    for key, value in (
        ("availability_zone", instance.availability_zone),
        ("admin_pass", instance.admin_pass),
        ("ami_id", instance.ami_id),
        ("image_id", instance.image_id),
        ("kernel_id", instance.kernel_id),
        ("ramdisk_id", instance.ramdisk_id),
        ("reservation_id", instance.reservation_id),
        ("ec2_instance_id", instance.ec2_instance_id),
        ("floating_ip", instance.floating_ip),
    ):
        if value is not None:
            spec[key] = value
    return spec


def registration_payload(instance: Instance, imds: str = "optional") -> dict[str, Any]:
    """The body of ``POST /v1/instances`` for ``instance``."""
    return {"spec": instance_spec(instance), "imds": imds}


@dataclass(frozen=True)
class AdminClient:
    """A blocking client of one metadata service's admin API (``configdrive serve``)."""

    url: str
    token: str = field(repr=False)
    timeout: float = 10.0

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON or None). 404 is returned, every
        other error status raises :class:`RegistrationError`."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:  # no proxy from the environment: the admin token goes to this URL only
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            with exc:
                text = exc.read().decode("utf-8", "replace").strip()
            if exc.code == 404:
                return 404, None
            hint = None
            try:
                answer = json.loads(text)
                text, hint = str(answer.get("error", text)), answer.get("hint")
            except (ValueError, AttributeError):
                pass
            if exc.code == 401:
                hint = f"{ADMIN_TOKEN_ENV} must equal the service's admin_token"
            raise RegistrationError(
                f"metadata service at {self.url} refused {method} {path}: {exc.code} {text}",
                hint=hint,
                status=exc.code,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise RegistrationError(
                f"cannot reach the metadata service's admin API at {self.url}: {reason}",
                hint="is `configdrive serve` running with --admin-listen at that address?",
            ) from None

    def register(
        self, instance: Instance, imds: str = "optional", *, replace: bool = False
    ) -> dict[str, Any]:
        """Register ``instance`` (``POST``: refused with 409 when its uuid is registered) or,
        with ``replace``, create or replace it (``PUT``); returns the service's description."""
        payload = registration_payload(instance, imds)
        if replace:
            path = f"/v1/instances/{urllib.parse.quote(instance.uuid, safe='')}"
            status, answer = self._call("PUT", path, payload)
        else:
            path = "/v1/instances"
            status, answer = self._call("POST", path, payload)
        if status == 404 or not isinstance(answer, dict):
            raise RegistrationError(
                f"{self.url} is not a metadata service's admin API ({path}: {status})",
                hint="give the admin listener's URL (configdrive serve --admin-listen)",
            )
        return answer

    def unregister(self, uuid: str) -> bool:
        """Remove an instance; False when the service did not know it (404)."""
        status, _ = self._call("DELETE", f"/v1/instances/{urllib.parse.quote(uuid, safe='')}")
        return status != 404

    def show(self, uuid: str) -> dict[str, Any] | None:
        """The service's description of an instance, or None when it does not know it."""
        status, answer = self._call("GET", f"/v1/instances/{urllib.parse.quote(uuid, safe='')}")
        return answer if status != 404 and isinstance(answer, dict) else None
