"""Applying ``tune-image``'s profiles (:mod:`configdrive.guest.profile`) to a guest.

:func:`apply_to_directory` edits an unpacked root folder; :func:`tune_image` edits a raw or
qcow2 disk image without mounting it (debugfs on the ext2/3/4 root filesystem, found on the
whole disk or on an MBR/GPT partition). Both make only the edits still missing, so applying
twice changes nothing the second time.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from configdrive.guest.diskimage import (
    QCOW2_MAGIC,
    FilesystemInfo,
    ImageError,
    candidates,
    locked,
    qcow2_info,
    qcow2_write_back,
    temp_next_to,
)
from configdrive.guest.profile import (
    CFG_PATH,
    EXISTENCE_SUFFICES,
    FAST_PROFILE,
    MASK_PATH,
    POLLINATE_CACHE,
    POLLINATE_UNITS,
    REREAD_UNIT,
    REREAD_UNIT_TEXT,
    REREAD_WANTS,
    SEEDED_PATH,
    STEPS,
    WAIT_ONLINE_UNITS,
    WANTS_PATH,
    Change,
    Step,
    TuneSettings,
    applicable_changes,
    cfg_content,
    planned_changes,
)
from configdrive.run import find_tool, run

# the profile's names are this module's API too (tune-image's callers import them from here)
__all__ = [
    "CFG_PATH",
    "FAST_PROFILE",
    "REREAD_UNIT",
    "REREAD_UNIT_TEXT",
    "REREAD_WANTS",
    "STEPS",
    "Change",
    "Step",
    "FilesystemInfo",
    "ImageError",
    "TuneResult",
    "TuneSettings",
    "apply_to_directory",
    "cfg_content",
    "planned_changes",
    "tune_image",
]

log = logging.getLogger("configdrive.guest.tune")


# ---------------------------------------------------------------------------------------------
# what a guest filesystem already has, behind one small interface


@dataclass(frozen=True)
class _Node:
    kind: str  # "file" | "dir" | "symlink" | "other"
    mode: int  # permission bits (0o7777)
    uid: int
    gid: int
    target: str | None = None  # symlink target, when known


class _GuestFS(Protocol):
    check_owner: bool

    def prefetch(self, paths: Sequence[str]) -> None: ...

    def lstat(self, path: str) -> _Node | None: ...

    def read(self, path: str) -> bytes: ...

    def listdir(self, path: str) -> list[str]: ...


@dataclass(frozen=True)
class _Step:
    change: Change
    uid: int
    gid: int
    existing: _Node | None


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _guest_id(fs: _GuestFS, table: str, name: str, notes: list[str]) -> int:
    """The id of user/group ``name`` in the guest's ``table`` (/etc/passwd or /etc/group)."""
    if name == "root":
        return 0
    node = fs.lstat(table)
    try:
        text = fs.read(table).decode("utf-8", "replace") if node is not None else ""
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    note = f"{name!r} is not in the guest's {table}: id 0 (root) used instead"
    if note not in notes:
        notes.append(note)
    return 0


def _needed(fs: _GuestFS, settings: TuneSettings) -> tuple[list[_Step], list[str], bool]:
    """The steps still missing in ``fs``, notes for the result, and whether pollinate is there."""
    fs.prefetch(_PROBE)
    etc_cloud = fs.lstat("/etc/cloud")
    if etc_cloud is None or etc_cloud.kind not in ("dir", "symlink"):
        raise ImageError(
            "not a cloud-init image: /etc/cloud does not exist on the root filesystem "
            "(the guest must have cloud-init installed)"
        )
    wanted, notes, pollinate = applicable_changes(settings, lambda p: fs.lstat(p) is not None)

    steps: list[_Step] = []
    made: set[str] = set()
    id_cache: dict[tuple[str, str], int] = {}

    def step_for(change: Change, node: _Node | None) -> _Step:
        for table, name in (("/etc/passwd", change.owner), ("/etc/group", change.group)):
            if (table, name) not in id_cache:
                id_cache[table, name] = _guest_id(fs, table, name, notes)
        uid, gid = id_cache["/etc/passwd", change.owner], id_cache["/etc/group", change.group]
        return _Step(change, uid, gid, node)

    for change in wanted:
        if change.action != "remove":
            for parent in _parents(change.path):
                if parent in made:
                    continue
                node = fs.lstat(parent)
                if node is None:
                    made.add(parent)
                    mk = Change("mkdir", parent, "missing parent directory", mode=0o755)
                    steps.append(_Step(mk, 0, 0, None))
                elif node.kind not in ("dir", "symlink"):
                    raise ImageError(f"{parent} must be a directory but is a {node.kind}")
        node = None if change.path in made else fs.lstat(change.path)
        if change.action == "remove":
            if node is None:
                continue
            if node.kind == "dir":
                raise ImageError(f"{change.path} should be a symlink but is a directory")
            steps.append(step_for(change, node))
            continue
        if change.action == "mkdir":
            if node is not None:
                if node.kind not in ("dir", "symlink"):
                    raise ImageError(f"{change.path} must be a directory but is a {node.kind}")
                continue
            made.add(change.path)
            steps.append(step_for(change, node))
            continue
        if node is not None and node.kind == "dir":
            raise ImageError(f"{change.path} is a directory; expected a {change.action} target")
        if change.action == "symlink":
            if node is not None and node.kind == "symlink" and node.target == change.target:
                continue
            steps.append(step_for(change, node))
            continue
        # write
        if node is not None and change.path in EXISTENCE_SUFFICES:
            continue
        step = step_for(change, node)
        if node is not None and _same_file(fs, node, step):
            continue
        steps.append(step)

    notes += _overrides(fs)
    return steps, notes, pollinate


def _same_file(fs: _GuestFS, node: _Node, step: _Step) -> bool:
    change = step.change
    if node.kind != "file" or node.mode != change.mode:
        return False
    if fs.check_owner and (node.uid, node.gid) != (step.uid, step.gid):
        return False
    assert change.content is not None
    return fs.read(change.path) == change.content.encode()


def _overrides(fs: _GuestFS) -> list[str]:
    """Later-sorting cloud.cfg.d files that also set datasource_list win over ours: say so."""
    cfg_dir, ours = CFG_PATH.rsplit("/", 1)
    if fs.lstat(cfg_dir) is None:
        return []
    notes = []
    later = [f"{cfg_dir}/{n}" for n in fs.listdir(cfg_dir) if n > ours and n.endswith(".cfg")]
    fs.prefetch(later)
    for path in later:
        name = path.rsplit("/", 1)[1]
        node = fs.lstat(path)
        if node is None or node.kind != "file":
            continue
        text = fs.read(path).decode("utf-8", "replace")
        if re.search(r"^datasource_list\s*:", text, re.MULTILINE):
            notes.append(
                f"warning: {path} also sets datasource_list and sorts after {ours}, so cloud-init "
                f"and ds-identify use its list instead (name {name} sorts last)"
            )
    return notes


# ---------------------------------------------------------------------------------------------
# a root folder


class _DirFS:
    """A root filesystem unpacked in a folder; symlinks are resolved inside ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.check_owner = os.geteuid() == 0

    def prefetch(self, paths: Sequence[str]) -> None:
        pass

    def host(self, path: str, *, follow: bool = False) -> Path:
        """The host path of guest ``path``: symlinks in parents (and the last one if ``follow``)
        resolved as the guest would, never leaving ``root``."""
        todo = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = self.root.joinpath(*done, part)
            if (todo or follow) and candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise ImageError(f"too many levels of symbolic links resolving {path}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p] + todo
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def lstat(self, path: str) -> _Node | None:
        host = self.host(path)
        try:
            st = host.lstat()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            return _Node("symlink", perm, st.st_uid, st.st_gid, os.readlink(host))
        if stat.S_ISDIR(st.st_mode):
            return _Node("dir", perm, st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            return _Node("file", perm, st.st_uid, st.st_gid)
        return _Node("other", perm, st.st_uid, st.st_gid)

    def read(self, path: str) -> bytes:
        return self.host(path, follow=True).read_bytes()

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.host(path, follow=True)))

    def apply(self, step: _Step) -> None:
        change = step.change
        host = self.host(change.path)
        if change.action == "remove":
            host.unlink()
            return
        if change.action == "mkdir":
            host.mkdir()
            self._own(host, step)
            return
        if change.action == "symlink":
            assert change.target is not None
            if step.existing is not None:
                host.unlink()
            os.symlink(change.target, host)
            return
        assert change.action == "write" and change.content is not None
        fd, tmp = tempfile.mkstemp(prefix=f".{host.name}.", dir=host.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(change.content.encode())
            self._own(Path(tmp), step)
            os.replace(tmp, host)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _own(self, host: Path, step: _Step) -> None:
        assert step.change.mode is not None
        os.chmod(host, step.change.mode)
        if self.check_owner:
            os.chown(host, step.uid, step.gid, follow_symlinks=False)


def apply_to_directory(
    root: Path, settings: TuneSettings = TuneSettings(), *, dry_run: bool = False
) -> list[Change]:
    """Edit the root filesystem unpacked at ``root``; return the changes that were needed.

    Only missing edits are made, so a second call returns ``[]``. With ``dry_run`` nothing is
    written and the same list is returned. Ownership is set (and compared) only when running
    as root (or under fakeroot); otherwise files keep the caller's ids.
    Raises :class:`ImageError` when ``root`` has no ``/etc/cloud``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root} is not a directory: apply_to_directory needs an unpacked root")
    fs = _DirFS(root)
    steps, notes, _ = _needed(fs, settings)
    for note in notes:
        log.info("%s: %s", root, note)
    if not dry_run:
        if not fs.check_owner:
            log.warning("%s: not running as root, so file ownership is left as is", root)
        for step in steps:
            log.info("%s: %s", root, step.change)
            fs.apply(step)
    return [s.change for s in steps]


# ---------------------------------------------------------------------------------------------
# a disk image, offline: locate the ext filesystem, inspect and edit it with debugfs


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune_image` found and did."""

    image: Path
    format: str  # "raw" | "qcow2"
    filesystem: FilesystemInfo
    changes: list[Change]  # needed edits: made, or (dry_run) that would be made
    changed: bool  # the image file was rewritten
    dry_run: bool
    pollinate_installed: bool
    notes: list[str]


def _quote(arg: str) -> str:
    """One debugfs command argument (its parser splits on blanks and knows double quotes)."""
    if '"' in arg or "\n" in arg:
        raise ImageError(f"cannot pass {arg!r} to debugfs: it contains a quote or newline")
    return f'"{arg}"' if re.search(r"\s", arg) else arg


_STAT_KIND = {"regular": "file", "directory": "dir", "symlink": "symlink"}
_STAT_RE = re.compile(r"Type:\s*(\S+)\s+Mode:\s*([0-7]+)")
_OWNER_RE = re.compile(r"User:\s*(\d+)\s+Group:\s*(\d+)")
_LINK_RE = re.compile(r'^Fast link dest: "(.*)"$', re.MULTILINE)


class _DebugfsFS:
    """An ext filesystem in a raw file, read with ``debugfs -R``/``-f`` (never mounted)."""

    check_owner = True

    def __init__(self, debugfs: str, raw: Path, offset: int) -> None:
        self.debugfs = debugfs
        self.device = f"{raw}?offset={offset}" if offset else str(raw)
        self._stat: dict[str, _Node | None] = {}
        self._read: dict[str, bytes] = {}

    def _run(self, script: str, *, write: bool = False) -> tuple[str, str]:
        argv = [self.debugfs, *(["-w"] if write else []), "-f", "-", self.device]
        proc = run(argv, input=script.encode())
        err = proc.stderr.decode("utf-8", "replace")
        if "while trying to open" in err or "Filesystem not open" in err:
            raise ImageError(f"debugfs cannot open the filesystem at {self.device}: {err.strip()}")
        return proc.stdout.decode("utf-8", "surrogateescape"), err

    def prefetch(self, paths: Sequence[str]) -> None:
        """stat many paths with one debugfs run."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._stat]
        if not todo:
            return
        out, _ = self._run("".join(f"stat {_quote(p)}\n" for p in todo))
        sections: dict[str, str] = {}
        current: str | None = None
        for line in out.splitlines(keepends=True):
            if line.startswith("debugfs: stat "):
                current = line[len("debugfs: stat ") :].rstrip("\n").strip('"')
                sections[current] = ""
            elif current is not None:
                sections[current] += line
        for p in todo:
            self._stat[p] = self._parse_stat(sections.get(p, ""))

    @staticmethod
    def _parse_stat(text: str) -> _Node | None:
        m = _STAT_RE.search(text)
        o = _OWNER_RE.search(text)
        if m is None or o is None:
            return None
        kind = _STAT_KIND.get(m.group(1), "other")
        link = _LINK_RE.search(text)
        target = link.group(1) if kind == "symlink" and link else None
        return _Node(kind, int(m.group(2), 8) & 0o7777, int(o.group(1)), int(o.group(2)), target)

    def lstat(self, path: str) -> _Node | None:
        self.prefetch([path])
        return self._stat[path]

    def read(self, path: str) -> bytes:
        if path not in self._read:
            argv = [self.debugfs, "-R", f"cat {_quote(path)}", self.device]
            self._read[path] = run(argv).stdout
        return self._read[path]

    def listdir(self, path: str) -> list[str]:
        out, _ = self._run(f"ls -p {_quote(path)}\n")
        names = []
        for line in out.splitlines():
            fields = line.split("/")  # /ino/mode/uid/gid/name/size/
            if len(fields) >= 7 and fields[0] == "" and fields[5] not in (".", ".."):
                names.append("/".join(fields[5:-2]))
        return sorted(names)

    def apply(self, steps: Sequence[_Step], workdir: Path) -> str:
        """Make ``steps`` with one ``debugfs -w -f`` run; return debugfs's stderr."""
        lines: list[str] = []
        for n, step in enumerate(steps):
            c = step.change
            p = _quote(c.path)
            if c.action == "remove":
                lines.append(f"rm {p}")
                continue
            if c.action == "mkdir":
                lines.append(f"mkdir {p}")
            elif c.action == "symlink":
                assert c.target is not None
                if step.existing is not None:
                    lines.append(f"rm {p}")
                lines += [
                    f"symlink {p} {_quote(c.target)}",
                    f"set_inode_field {p} uid {step.uid}",
                    f"set_inode_field {p} gid {step.gid}",
                ]
                continue
            else:
                assert c.content is not None
                src = workdir / f"content-{n}"
                src.write_bytes(c.content.encode())
                if step.existing is not None:
                    lines.append(f"rm {p}")
                lines.append(f"write {_quote(str(src))} {p}")
            assert c.mode is not None
            ftype = 0o040000 if c.action == "mkdir" else 0o100000
            lines += [
                f"set_inode_field {p} mode 0{ftype | c.mode:o}",
                f"set_inode_field {p} uid {step.uid}",
                f"set_inode_field {p} gid {step.gid}",
            ]
        self._stat.clear()
        self._read.clear()
        _, err = self._run("".join(f"{line}\n" for line in lines), write=True)
        return err


_PROBE = [
    "/etc/cloud",
    *POLLINATE_UNITS,
    *_parents(CFG_PATH),
    CFG_PATH,
    *_parents(MASK_PATH),
    MASK_PATH,
    WANTS_PATH,
    "/var",
    "/var/cache",
    POLLINATE_CACHE,
    SEEDED_PATH,
    REREAD_UNIT,
    *_parents(REREAD_WANTS),
    REREAD_WANTS,
    "/etc/passwd",
    "/etc/group",
    *WAIT_ONLINE_UNITS,
]


def _find_root(debugfs: str, raw: Path) -> tuple[FilesystemInfo, _DebugfsFS]:
    found = candidates(raw)
    for info, sb in found:
        fs = _DebugfsFS(debugfs, raw, info.offset)
        fs.prefetch(_PROBE)
        if fs.lstat("/etc/cloud") is None:
            continue
        incompat = struct.unpack_from("<I", sb, 96)[0]
        if incompat & 0x4:
            raise ImageError(
                f"the {info.type} filesystem at byte {info.offset} needs journal recovery: "
                "offline edits need a cleanly unmounted filesystem (shut the guest down "
                "cleanly, or run e2fsck on it first)"
            )
        return info, fs
    where = ", ".join(
        "whole disk" if i.partition is None else f"partition {i.partition}" for i, _ in found
    )
    raise ImageError(
        f"not a cloud-init image: no ext filesystem in the image ({where}) has /etc/cloud "
        "(the guest's root filesystem must have cloud-init installed)"
    )


def _edit(
    debugfs: str,
    raw: Path,
    settings: TuneSettings,
    dry_run: bool,
    say: Callable[[str], None],
) -> tuple[FilesystemInfo, list[Change], list[str], bool]:
    say("looking for the root filesystem")
    info, fs = _find_root(debugfs, raw)
    where = "whole disk" if info.partition is None else f"partition {info.partition}"
    say(f"root filesystem: {info.type} on {where} (offset {info.offset})")
    steps, notes, pollinate = _needed(fs, settings)
    changes = [s.change for s in steps]
    if not steps or dry_run:
        return info, changes, notes, pollinate
    say(f"applying {len(steps)} change(s) with debugfs")
    with tempfile.TemporaryDirectory(prefix="configdrive-tune-") as work:
        err = fs.apply(steps, Path(work))
    left, _, _ = _needed(_DebugfsFS(debugfs, raw, info.offset), settings)
    if left:
        raise ImageError(
            "debugfs did not make every edit: still missing "
            + "; ".join(str(s.change) for s in left)
            + (f" (debugfs said: {err.strip()})" if err.strip() else "")
        )
    return info, changes, notes, pollinate


def tune_image(
    image: Path,
    settings: TuneSettings = TuneSettings(),
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Edit a raw or qcow2 disk image offline (no mount) so the guest boots fast.

    The root filesystem is the whole-disk ext2/3/4 filesystem, or the ext2/3/4 partition
    (MBR or GPT) that has ``/etc/cloud``. Only missing edits are made; when none is missing
    (or ``dry_run``) the image file is not written at all. A raw image is edited in place; a
    qcow2 image is converted to a sparse raw temp file next to it, edited, converted back (same
    compat level, cluster size and backing file) and atomically renamed over the original.
    """
    say = progress or (lambda _msg: None)
    image = Path(image)
    if not image.is_file():
        raise ImageError(f"{image} is not a file: tune_image needs a raw or qcow2 disk image")
    debugfs = find_tool("debugfs")
    with image.open("rb") as f:
        magic = f.read(4)
    real = image.resolve()
    # only read the original: -U (force share) keeps qemu-img from wanting the write lock
    share = ["-U"]
    with locked(real, not dry_run):
        if magic != QCOW2_MAGIC:
            info, changes, notes, pollinate = _edit(debugfs, real, settings, dry_run, say)
            fmt = "raw"
        else:
            fmt = "qcow2"
            qemu_img = find_tool("qemu-img")
            qinfo = qcow2_info(qemu_img, real, share)
            with temp_next_to(real, ".raw") as raw:
                say("converting qcow2 to a sparse raw temp file")
                run([qemu_img, "convert", *share, "-f", "qcow2", "-O", "raw", real, raw])
                info, changes, notes, pollinate = _edit(debugfs, raw, settings, dry_run, say)
                if changes and not dry_run:
                    say("converting back to qcow2")
                    qcow2_write_back(qemu_img, raw, real, qinfo)
    for note in notes:
        log.info("%s: %s", image, note)
    changed = bool(changes) and not dry_run
    say("changed" if changed else ("dry run: nothing written" if dry_run else "already tuned"))
    return TuneResult(
        image=image,
        format=fmt,
        filesystem=info,
        changes=changes,
        changed=changed,
        dry_run=dry_run,
        pollinate_installed=pollinate,
        notes=notes,
    )
