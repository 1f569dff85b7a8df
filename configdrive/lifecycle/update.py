"""Updating a booted instance's metadata: rebuild ``disk.config`` from its stored spec.

``boot`` stores each instance as a self-contained spec (``spec.json``: user data and files
inline, admin password, pinned port ids). :func:`plan_update` merges the changes over it and
renders the new drive. Everything the change does not touch stays as it was: injected files,
the admin password, and the uuid with ``--instance-id keep``. :func:`apply_update` writes the
drive and the spec atomically. For a running guest, it then swaps the CD-ROM's medium
(libvirt ``change-media``, or QMP ``blockdev-change-medium`` for plain QEMU), so that the
next boot, or a ``cloud-init`` re-run in the guest, sees the new drive.

The first-boot rule is explicit:

- ``keep`` (the default): same instance-id. cloud-init applies again only what it runs on
  every boot (:mod:`configdrive.lifecycle.boots` lists those modules per version); users,
  keys, ``runcmd`` and ``write_files`` stay as the first boot left them;
- ``new``: a new uuid, so cloud-init sees a new instance and runs every per-instance module
  again. Unless the user data says otherwise (``ssh_deletekeys: false``), that includes
  regenerating the host keys. ``update`` warns about it.
"""

from __future__ import annotations

import json
import uuid as _uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configdrive.builder import render_for
from configdrive.compute import SPEC_FILE, InstanceRecord, write_instance_spec
from configdrive.drive import DriveFormat, read_drive, write_drive
from configdrive.errors import SpecError
from configdrive.host import HostConfig
from configdrive.lifecycle.diff import FileChange, diff_trees
from configdrive.model import Instance
from configdrive.spec import instance_from_mapping
from configdrive.virt import Backend

__all__ = [
    "InstanceIdRule",
    "UpdateError",
    "UpdatePlan",
    "apply_update",
    "plan_update",
    "stored_spec",
]

InstanceIdRule = str  # "keep" | "new"
RULES = ("keep", "new")


# cloud-init's ConfigDrive datasource (every supported version) trusts its cached copy of the
# drive at boot when the instance-id is the guest's DMI system-uuid (check_instance_id), and
# nova's guests and configdrive's have exactly that; NoCloud finds no instance-id in its seed
# directories, so it reads its drive again on every boot. tune-image's reread-drive step drops
# that cache at boot when a config-2 drive is attached.
CACHED_CONFIG_DRIVE = (
    "--instance-id keep on a config-2 drive: the guest's cloud-init restores its cached copy of "
    "the drive at boot (the instance-id is its DMI system-uuid), so this update reaches it "
    "once that cache is gone: in the guest, `sudo rm /var/lib/cloud/instance/obj.pkl` before "
    "the reboot (no per-instance module runs again), or tune the image with `configdrive "
    "tune-image` (its reread-drive step does that at every boot)"
)


class UpdateError(SpecError):
    """An update asked of an instance that cannot take it (bad input: exit 2); nothing was
    changed."""


@dataclass(frozen=True)
class UpdatePlan:
    """What an update would write: the instance before and after, and the drive's diff."""

    record: InstanceRecord
    before: Instance
    after: Instance
    tree: Mapping[str, bytes] = field(repr=False)
    changes: tuple[FileChange, ...]
    rule: InstanceIdRule
    warnings: tuple[str, ...] = ()

    @property
    def drive(self) -> Path:
        return self.record.path / "disk.config"


def stored_spec(record: InstanceRecord) -> dict[str, Any]:
    """The spec ``boot`` stored for ``record``."""
    path = record.path / SPEC_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UpdateError(
            "instance",
            f"{record.name} has no stored spec ({path})",
            hint="it was booted by an older configdrive; boot it again to update it later",
        ) from None
    if not isinstance(data, dict):
        raise UpdateError("instance", f"{path} does not hold a spec mapping")
    return data


def plan_update(
    host: HostConfig,
    record: InstanceRecord,
    merged: Mapping[str, Any],
    *,
    rule: InstanceIdRule = "keep",
    remove_meta: Sequence[str] = (),
    base: Path | None = None,
) -> UpdatePlan:
    """The update of ``record`` to ``merged`` (the stored spec with the changes over it)."""
    if rule not in RULES:
        raise SpecError("instance_id", f"must be one of {', '.join(RULES)}")
    if record.config_drive is None:
        raise UpdateError(
            "instance",
            f"{record.name} has no config drive to update",
            hint="its metadata comes from the metadata service: register it again there",
        )
    before = instance_from_mapping(stored_spec(record))
    data = dict(merged)
    meta = dict(data.get("meta") or {})
    for key in remove_meta:
        meta.pop(key, None)
    data["meta"] = meta
    data["uuid"] = before.uuid if rule == "keep" else str(_uuid.uuid4())
    after = instance_from_mapping(data, base=base)
    fmt = DriveFormat(record.config_drive)
    tree = render_for(after, fmt, host.render_options())
    current = read_drive(record.path / "disk.config").files
    warnings: list[str] = []
    if rule == "new":
        warnings.append(
            f"--instance-id new: the guest becomes instance {after.uuid} to cloud-init, which "
            "runs every per-instance module again at its next boot, and regenerates its SSH "
            "host keys unless the user data sets ssh_deletekeys: false"
        )
    elif fmt is not DriveFormat.NOCLOUD and record.rereads_drive is not True:
        warnings.append(CACHED_CONFIG_DRIVE)
    return UpdatePlan(record, before, after, tree, diff_trees(current, tree), rule, tuple(warnings))


def apply_update(plan: UpdatePlan, backend: Backend) -> str:
    """Write the plan's drive and spec (each atomically), and swap a running guest's CD-ROM
    medium. Returns how the guest gets the new drive."""
    fmt = DriveFormat(plan.record.config_drive or "iso9660")
    guest = plan.record.guest_spec()
    running = backend.is_running(guest)
    write_drive(plan.tree, plan.drive, fmt, force=True)
    plan.drive.chmod(0o644)  # QEMU may run as another user (libvirt-qemu)
    write_instance_spec(plan.record.path, plan.after)
    if not running:
        return "the guest is stopped: it reads the new drive when it starts"
    if guest.config_drive_vfat:
        return (
            "a VFAT drive is a disk, whose medium cannot be swapped: the guest reads the new "
            "drive after it is stopped and started again"
        )
    # the running QEMU still holds the replaced file open: give it the new one
    backend.change_medium(guest, plan.drive)
    how = "libvirt" if backend.kind.value == "libvirt" else "QMP blockdev-change-medium"
    return f"swapped the running guest's CD-ROM medium ({how})"
