"""An instance's drive after creation: compare drives and specs (``diff``); updates and the
pre-flight check join here."""

from __future__ import annotations

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

__all__ = [
    "IGNORED_KEYS",
    "Change",
    "Diff",
    "DiffInputError",
    "FileChange",
    "KeyChange",
    "Side",
    "diff_json",
    "diff_paths",
    "diff_trees",
    "load_side",
]
