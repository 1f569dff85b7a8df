"""Guest-side settings for a fast first boot, applied to a root folder or offline to an image.

The guest's cloud-init must prefer the config drive and give up on the network metadata
service fast, and boot-time stalls such as ``pollinate`` (an HTTPS entropy fetch ordered
``Before=ssh.service``, ``After=network-online.target``; with no network curl waits 10 s, and it
retries every boot until it has seeded once) must go. Three edits, each made only when missing,
so applying twice changes nothing the second time:

1. ``/etc/cloud/cloud.cfg.d/99_configdrive.cfg`` (0644 root:root): ``datasource_list`` on ONE
   line (ds-identify reads that key line by line) and ``datasource: {Ec2: {timeout, max_wait}}``.
2. pollinate, when its unit is installed: mask ``pollinate.service`` (symlink to /dev/null),
   drop its ``multi-user.target.wants`` link and mark it seeded (``/var/cache/pollinate/seeded``;
   the directory is created ``pollinate:daemon`` 0755 like the package's postinst/adduser does).
3. reread-drive: a oneshot unit before ``cloud-init-local.service`` that removes cloud-init's
   cached datasource (``/var/lib/cloud/instance/obj.pkl``) when a ``config-2`` filesystem is
   attached. cloud-init's ConfigDrive datasource (22.4, 25.1, 26.x) restores that cache instead
   of reading the drive whenever the instance-id equals the DMI system-uuid, which it does on
   nova's guests and configdrive's, so an updated drive (``configdrive update``) would never
   be read. Without the cache, cloud-init reads the drive; the instance-id is unchanged, so no
   per-instance module runs again. With no drive attached the cache stays, and so does the
   instance.

:func:`apply_to_directory` edits an unpacked root folder; :func:`tune_image` edits a raw or
qcow2 disk image without mounting it (debugfs on the ext2/3/4 root filesystem, found on the
whole disk or on an MBR/GPT partition).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from configdrive.errors import SpecError
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
from configdrive.run import find_tool, run

__all__ = [
    "CFG_PATH",
    "FAST_PROFILE",
    "REREAD_UNIT",
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

CFG_PATH = "/etc/cloud/cloud.cfg.d/99_configdrive.cfg"
POLLINATE_UNITS = (
    "/lib/systemd/system/pollinate.service",
    "/usr/lib/systemd/system/pollinate.service",
)
MASK_PATH = "/etc/systemd/system/pollinate.service"
WANTS_PATH = "/etc/systemd/system/multi-user.target.wants/pollinate.service"
POLLINATE_CACHE = "/var/cache/pollinate"
SEEDED_PATH = "/var/cache/pollinate/seeded"
REREAD_UNIT = "/etc/systemd/system/configdrive-reread-drive.service"
REREAD_WANTS = "/etc/systemd/system/cloud-init-local.service.wants/configdrive-reread-drive.service"
# blkid probes the block devices itself (-c /dev/null: no cache), as ds-identify does; the
# labels are the ones cloud-init's ConfigDrive datasource looks for
REREAD_UNIT_TEXT = """\
# Written by configdrive (tune step reread-drive). cloud-init's ConfigDrive datasource restores
# its cached copy of the drive (obj.pkl) while the instance-id equals the DMI system-uuid, so an
# updated config drive would never be read. With a config-2 drive attached, drop that cache:
# cloud-init reads the drive again, and with the instance-id unchanged runs no per-instance
# module again. With no drive attached, the cache stays.
[Unit]
Description=configdrive: read an attached config drive afresh at boot
DefaultDependencies=no
Before=cloud-init-local.service
After=systemd-remount-fs.service
RequiresMountsFor=/var/lib/cloud
ConditionPathExists=/var/lib/cloud/instance/obj.pkl

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'blkid -c /dev/null -l -t LABEL=config-2 >/dev/null || \\
blkid -c /dev/null -l -t LABEL=CONFIG-2 >/dev/null || exit 0; \\
rm -f /var/lib/cloud/instance/obj.pkl'
"""

# pollinate creates the flag itself; an existing one (any owner) is left as it is
_EXISTENCE_SUFFICES = frozenset({SEEDED_PATH})
_DS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


# ---------------------------------------------------------------------------------------------
# settings and the plan (pure)


@dataclass(frozen=True)
class TuneSettings:
    """What the guest should do at first boot."""

    datasource_list: tuple[str, ...] = ("ConfigDrive", "Ec2", "NoCloud")
    ec2_timeout: int = 2
    ec2_max_wait: int = 5
    disable_pollinate: bool = True
    # drop cloud-init's cached datasource at boot when a config-2 drive is attached
    reread_drive: bool = True
    # the fast profile's further steps (names from STEPS), beyond the datasource and pollinate
    steps: tuple[str, ...] = ()
    # edits beyond the profile, made the same way (the benchmark's no-agent image: its host
    # keys and login key, made at build time)
    extra: tuple[Change, ...] = ()

    def __repr__(self) -> str:
        # without the steps when there are none: image recipes hash this text, and images
        # made before the fast profile's steps existed keep their cache keys
        fields = [f"datasource_list={self.datasource_list!r}", f"ec2_timeout={self.ec2_timeout!r}",
                  f"ec2_max_wait={self.ec2_max_wait!r}",
                  f"disable_pollinate={self.disable_pollinate!r}"]  # fmt: skip
        if self.reread_drive:  # images made before the step existed had none
            fields.append("reread_drive=True")
        if self.steps:
            fields.append(f"steps={self.steps!r}")
        if self.extra:
            fields.append(f"extra={self.extra!r}")
        return f"TuneSettings({', '.join(fields)})"

    def __post_init__(self) -> None:
        extra: object = self.extra
        if isinstance(extra, list):  # accept a list; keep the frozen value hashable
            object.__setattr__(self, "extra", tuple(extra))
        steps: object = self.steps
        if isinstance(steps, list):  # accept a list; keep the frozen value hashable
            object.__setattr__(self, "steps", tuple(steps))
        for name in self.steps:
            if name not in STEPS:
                raise SpecError(
                    "steps", f"{name!r} is not a tuning step (known: {', '.join(STEPS)})"
                )
        if len(set(self.steps)) != len(self.steps):
            raise SpecError("steps", "must not name a step twice")
        names: object = self.datasource_list
        if isinstance(names, list):  # accept a list; keep the frozen value hashable
            names = tuple(names)
            object.__setattr__(self, "datasource_list", names)
        if isinstance(names, str) or not isinstance(names, tuple) or not names:
            raise SpecError("datasource_list", "must be a non-empty sequence of datasource names")
        for name in self.datasource_list:
            if not isinstance(name, str) or not _DS_NAME.match(name):
                raise SpecError(
                    "datasource_list",
                    f"{name!r} is not a cloud-init datasource name (a letter, then letters/digits)",
                )
        if len(set(self.datasource_list)) != len(self.datasource_list):
            raise SpecError("datasource_list", "must not name a datasource twice")
        for fname in ("ec2_timeout", "ec2_max_wait"):
            value = getattr(self, fname)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(fname, f"must be a whole number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class Change:
    """One edit of the guest's root filesystem.

    ``action`` is ``"mkdir"``, ``"write"``, ``"symlink"`` or ``"remove"``; ``path`` is the guest
    path; ``detail`` is human text. The other fields are what the edit needs: the file's text
    (written UTF-8, exactly), the symlink's target, the permission bits and the owner/group
    *names* (resolved against the guest's /etc/passwd and /etc/group when applied). Every field
    is JSON-serialisable, so ``vars(change)`` can be dumped as is.
    """

    action: str
    path: str
    detail: str
    content: str | None = field(default=None, repr=False)
    target: str | None = None
    mode: int | None = None
    owner: str = "root"
    group: str = "root"

    def __str__(self) -> str:
        return f"{self.action} {self.path}: {self.detail}"


def cfg_content(settings: TuneSettings) -> bytes:
    """The exact bytes of ``99_configdrive.cfg`` for ``settings``."""
    names = ", ".join(settings.datasource_list)
    # the file names the module's old path: its bytes are part of every tuned image's key
    return (
        "# Written by configdrive (configdrive.tune): prefer the config drive and give up on the\n"
        "# network metadata service fast. Keep datasource_list on one line: ds-identify reads\n"
        "# it line by line.\n"
        f"datasource_list: [ {names} ]\n"
        "datasource:\n"
        "  Ec2:\n"
        f"    timeout: {settings.ec2_timeout}\n"
        f"    max_wait: {settings.ec2_max_wait}\n"
    ).encode()


def _cfg_change(settings: TuneSettings) -> Change:
    return Change(
        "write",
        CFG_PATH,
        f"datasource_list: [{', '.join(settings.datasource_list)}], "
        f"Ec2 timeout {settings.ec2_timeout}s, max_wait {settings.ec2_max_wait}s",
        content=cfg_content(settings).decode(),
        mode=0o644,
    )


def _pollinate_changes() -> list[Change]:
    return [
        Change("symlink", MASK_PATH, "mask pollinate.service -> /dev/null", target="/dev/null"),
        Change("remove", WANTS_PATH, "drop pollinate.service from multi-user.target"),
        Change(
            "mkdir",
            POLLINATE_CACHE,
            "pollinate's cache directory (pollinate:daemon 0755, as its postinst makes it)",
            mode=0o755,
            owner="pollinate",
            group="daemon",
        ),
        Change(
            "write",
            SEEDED_PATH,
            "mark pollinate seeded (empty flag file, as pollinate leaves it)",
            content="",
            mode=0o644,
            owner="pollinate",
            group="daemon",
        ),
    ]


def _reread_changes() -> list[Change]:
    return [
        Change(
            "write",
            REREAD_UNIT,
            "at boot, with a config-2 drive attached, drop cloud-init's cached copy of it "
            "(obj.pkl), so that an updated drive is read; the instance-id stays",
            content=REREAD_UNIT_TEXT,
            mode=0o644,
        ),
        Change("mkdir", str(Path(REREAD_WANTS).parent), "cloud-init-local's wants", mode=0o755),
        Change(
            "symlink",
            REREAD_WANTS,
            "run it before cloud-init-local.service",
            target=REREAD_UNIT,
        ),
    ]


@dataclass(frozen=True)
class Step:
    """One named step of the fast profile: its edits, why, and the guest path whose presence
    it needs (``None``: always applies)."""

    name: str
    why: str
    changes: tuple[Change, ...]
    needs: tuple[str, ...] | None = None


def _cloud_cfg(name: str, detail: str, text: str) -> Change:
    header = f"# Written by configdrive (tune step {name}).\n"
    path = f"/etc/cloud/cloud.cfg.d/99_configdrive-{name}.cfg"
    return Change("write", path, detail, content=header + text, mode=0o644)


WAIT_ONLINE_UNITS = (
    "/lib/systemd/system/systemd-networkd-wait-online.service",
    "/usr/lib/systemd/system/systemd-networkd-wait-online.service",
)
WAIT_ONLINE_DROPIN = (
    "/etc/systemd/system/systemd-networkd-wait-online.service.d/90-configdrive.conf"
)
WAIT_ONLINE_TIMEOUT = 30

# The fast profile, in order. Each step is measured by the boot benchmark (docs/guests.md).
STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step(
            "ssh-keys",
            "cloud-init generates every host key type it knows at first boot (22.4: RSA 3072, "
            "DSA, ECDSA, Ed25519); the RSA key is the slow one, and DSA is refused by OpenSSH "
            "clients since 7.0. Ed25519 and ECDSA are what current clients use.",
            (
                _cloud_cfg(
                    "ssh-keys",
                    "host keys: ed25519 and ecdsa only",
                    "ssh_genkeytypes: [ed25519, ecdsa]\n",
                ),
            ),  # fmt: skip
        ),
        Step(
            "grub-dpkg",
            "cloud-init's grub_dpkg module (on by default in 22.4) runs grub-probe on the root "
            "device and debconf-set-selections at every new instance, to tell the grub-pc "
            "package where to install; a cloud image's GRUB was installed at build time.",
            (
                _cloud_cfg(
                    "grub-dpkg", "grub_dpkg: enabled: false", "grub_dpkg:\n  enabled: false\n"
                ),
            ),  # fmt: skip
        ),
        Step(
            "e2scrub-reap",
            "e2scrub_reap.service (e2fsprogs) runs e2scrub_all -A -r at every boot to remove "
            "stale e2scrub snapshots of LVM volumes; a cloud image has no LVM and no snapshot, "
            "and on a one-vCPU guest the script competes for the CPU with cloud-init's local "
            "stage, which is on the way to SSH. Masked (a symlink to /dev/null).",
            (
                Change(
                    "symlink",
                    "/etc/systemd/system/e2scrub_reap.service",
                    "mask e2scrub_reap.service -> /dev/null",
                    target="/dev/null",
                ),
            ),  # fmt: skip
            needs=(
                "/lib/systemd/system/e2scrub_reap.service",
                "/usr/lib/systemd/system/e2scrub_reap.service",
            ),  # fmt: skip
        ),
        Step(
            "networkd-renderer",
            "cloud-init's netplan renderer (Debian's choice) writes /etc/netplan and then runs "
            "`netplan generate`, a Python program, in the local stage on the way to SSH; its "
            "networkd renderer writes the same systemd-networkd files itself. Both carry every "
            "address, route, DNS server and MTU of the spec on 22.4, 25.1 and 26.x "
            "(tests/test_network_renderers.py). Netplan stays as the fallback.",
            (
                _cloud_cfg(
                    "networkd-renderer",
                    "system_info: network: renderers: [networkd, netplan]",
                    "system_info:\n  network:\n    renderers: [networkd, netplan]\n",
                ),
            ),
            needs=("/lib/systemd/systemd-networkd", "/usr/lib/systemd/systemd-networkd"),
        ),
        Step(
            "keys-to-console",
            "cloud-init's keys_to_console module (final stage) runs ssh-keygen -l on every "
            "host key to print the fingerprints on the serial console. Turned off "
            "(ssh: emit_keys_to_console: false); the keys themselves are unchanged.",
            (
                _cloud_cfg(
                    "keys-to-console",
                    "ssh: emit_keys_to_console: false",
                    "ssh:\n  emit_keys_to_console: false\n",
                ),
            ),
        ),
        Step(
            "wait-online",
            "systemd-networkd-wait-online waits up to 2 minutes for every managed link to be "
            "online, and cloud-init's network stage is ordered after it: a second NIC with no "
            f"DHCP, or none at all, stalls the boot. --any returns once one link is online, and "
            f"--timeout={WAIT_ONLINE_TIMEOUT} bounds the rest.",
            (
                Change(
                    "write",
                    WAIT_ONLINE_DROPIN,
                    f"systemd-networkd-wait-online --any --timeout={WAIT_ONLINE_TIMEOUT}",
                    content=(
                        "# Written by configdrive (tune step wait-online).\n[Service]\n"
                        "ExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any "
                        f"--timeout={WAIT_ONLINE_TIMEOUT}\n"
                    ),
                    mode=0o644,
                ),
            ),
            needs=WAIT_ONLINE_UNITS,
        ),
    )
}
FAST_PROFILE = tuple(STEPS)


def planned_changes(settings: TuneSettings = TuneSettings()) -> list[Change]:
    """Every edit ``settings`` asks for, whatever the guest already has (pure).

    Missing parent directories (``mkdir``, root 0755) are added when applied.
    """
    changes = [_cfg_change(settings)]
    if settings.disable_pollinate:
        changes += _pollinate_changes()
    if settings.reread_drive:
        changes += _reread_changes()
    for name in settings.steps:
        changes += STEPS[name].changes
    return changes + list(settings.extra)


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
    notes: list[str] = []
    wanted = [_cfg_change(settings)]
    pollinate = any(fs.lstat(p) is not None for p in POLLINATE_UNITS)
    if not settings.disable_pollinate:
        notes.append("pollinate left alone (disable_pollinate=False)")
    elif not pollinate:
        notes.append(
            "pollinate is not installed (no pollinate.service under /lib or /usr/lib "
            "systemd/system): pollinate edits skipped"
        )
    else:
        wanted += _pollinate_changes()
    if settings.reread_drive:
        wanted += _reread_changes()
    for name in settings.steps:
        needs = STEPS[name].needs
        if needs is not None and not any(fs.lstat(p) is not None for p in needs):
            notes.append(f"step {name} skipped: the guest has none of {', '.join(needs)}")
            continue
        wanted += STEPS[name].changes
    wanted += settings.extra

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
        if node is not None and change.path in _EXISTENCE_SUFFICES:
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
