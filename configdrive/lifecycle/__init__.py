"""An instance after creation: update its drive (``update``), stop and start its guest
(``power``), compare drives and specs (``diff``), check any drive before boot (``check``)."""

from __future__ import annotations

from configdrive.lifecycle.boots import EVERY_BOOT, SETTINGS, EveryBoot, every_boot
from configdrive.lifecycle.check import (
    PLATFORM_USER_DATA_LIMITS,
    CheckReport,
    Finding,
    SchemaJudge,
    check_drive,
    find_cloud_init,
)
from configdrive.lifecycle.diff import (
    IGNORED_KEYS,
    Change,
    Diff,
    DiffInputError,
    FileChange,
    KeyChange,
    Side,
    diff_json,
    diff_paths,
    diff_trees,
    load_side,
)
from configdrive.lifecycle.patch import PatchResult, patch_network
from configdrive.lifecycle.power import PowerError, start, stop
from configdrive.lifecycle.update import (
    CACHED_CONFIG_DRIVE,
    UpdateError,
    UpdatePlan,
    apply_update,
    plan_update,
    stored_spec,
)

__all__ = [
    "CACHED_CONFIG_DRIVE",
    "EVERY_BOOT",
    "IGNORED_KEYS",
    "PLATFORM_USER_DATA_LIMITS",
    "SETTINGS",
    "Change",
    "CheckReport",
    "Diff",
    "DiffInputError",
    "EveryBoot",
    "FileChange",
    "Finding",
    "KeyChange",
    "PatchResult",
    "PowerError",
    "SchemaJudge",
    "Side",
    "UpdateError",
    "UpdatePlan",
    "apply_update",
    "check_drive",
    "diff_json",
    "diff_paths",
    "diff_trees",
    "every_boot",
    "find_cloud_init",
    "load_side",
    "patch_network",
    "plan_update",
    "start",
    "stop",
    "stored_spec",
]
