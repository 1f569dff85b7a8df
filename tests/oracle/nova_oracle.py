"""nova 34.0.0 as an oracle: build a config drive tree with nova's own code.

Runs under the nova venv's python (scripts/setup-nova), never under the project's: it imports
nothing from configdrive. It is a persistent subprocess speaking JSON lines on stdin/stdout so
that a test run pays nova's import once (tests/test_nova_oracle.py starts it):

    -> {"op": "render", "case": {...}}      <- {"ok": true, "files": [[path, base64], ...]}
    -> {"op": "validate", "kind": ..., "value": ...}
                                            <- {"ok": true, "accepted": bool, "value": ...}
    <- {"ok": false, "error": "<traceback>"} when nova raised

"render" builds REAL nova objects the way nova builds them for a booted server: an
objects.Instance (flavor, keypairs, ec2 ids, device metadata, NUMA topology, ...), a
nova.network.model.NetworkInfo shaped as nova/network/neutron.py builds it from neutron's port,
subnet and floating IP answers, block device mappings as the compute API creates them; the
hostname and the availability zone are set by nova's own compute API and AZ code. It runs
nova.api.metadata.base.InstanceMetadata through nova.virt.configdrive.ConfigDriveBuilder and
returns the builder's staged files; with "iso" it also makes the ISO with genisoimage through
the builder. Mocked are only nova's database (EC2/S3 id mappings, block device mapping rows,
host aggregates) and neutron's security group lookup; StaticJSON reads a real file and
DynamicJSON makes real HTTP requests to a server on loopback.

The case is a plain description of the instance (see tests/test_nova_oracle.py ``nova_case``).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import nova.conf
from nova import objects

CONF = nova.conf.CONF


def _setup() -> None:
    CONF([], project="nova", default_config_files=[])
    objects.register_all()


# ---------------------------------------------------------------------------------------------
# dynamic vendordata: a real HTTP service on loopback, one path per provider


class _Providers:
    answers: dict[str, bytes] = {}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = _Providers.answers.get(self.path.lstrip("/"))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _vendordata_server() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------------------------------------
# the mocked database


def _db_row(**values: Any) -> dict[str, Any]:
    row = {"created_at": None, "updated_at": None, "deleted_at": None, "deleted": False}
    row.update(values)
    return row


class _Database:
    """EC2 instance and S3 image mappings: the integer ids nova's DB would have assigned."""

    def __init__(self, instance_ids: dict[str, int], image_ids: dict[str, int]) -> None:
        self.instance_ids = instance_ids
        self.image_ids = image_ids

    def ec2_instance_get_by_uuid(self, context: Any, uuid: str) -> dict[str, Any]:
        return _db_row(id=self.instance_ids[uuid], uuid=uuid)

    def s3_image_get_by_uuid(self, context: Any, uuid: str) -> dict[str, Any]:
        return _db_row(id=self.image_ids[uuid], uuid=uuid)


# ---------------------------------------------------------------------------------------------
# network info, as nova/network/neutron.py builds it


def _network_info(case: dict[str, Any]) -> Any:
    from nova.network import model

    vifs = []
    for port in case["ports"]:
        # _nw_info_get_ips: the port's fixed IPs, each with its floating IPs
        fixed_ips = []
        for subnet in port["subnets"]:
            for address in subnet["ips"]:
                fixed = model.FixedIP(address=address)
                for floating in port.get("floating_ips", {}).get(address, []):
                    fixed.add_floating_ip(model.IP(address=floating, type="floating"))
                fixed_ips.append(fixed)
        # _get_subnets_from_port: neutron's subnets of the port's fixed IPs
        subnets = []
        for subnet in port["subnets"]:
            values: dict[str, Any] = {
                "cidr": subnet["cidr"],
                "gateway": model.IP(address=subnet["gateway"], type="gateway"),
                "enable_dhcp": False,
            }
            if subnet["ipv6_address_mode"]:
                values["ipv6_address_mode"] = subnet["ipv6_address_mode"]
            if subnet["dhcp_server"]:
                values["dhcp_server"] = subnet["dhcp_server"]
            if subnet["enable_dhcp"]:
                values["enable_dhcp"] = True
            built = model.Subnet(**values)
            for dns in subnet["dns"]:
                built.add_dns(model.IP(address=dns, type="dns"))
            for cidr, nexthop in subnet["routes"]:
                gateway = model.IP(address=nexthop, type="gateway")
                built.add_route(model.Route(cidr=cidr, gateway=gateway))
            subnets.append(built)
        # _nw_info_get_subnets: a subnet's ips are the fixed IPs inside it
        for built in subnets:
            built["ips"] = [ip for ip in fixed_ips if ip.is_in_subnet(built)]
        # _nw_info_build_network
        vif_type = port["vif_type"]
        bridge = ovs_interfaceid = None
        if vif_type in (model.VIF_TYPE_OVS, model.VIF_TYPE_AGILIO_OVS):
            bridge, ovs_interfaceid = CONF.neutron.ovs_bridge, port["id"]
        elif vif_type == model.VIF_TYPE_DVS:
            bridge = port["network_id"]
        if bridge is not None and vif_type != model.VIF_TYPE_DVS:
            bridge = bridge[: model.NIC_NAME_LEN]
        network = model.Network(
            id=port["network_id"],
            bridge=bridge,
            injected=CONF.flat_injected,
            label="net-" + port["network_id"][:8],
            tenant_id=case["project_id"],
            mtu=port["mtu"],
            physical_network=None,
            tunneled=True,
        )
        network["subnets"] = subnets
        # _build_vif_model
        devname = ("tap" + port["id"])[: model.NIC_NAME_LEN]
        vifs.append(
            model.VIF(
                id=port["id"],
                address=port["mac"],
                network=network,
                vnic_type=model.VNIC_TYPE_NORMAL,
                type=vif_type,
                profile={},
                details={},
                ovs_interfaceid=ovs_interfaceid,
                devname=devname,
                active=True,
                preserve_on_delete=False,
                delegate_create=True,
            )
        )
    return model.NetworkInfo(vifs)


# ---------------------------------------------------------------------------------------------
# the instance


def _bus(device: dict[str, Any]) -> Any:
    kinds = {
        "pci": objects.PCIDeviceBus,
        "usb": objects.USBDeviceBus,
        "scsi": objects.SCSIDeviceBus,
        "ide": objects.IDEDeviceBus,
        "xen": objects.XenDeviceBus,
    }
    bus = kinds[device["bus"]]()
    if device["address"] is not None:
        bus.address = device["address"]
    return bus


def _device_metadata(case: dict[str, Any]) -> Any:
    devices = []
    for device in case["devices"]:
        if device["type"] == "nic":
            built = objects.NetworkInterfaceMetadata(mac=device["mac"])
            if device["vlan"] is not None:
                built.vlan = device["vlan"]
            if device["vf_trusted"] is not None:
                built.vf_trusted = device["vf_trusted"]
        elif device["type"] == "disk":
            built = objects.DiskMetadata()
            if device["serial"] is not None:
                built.serial = device["serial"]
            if device["path"] is not None:
                built.path = device["path"]
        else:
            built = objects.ShareMetadata(share_id=device["share_id"], tag=device["share_tag"])
        if device["bus"] != "none":
            built.bus = _bus(device)
        if device["tags"]:
            built.tags = list(device["tags"])
        devices.append(built)
    return objects.InstanceDeviceMetadata(devices=devices) if devices else None


def _bdms(context: Any, case: dict[str, Any]) -> Any:
    """The instance's block device mappings as the compute API creates them: the root (an
    image to a local disk, or a volume), then the others."""
    root = case["root_device_name"]
    rows = []
    if case["image_ref"]:
        rows.append(
            objects.BlockDeviceMapping(
                context,
                source_type="image",
                destination_type="local",
                image_id=case["image_ref"],
                boot_index=0,
                device_name=root,
                device_type="disk",
                delete_on_termination=True,
            )
        )
    else:
        rows.append(
            objects.BlockDeviceMapping(
                context,
                source_type="volume",
                destination_type="volume",
                volume_id="00000000-0000-4000-8000-000000000001",
                boot_index=0,
                device_name=root,
                device_type="disk",
            )
        )
    for index, device in enumerate(case["block_devices"]):
        if device["type"] == "volume":
            row = objects.BlockDeviceMapping(
                context,
                source_type="volume",
                destination_type="volume",
                volume_id=f"00000000-0000-4000-8000-{index + 2:012d}",
                boot_index=None,
            )
        else:  # block_device.create_blank_bdm
            row = objects.BlockDeviceMapping(
                context,
                source_type="blank",
                destination_type="local",
                guest_format="swap" if device["type"] == "swap" else None,
                boot_index=-1,
                volume_size=1,
                device_type="disk",
                delete_on_termination=True,
            )
        row.device_name = device["device"]
        rows.append(row)
    return objects.BlockDeviceMappingList(objects=rows)


def _instance(context: Any, case: dict[str, Any]) -> Any:
    from nova import availability_zones
    from nova.compute import api as compute_api

    flavor = objects.Flavor(
        id=1, flavorid="1", name=case["flavor"], memory_mb=512, vcpus=1, root_gb=1,
        ephemeral_gb=0, swap=0, rxtx_factor=1.0, vcpu_weight=0, disabled=False,
        is_public=True, extra_specs={}, description=None,
    )  # fmt: skip
    instance = objects.Instance(
        context,
        uuid=case["uuid"],
        display_name=case["display_name"],
        project_id=case["project_id"],
        user_id="fake-user",
        launch_index=case["launch_index"],
        reservation_id=case["reservation_id"],
        image_ref=case["image_ref"],
        kernel_id=case["kernel_id"] or "",
        ramdisk_id=case["ramdisk_id"] or "",
        root_device_name=case["root_device_name"],
        default_ephemeral_device=None,
        default_swap_device=None,
        user_data=case["user_data"],
        metadata=dict(case["metadata"]),
        system_metadata={},
        flavor=flavor,
        key_name=case["key"]["name"] if case["key"] else None,
        key_data=case["key"]["public_key"] if case["key"] else None,
        keypairs=objects.KeyPairList(
            objects=[
                objects.KeyPair(
                    name=case["key"]["name"],
                    public_key=case["key"]["public_key"],
                    type=case["key"]["type"],
                    user_id="fake-user",
                )
            ]
            if case["key"]
            else []
        ),
        device_metadata=_device_metadata(case),
        numa_topology=None,
        host="compute-1",
        availability_zone=case["availability_zone"],
        config_drive="True",
    )
    if case["dedicated_cpus"]:
        # a two-node host numbering its CPUs alternately: a CPU belongs to one cell, whose
        # pcpuset is a set (a CPU given twice lands twice in the same set)
        cells = [[c for c in case["dedicated_cpus"] if c % 2 == node] for node in (0, 1)]
        instance.numa_topology = objects.InstanceNUMATopology(
            instance_uuid=case["uuid"],
            cells=[
                objects.InstanceNUMACell(
                    id=node, cpuset=set(), pcpuset=set(cpus), memory=256, cpu_policy="dedicated"
                )
                for node, cpus in enumerate(cells)
                if cpus
            ],
        )
    # compute API: a requested hostname is kept, else it is derived from the display name
    if case["requested_hostname"] is not None:
        instance.hostname = case["requested_hostname"]
    compute_api.API._populate_instance_names(None, instance, 1, 0)
    # conductor: a server that asked for no zone gets its host's (mocked: no zone aggregates)
    if not instance.availability_zone:
        with mock.patch.object(objects.AggregateList, "get_by_host", return_value=[]):
            instance.availability_zone = availability_zones.get_host_availability_zone(
                context, instance.host
            )
    # libvirt driver: _get_guest_storage_config sets default_swap_device for a swap disk
    swaps = [d["device"] for d in case["block_devices"] if d["type"] == "swap"]
    if swaps:
        instance.default_swap_device = swaps[-1]
    return instance


def render(case: dict[str, Any], workdir: str) -> dict[str, Any]:
    from nova import context as nova_context
    from nova.api.metadata import base as metadata_base
    from nova.api.metadata import vendordata_dynamic
    from nova.db.main import api as db
    from nova.objects import ec2 as ec2_objects
    from nova.virt import configdrive

    conf = case["conf"]
    CONF.set_override("dhcp_domain", conf["dhcp_domain"], "api")
    CONF.set_override("config_drive_skip_versions", conf["config_drive_skip_versions"], "api")
    CONF.set_override("default_availability_zone", conf["default_availability_zone"])
    CONF.set_override("vendordata_providers", ["StaticJSON", "DynamicJSON"], "api")
    static_path = None
    if conf["vendordata_static"] is not None:
        static_path = os.path.join(workdir, "vendor_data.json")
        with open(static_path, "w", encoding="utf-8") as f:
            json.dump(conf["vendordata_static"], f)
    CONF.set_override("vendordata_jsonfile_path", static_path, "api")
    _Providers.answers = {
        name: json.dumps(value).encode() for name, value in conf["vendordata_dynamic"]
    }
    base_url = case["_vendordata_url"]
    targets = [f"{name}@{base_url}/{name}" for name, _ in conf["vendordata_dynamic"]]
    CONF.set_override("vendordata_dynamic_targets", targets, "api")
    CONF.set_override("config_drive_format", "iso9660")
    CONF.set_override("mkisofs_cmd", "genisoimage")
    ec2_objects._CACHE = None  # the memoized EC2 ids of earlier cases
    vendordata_dynamic.service_auth._SESSIONS.clear()

    context = nova_context.get_admin_context()
    database = _Database(
        {k: int(v) for k, v in case["db"]["ec2_instance_ids"].items()},
        {k: int(v) for k, v in case["db"]["s3_image_ids"].items()},
    )
    files = [(path, base64.b64decode(data)) for path, data in case["files"]]
    extra_md = {"admin_pass": case["admin_pass"]} if case["admin_pass"] else {}
    groups = [{"name": name} for name in case["security_groups"]]
    with (
        mock.patch.object(db, "ec2_instance_get_by_uuid", database.ec2_instance_get_by_uuid),
        mock.patch.object(db, "s3_image_get_by_uuid", database.s3_image_get_by_uuid),
        mock.patch.object(
            objects.BlockDeviceMappingList,
            "get_by_instance_uuid",
            side_effect=lambda ctxt, uuid: _bdms(context, case),
        ),
        mock.patch.object(
            metadata_base.security_group_api,
            "get_instance_security_groups",
            return_value=groups,
        ),
    ):
        instance = _instance(context, case)
        instance_md = metadata_base.InstanceMetadata(
            instance, content=files, extra_md=extra_md, network_info=_network_info(case)
        )
        with configdrive.ConfigDriveBuilder(instance_md=instance_md) as builder:
            staged = [(p, d.encode() if isinstance(d, str) else d) for p, d in builder.mdfiles]
            iso = None
            if case.get("iso"):
                iso = os.path.join(workdir, "nova-disk.config")
                builder.make_drive(iso)
    return {
        "files": [[p, base64.b64encode(d).decode()] for p, d in staged],
        "iso": iso,
        "hostname": instance.hostname,
    }


# ---------------------------------------------------------------------------------------------
# nova's input rules, for the spec validator to be compared with


def validate(kind: str, value: Any) -> dict[str, Any]:
    """nova's verdict on one input value, and the value as nova stores it."""
    import jsonschema
    from nova.api.openstack import common
    from nova.api.validation import parameter_types, validators
    from nova.objects import fields

    schemas = {
        "name": parameter_types.name,  # server create: display name (then normalize_name)
        "az_name": parameter_types.az_name,
        "hostname": parameter_types.fqdn,  # server create, microversion 2.94
    }
    address_fields = {
        "pci": fields.PCIAddressField,
        "usb": fields.USBAddressField,
        "scsi": fields.SCSIAddressField,
        "ide": fields.IDEAddressField,
        "xen": fields.XenAddressField,
        "mac": fields.MACAddressField,
    }
    if kind in schemas:
        try:
            jsonschema.validate(value, schemas[kind], format_checker=validators._FORMAT_CHECKER)
        except jsonschema.ValidationError:
            return {"accepted": False, "value": None}
        return {
            "accepted": True,
            "value": common.normalize_name(value) if kind == "name" else value,
        }
    if kind in address_fields:
        try:
            stored = address_fields[kind]().coerce(None, "address", value)
        except ValueError:
            return {"accepted": False, "value": None}
        return {"accepted": True, "value": stored}
    raise ValueError(f"unknown kind {kind!r}")


def main() -> int:
    _setup()
    url = _vendordata_server()
    workdir = tempfile.mkdtemp(prefix="nova-oracle-")
    out = sys.stdout
    sys.stdout = sys.stderr  # anything nova prints must not corrupt the protocol
    from nova import version

    out.write(json.dumps({"ok": True, "ready": True, "nova": version.version_string()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request["op"] == "render":
                case = dict(request["case"], _vendordata_url=url)
                answer = {"ok": True, **render(case, request.get("workdir") or workdir)}
            elif request["op"] == "validate":
                answer = {"ok": True, **validate(request["kind"], request["value"])}
            else:
                raise ValueError(f"unknown op {request['op']!r}")
        except Exception:
            answer = {"ok": False, "error": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
