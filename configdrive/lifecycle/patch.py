"""Re-mastering someone else's config drive with a new network description (Ironic's case).

A platform ships a drive whose ``network_data.json`` is empty or wrong. :func:`patch_network`
reads the drive in-process (ISO9660 or VFAT), renders ``network_data.json`` from the ports
given, exactly as nova would for an instance with those ports, and writes every
``openstack/<version>/`` directory that carries the file under nova's version gates (Liberty,
2015-10-15, and later). The new drive has the same filesystem and label, and every other file
is byte-identical: the result is read back and compared before it is moved into place.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configdrive.drive import DriveFormat, Filesystem, read_drive, write_drive
from configdrive.errors import DriveError, InvalidDrive
from configdrive.render import LIBERTY, OPENSTACK_VERSIONS, network_data
from configdrive.spec import instance_from_mapping

__all__ = ["PatchResult", "patch_network"]

NETWORK_FILE = "network_data.json"


@dataclass(frozen=True)
class PatchResult:
    """What :func:`patch_network` wrote: the new drive and the files it replaced or added."""

    path: Path
    label: str
    filesystem: str
    written: tuple[str, ...]


def _gated(version: str) -> bool:
    if version == "latest":
        return True
    if version not in OPENSTACK_VERSIONS:
        return False
    return OPENSTACK_VERSIONS.index(version) >= OPENSTACK_VERSIONS.index(LIBERTY)


def _meta(files: Mapping[str, bytes]) -> dict[str, Any]:
    for version in ("latest", *reversed(OPENSTACK_VERSIONS)):
        raw = files.get(f"openstack/{version}/meta_data.json")
        if raw is None:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise InvalidDrive("the drive has no readable openstack/<version>/meta_data.json")


def patch_network(
    drive: str | os.PathLike[str],
    ports: Sequence[Mapping[str, Any]],
    output: str | os.PathLike[str],
    *,
    force: bool = False,
) -> PatchResult:
    """Write ``drive`` again at ``output`` with ``network_data.json`` rendered from ``ports``
    (spec ``networks`` entries: ``mac``, ``subnets``, …)."""
    source = read_drive(drive)
    if source.label.strip().lower() != "config-2":
        raise InvalidDrive(
            f"{drive} is labelled {source.label!r}: only config drives (config-2) carry "
            "network_data.json"
        )
    if not ports:
        raise DriveError("--patch needs at least one --nic to describe")
    md = _meta(source.files)
    spec: dict[str, Any] = {"name": str(md.get("name") or "instance"), "networks": list(ports)}
    if md.get("uuid"):
        spec["uuid"] = str(md["uuid"])
    document = json.dumps(network_data(instance_from_mapping(spec)) or {}).encode()
    versions = sorted({p.split("/")[1] for p in source.files if p.startswith("openstack/")})
    targets = [f"openstack/{v}/{NETWORK_FILE}" for v in versions if v != "content" and _gated(v)]
    if not targets:
        raise InvalidDrive("the drive has no openstack/<version>/ directory of Liberty or later")
    tree = dict(source.files)
    for path in targets:
        tree[path] = document
    fmt = DriveFormat.VFAT if source.filesystem is Filesystem.VFAT else DriveFormat.ISO9660
    vfat_size = source.size if source.filesystem is Filesystem.VFAT else None
    target = Path(output)
    staged = target.with_name(f".{target.name}.patch")
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    try:
        write_drive(tree, staged, fmt, vfat_size=vfat_size, label=source.label)
        again = read_drive(staged)
        changed = sorted(
            p
            for p in set(again.files) | set(source.files)
            if p not in targets and again.files.get(p) != source.files.get(p)
        )
        if changed or again.label != source.label:
            raise DriveError(
                f"re-mastering would change {', '.join(changed) or 'the label'}; nothing written"
            )
        if target.exists() and not force:
            raise DriveError(
                f"{target} already exists; a drive is not overwritten",
                hint="pass --force to replace it",
            )
        os.replace(staged, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
    return PatchResult(target, source.label, str(source.filesystem), tuple(targets))
