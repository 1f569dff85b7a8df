"""Comparing config drives and instance specs: per file, and per key inside JSON files.

Either side is a drive image (ISO9660 or VFAT, ours or anyone's: read in-process) or an
instance spec (YAML/JSON), which is rendered into the tree a drive of the other side's kind
would carry. ``random_seed`` is ignored: nova draws it afresh for every drive.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from configdrive.builder import render_for
from configdrive.drive import DriveFormat, read_drive
from configdrive.drive.iso9660 import is_iso9660
from configdrive.drive.vfat import is_vfat
from configdrive.errors import ConfigDriveError, InvalidDrive
from configdrive.spec import instance_from_mapping, load_spec

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

IGNORED_KEYS = frozenset({"random_seed"})
# NoCloud's structured files are YAML (meta-data may be JSON, which is YAML too)
_YAML_FILES = frozenset({"meta-data", "network-config", "vendor-data"})
_ABSENT = object()


class DiffInputError(ConfigDriveError):
    """A side of a diff is neither a readable drive nor a valid spec (exit 2)."""


class Change(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class KeyChange:
    """One key inside a JSON/YAML file: ``key`` as a path (``meta.role``, ``links[0].mtu``)."""

    key: str
    change: Change
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "change": str(self.change)}
        if self.change is not Change.ADDED:
            out["old"] = self.old
        if self.change is not Change.REMOVED:
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class FileChange:
    """One file that differs; ``keys`` when both sides parse as JSON (or NoCloud YAML)."""

    path: str
    change: Change
    keys: tuple[KeyChange, ...] = ()
    sizes: tuple[int | None, int | None] = (None, None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": str(self.change)}
        if self.keys:
            out["keys"] = [k.to_json() for k in self.keys]
        out["bytes"] = list(self.sizes)
        return out


@dataclass(frozen=True)
class Side:
    """One input of a diff: what it is and the file tree it stands for."""

    path: str
    kind: str  # "drive" | "spec"
    label: str  # config-2 | cidata
    files: Mapping[str, bytes] = field(repr=False)


@dataclass(frozen=True)
class Diff:
    a: Side
    b: Side
    files: tuple[FileChange, ...]

    @property
    def equal(self) -> bool:
        return not self.files

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"path": self.a.path, "kind": self.a.kind, "label": self.a.label},
            "b": {"path": self.b.path, "kind": self.b.kind, "label": self.b.label},
            "equal": self.equal,
            "ignored_keys": sorted(IGNORED_KEYS),
            "files": [f.to_json() for f in self.files],
        }

    def text(self) -> str:
        """The diff for people: one line per file, one indented line per key."""
        if self.equal:
            return f"{self.a.path} and {self.b.path} hold the same files (random_seed ignored)"
        lines = []
        for f in self.files:
            sizes = ""
            if f.change is Change.CHANGED and not f.keys:
                sizes = f" ({f.sizes[0]} -> {f.sizes[1]} bytes)"
            lines.append(f"{f.change:<8} {f.path}{sizes}")
            for k in f.keys:
                if k.change is Change.ADDED:
                    lines.append(f"  + {k.key}: {_show(k.new)}")
                elif k.change is Change.REMOVED:
                    lines.append(f"  - {k.key}: {_show(k.old)}")
                else:
                    lines.append(f"  ~ {k.key}: {_show(k.old)} -> {_show(k.new)}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def diff_json(old: Any, new: Any, prefix: str = "") -> list[KeyChange]:
    """Every key where ``old`` and ``new`` differ (mappings by key, lists by index);
    :data:`IGNORED_KEYS` anywhere are skipped."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[KeyChange] = []
        for key in sorted(set(old) | set(new), key=str):
            if key in IGNORED_KEYS:
                continue
            a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
            where = _join(prefix, key)
            if a is _ABSENT:
                out.append(KeyChange(where, Change.ADDED, new=b))
            elif b is _ABSENT:
                out.append(KeyChange(where, Change.REMOVED, old=a))
            else:
                out += diff_json(a, b, where)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            where = _join(prefix, i)
            if i >= len(old):
                out.append(KeyChange(where, Change.ADDED, new=new[i]))
            elif i >= len(new):
                out.append(KeyChange(where, Change.REMOVED, old=old[i]))
            else:
                out += diff_json(old[i], new[i], where)
        return out
    if old == new and type(old) is type(new):
        return []
    return [KeyChange(prefix or "(value)", Change.CHANGED, old, new)]


def _structured(path: str, data: bytes) -> Any:
    """The parsed content of a JSON (or NoCloud YAML) file, or ``_ABSENT``."""
    name = path.rsplit("/", 1)[-1]
    try:
        if name.endswith(".json"):
            return json.loads(data)
        if name in _YAML_FILES:
            parsed = yaml.safe_load(data)
            return parsed if isinstance(parsed, dict | list) else _ABSENT
    except (ValueError, yaml.YAMLError, RecursionError):
        pass
    return _ABSENT


def diff_trees(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> tuple[FileChange, ...]:
    """Files added, removed and changed from ``old`` to ``new``, in path order."""
    out: list[FileChange] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a is None:
            out.append(FileChange(path, Change.ADDED, sizes=(None, len(b or b""))))
            continue
        if b is None:
            out.append(FileChange(path, Change.REMOVED, sizes=(len(a), None)))
            continue
        if a == b:
            continue
        pa, pb = _structured(path, a), _structured(path, b)
        if pa is not _ABSENT and pb is not _ABSENT:
            keys = diff_json(pa, pb)
            if keys:
                out.append(FileChange(path, Change.CHANGED, tuple(keys), (len(a), len(b))))
            continue  # equal once random_seed is set aside
        out.append(FileChange(path, Change.CHANGED, sizes=(len(a), len(b))))
    return tuple(out)


def _is_drive(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            if is_iso9660(f):
                return True
            f.seek(0)
            return is_vfat(f)
    except OSError as exc:
        raise DiffInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _drive_side(path: str | os.PathLike[str]) -> Side:
    try:
        drive = read_drive(path)
    except InvalidDrive as exc:
        raise DiffInputError(str(exc)) from None
    return Side(str(path), "drive", drive.label, drive.files)


def _spec_side(path: str | os.PathLike[str], label: str | None) -> Side:
    data, base = load_spec(Path(path))  # a SpecError names the file's problem
    instance = instance_from_mapping(data, base=base)
    fmt = DriveFormat.NOCLOUD if label == "cidata" else DriveFormat.ISO9660
    tree = render_for(instance, fmt, urandom=lambda n: bytes(n))
    return Side(str(path), "spec", fmt.label, dict(tree))


def load_side(path: str | os.PathLike[str], label: str | None = None) -> Side:
    """Read a drive, or render a spec as a drive labelled ``label`` would hold it
    (``config-2`` unless given)."""
    return _drive_side(path) if _is_drive(Path(path)) else _spec_side(path, label)


def diff_paths(
    a: str | os.PathLike[str], b: str | os.PathLike[str], *, label: str | None = None
) -> Diff:
    """Compare two drives, two specs, or a drive and a spec. A spec is rendered for the
    other side's label when that side is a drive; ``label`` chooses it for two specs."""
    drives = {p: _drive_side(p) for p in (a, b) if _is_drive(Path(p))}
    if len(drives) == 1:
        label = next(iter(drives.values())).label
    first, second = (drives.get(p) or _spec_side(p, label) for p in (a, b))
    return Diff(first, second, diff_trees(first.files, second.files))
