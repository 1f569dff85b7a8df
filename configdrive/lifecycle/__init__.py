"""An instance's drive after creation: compare drives and specs (``diff``), check any drive
before boot (``check``); updates join here."""

from __future__ import annotations

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

__all__ = [
    "IGNORED_KEYS",
    "PLATFORM_USER_DATA_LIMITS",
    "Change",
    "CheckReport",
    "Diff",
    "DiffInputError",
    "FileChange",
    "Finding",
    "KeyChange",
    "PatchResult",
    "SchemaJudge",
    "Side",
    "check_drive",
    "diff_json",
    "diff_paths",
    "diff_trees",
    "find_cloud_init",
    "load_side",
    "patch_network",
]
