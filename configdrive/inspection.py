"""Inspect a drive: summarise it and judge it by the rules cloud-init applies.

The rules come from cloud-init 22.4.2 (``DataSourceConfigDrive``, ``helpers/openstack.py``,
``DataSourceNoCloud``, ``ds-identify``); docs/formats.md lists them. A *problem* is something
that makes a guest reject the drive (cloud-init falls back to the network or disables itself);
a *warning* is something another reader may trip on.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from configdrive.drive import CONFIG_DRIVE_LABEL, NOCLOUD_LABEL, DriveContents

__all__ = ["CLOUD_INIT_VERSIONS", "Inspection", "inspect_contents", "network_file_warning"]

# cloud-init's BaseReader._find_working_version: the versions it knows, newest first.
CLOUD_INIT_VERSIONS = (
    "2018-08-27",
    "2017-02-22",
    "2016-10-06",
    "2016-06-30",
    "2015-10-15",
    "2013-10-17",
    "2013-04-04",
    "2012-08-10",
)


@dataclass
class Inspection:
    """The result of inspecting one drive."""

    kind: str  # "config-drive", "nocloud" or "unknown"
    filesystem: str
    label: str
    size: int
    files: dict[str, int]  # path -> size
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    version_used: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "filesystem": self.filesystem,
            "label": self.label,
            "size": self.size,
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "version_used": self.version_used,
            "summary": self.summary,
            "files": self.files,
        }


INTERFACES = "/etc/network/interfaces"


def network_file_warning(injected_paths: Iterable[str], has_networks: bool) -> str | None:
    """The warning for a spec that injects ``/etc/network/interfaces`` *and* describes
    networks: on ifupdown guests that file replaces the distribution's (and its ``source
    /etc/network/interfaces.d/*``, where cloud-init writes), so the network config cloud-init
    renders from ``network_data.json`` is never used."""
    if not has_networks or INTERFACES not in {"/" + p.lstrip("/") for p in injected_paths}:
        return None
    return (
        f"injects {INTERFACES} and describes networks: on ifupdown guests the injected file "
        "replaces the distribution's (and its `source interfaces.d/*`), so cloud-init's "
        "network config from network_data.json is ignored"
    )


def _json(data: bytes, what: str, problems: list[str]) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{what} is not valid JSON ({exc})")
        return None


def _check_config_drive(files: Mapping[str, bytes], report: Inspection) -> None:
    problems = report.problems
    present = {p.split("/")[1] for p in files if p.startswith("openstack/") and p.count("/") >= 2}
    version = next((v for v in CLOUD_INIT_VERSIONS if v in present), None)
    if version is None and "latest" in present:
        version = "latest"
    if version is None:
        problems.append(
            "no openstack/<version>/ directory cloud-init knows (2012-08-10 … 2018-08-27 or latest)"
        )
        return
    report.version_used = version
    base = f"openstack/{version}"
    raw = files.get(f"{base}/meta_data.json")
    if raw is None:
        problems.append(f"{base}/meta_data.json is missing")
        return
    md = _json(raw, f"{base}/meta_data.json", problems)
    if md is None:
        return
    if not isinstance(md, dict):
        problems.append(f"{base}/meta_data.json must hold a JSON object")
        return
    if not md.get("uuid"):
        problems.append(f"{base}/meta_data.json has no 'uuid' (cloud-init's instance-id)")
    seed = md.get("random_seed")
    if seed is not None:
        try:
            base64.b64decode(seed)
        except (binascii.Error, ValueError, TypeError) as exc:
            problems.append(f"{base}/meta_data.json random_seed is not valid base64 ({exc})")
    for item in md.get("files") or []:
        if isinstance(item, dict) and item.get("path"):
            content = "openstack/" + str(item.get("content_path", "")).lstrip("/")
            if content not in files:
                problems.append(f"injected file {item['path']} points at missing {content}")
    netcfg = md.get("network_config")
    if isinstance(netcfg, dict) and netcfg.get("content_path"):
        content = "openstack/" + str(netcfg["content_path"]).lstrip("/")
        if content not in files:
            problems.append(f"network_config points at missing {content}")
    for name in ("vendor_data.json", "vendor_data2.json", "network_data.json"):
        data = files.get(f"{base}/{name}")
        if data is None:
            continue
        if not data:
            problems.append(f"{base}/{name} is empty (cloud-init rejects empty JSON files)")
            continue
        value = _json(data, f"{base}/{name}", problems)
        if (
            name == "network_data.json"
            and value is not None
            and not isinstance(value, dict | list | str)
        ):
            problems.append(f"{base}/{name} must hold a JSON object")
    ec2 = files.get("ec2/latest/meta-data.json")
    if ec2 is not None:
        value = _json(ec2, "ec2/latest/meta-data.json", problems)
        if value is not None and not isinstance(value, dict):
            problems.append("ec2/latest/meta-data.json must hold a JSON object")
    # every other version directory too: other readers (glean: latest) use them
    for path, data in files.items():
        if path.endswith("/meta_data.json") and not path.startswith(base + "/"):
            other: list[str] = []
            _json(data, path, other)
            report.warnings += other
    if "latest" not in present:
        report.warnings.append("no openstack/latest/ (glean and Proxmox-style readers use it)")
    network = files.get(f"{base}/network_data.json")
    links = _json(network, f"{base}/network_data.json", []) if network else None
    injected = [f.get("path") for f in md.get("files") or [] if isinstance(f, dict)]
    conflict = network_file_warning(
        [p for p in injected if isinstance(p, str)],
        isinstance(links, dict) and bool(links.get("links") or links.get("networks")),
    )
    if conflict:
        report.warnings.append(conflict)
    keys = md.get("public_keys") or {}
    report.summary = {
        "uuid": md.get("uuid"),
        "name": md.get("name"),
        "hostname": md.get("hostname"),
        "availability_zone": md.get("availability_zone"),
        "launch_index": md.get("launch_index"),
        "project_id": md.get("project_id"),
        "keys": sorted(keys) if isinstance(keys, dict) else keys,
        "meta": md.get("meta", {}),
        "injected_files": [f.get("path") for f in md.get("files") or [] if isinstance(f, dict)],
        "user_data_bytes": len(files[f"{base}/user_data"])
        if f"{base}/user_data" in files
        else None,
        "admin_pass": "set" if md.get("admin_pass") else None,
        "versions": sorted(present - {"content"}),
    }


def _check_nocloud(files: Mapping[str, bytes], report: Inspection) -> None:
    for name in ("meta-data", "user-data"):
        if name not in files:
            report.problems.append(
                f"{name} is missing (NoCloud needs both meta-data and user-data)"
            )
    md: Any = {}
    if "meta-data" in files:
        try:
            md = yaml.safe_load(files["meta-data"]) or {}
        except yaml.YAMLError as exc:
            report.problems.append(f"meta-data is not valid YAML ({exc})")
            md = {}
        if not isinstance(md, dict):
            report.problems.append("meta-data must hold a mapping")
            md = {}
        if "instance-id" not in md:
            report.warnings.append("meta-data has no instance-id; cloud-init uses 'nocloud'")
    for name in ("network-config", "vendor-data"):
        if name == "network-config" and files.get(name):
            try:
                yaml.safe_load(files[name])
            except yaml.YAMLError as exc:
                report.problems.append(f"{name} is not valid YAML ({exc})")
    report.summary = {
        "uuid": md.get("instance-id"),
        "hostname": md.get("local-hostname"),
        "keys": len(md.get("public-keys") or []),
        "meta": md.get("meta", {}),
        "user_data_bytes": len(files.get("user-data", b"")),
        "network_config": "network-config" in files,
        "vendor_data": "vendor-data" in files,
    }


def inspect_contents(drive: DriveContents) -> Inspection:
    """Summarise and validate a drive read by :func:`configdrive.drive.read_drive`."""
    report = Inspection(
        kind="unknown",
        filesystem=str(drive.filesystem),
        label=drive.label,
        size=drive.size,
        files={p: len(d) for p, d in drive.files.items()},
    )
    label = drive.label.strip()
    if label in (CONFIG_DRIVE_LABEL, CONFIG_DRIVE_LABEL.upper()):
        report.kind = "config-drive"
        _check_config_drive(drive.files, report)
    elif label.lower() == NOCLOUD_LABEL:
        report.kind = "nocloud"
        _check_nocloud(drive.files, report)
    else:
        report.problems.append(
            f"volume label is {label!r}; guests look for 'config-2' (ConfigDrive) "
            "or 'cidata' (NoCloud)"
        )
        if any(p.startswith("openstack/") for p in drive.files):
            _check_config_drive(drive.files, report)
    return report
