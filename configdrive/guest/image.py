"""The project's Debian 12 guest image: built without mounting anything, cached by content.

``build_image`` bootstraps bookworm into a folder with ``mmdebstrap`` (its root mode mounts
/proc, /sys and /dev inside the folder itself and removes them again; nothing else is
mounted), configures the folder with plain file writes, optionally applies the project's
tuning (:func:`configdrive.guest.tune.apply_to_directory`), then makes the disk with
``mkfs.ext4 -d`` (the whole disk is the root filesystem, no partition table, no loop device)
and ``qemu-img convert``. Both kernels and their initrds are copied out for direct kernel boot:
the cloud kernel (no AHCI) for ``pc`` machines, the generic one for ``q35``.

Each image lives in ``<cache>/<variant>-<key[:16]>/`` with ``manifest.json`` (the layout
:func:`configdrive.compute.load_image` reads). ``key`` is a sha256 over the recipe; a build is
made in a temp folder next to it, the manifest written last, then renamed into place, so a
folder that exists is complete. Builds of one image are serialised with a lock file.

The guest reports its first boot through ``configdrive-check.service`` (files in
``configdrive/guest/``) as ``CONFIGDRIVE-CHECK`` lines on ttyS0; :func:`parse_check_report`
reads them back.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from configdrive.errors import ConfigDriveError
from configdrive.guest import tune
from configdrive.guest.diskimage import qcow2_backing
from configdrive.run import find_tool, run

__all__ = [
    "CHECK_PREFIX",
    "CMDLINE",
    "CacheEntry",
    "GuestImage",
    "ImageVariant",
    "PACKAGES",
    "RECIPE_VERSION",
    "bootstrap",
    "build_cached",
    "build_image",
    "default_cache_dir",
    "image_key",
    "cache_entries",
    "parse_check_report",
    "prune_cache",
    "read_json",
    "recipe",
    "timed_step",
]

log = logging.getLogger("configdrive.guest.image")

# Bump when the build steps change in a way the recipe below does not show (code, not data).
RECIPE_VERSION = 3
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PACKAGES = (
    "cloud-init",
    "linux-image-cloud-amd64",  # virtio, ata_piix; no AHCI: for pc machines
    "linux-image-amd64",  # has AHCI, so q35's SATA CD-ROM is visible
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "openssh-server",
    "pollinate",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "e2fsprogs",
    "sudo",
)
# docs, man pages, translations: not needed in a test guest
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
DISK_SIZE = "3G"
FSTAB = "/dev/vda / ext4 defaults 0 1\n"  # the whole disk is the root filesystem
# Run before the kernels are installed, so their initramfs knows the root filesystem: its fsck
# hook cannot probe /dev/vda at build time, so it is told the type (and adds fsck.ext4).
ESSENTIAL_HOOKS = (
    f"printf '{FSTAB.strip()}\\n' > \"$1/etc/fstab\"",
    'mkdir -p "$1/etc/initramfs-tools/conf.d"'
    ' && echo FSTYPE=ext4 > "$1/etc/initramfs-tools/conf.d/configdrive-fstype"',
)
CMDLINE = "root=/dev/vda rw rootfstype=ext4 console=ttyS0,115200 panic=-1"
MANIFEST = "manifest.json"
CHECK_PREFIX = "CONFIGDRIVE-CHECK "

GUEST_DIR = Path(__file__).resolve().parent  # the in-guest check lives beside this module
# file in configdrive/guest/ -> (path in the guest, mode)
GUEST_FILES = {
    "configdrive-check.sh": ("/usr/local/sbin/configdrive-check", 0o755),
    "configdrive-check.service": ("/etc/systemd/system/configdrive-check.service", 0o644),
}
# symlinks made in the guest: path -> target
GUEST_LINKS = {
    "/etc/systemd/system/multi-user.target.wants/configdrive-check.service": (
        "/etc/systemd/system/configdrive-check.service"
    ),
    "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service": (
        "/lib/systemd/system/serial-getty@.service"
    ),
}
POLLINATE_WANTS = (
    "/etc/systemd/system/multi-user.target.wants/pollinate.service",
    "/lib/systemd/system/pollinate.service",
)
HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\t\tip6-allnodes\n"
    "ff02::2\t\tip6-allrouters\n"
)
REPORTED_PACKAGES = ("cloud-init", "systemd", "pollinate", "openssh-server", "initramfs-tools")
_OCTAL = re.compile(r"\\([0-7]{3})")

Progress = Callable[[str], None]
T = TypeVar("T")


class ImageVariant(enum.StrEnum):
    """``untuned``: Debian's stock cloud-init setup (stock datasource list, pollinate enabled),
    as an operator's image has it. ``tuned``: the same plus :mod:`configdrive.guest.tune`.
    ``pollinate``: tuned, but pollinate left enabled (isolates its cost). ``floor``:
    ``datasource_list: [None]``, no metadata at all (the boot no injection can beat).
    ``service``: tuned, but reading the network metadata service: ``datasource_list:
    [OpenStack, None]`` with the OpenStack datasource's own defaults (ds-identify finds it
    from nova's "OpenStack Nova" DMI product), for guests booted without a drive."""

    UNTUNED = "untuned"
    TUNED = "tuned"
    POLLINATE = "pollinate"
    FLOOR = "floor"
    SERVICE = "service"

    @property
    def tuning(self) -> tune.TuneSettings | None:
        """The tuning this variant applies to the stock image (None: none)."""
        return {
            ImageVariant.UNTUNED: None,
            ImageVariant.TUNED: tune.TuneSettings(),
            # (the images below only measure pollinate, or boot with no drive: they keep
            # their cache keys without reread-drive)
            ImageVariant.POLLINATE: tune.TuneSettings(disable_pollinate=False, reread_drive=False),
            ImageVariant.FLOOR: tune.TuneSettings(datasource_list=("None",), reread_drive=False),
            ImageVariant.SERVICE: tune.TuneSettings(
                datasource_list=("OpenStack", "None"), reread_drive=False
            ),
        }[self]


@dataclass(frozen=True)
class GuestImage:
    """A built image: the qcow2 disk and the kernels to boot it with directly."""

    variant: ImageVariant
    qcow2: Path
    kernel: Path  # cloud kernel: virtio + ata_piix, no AHCI
    initrd: Path
    kernel_generic: Path  # generic kernel: has AHCI (q35's SATA CD-ROM)
    initrd_generic: Path
    cmdline: str
    key: str

    @property
    def directory(self) -> Path:
        return self.qcow2.parent

    def kernel_for(self, machine: str) -> tuple[Path, Path]:
        """(kernel, initrd) for a QEMU machine type: the generic kernel for q35."""
        if "q35" in machine:
            return self.kernel_generic, self.initrd_generic
        return self.kernel, self.initrd


# ---------------------------------------------------------------------------------------------
# the recipe and its key


def recipe(variant: ImageVariant) -> dict[str, Any]:
    """Everything the image is made from, as JSON-able data (the cache key hashes it)."""
    guest = {
        name: hashlib.sha256((GUEST_DIR / name).read_bytes()).hexdigest()
        for name in sorted(GUEST_FILES)
    }
    data: dict[str, Any] = {
        "recipe_version": RECIPE_VERSION,
        "variant": str(variant),
        "suite": SUITE,
        "mirrors": list(MIRRORS),
        "packages": list(PACKAGES),
        "dpkg_options": list(DPKG_OPTIONS),
        "disk_size": DISK_SIZE,
        "fstab": FSTAB,
        "essential_hooks": list(ESSENTIAL_HOOKS),
        "cmdline": CMDLINE,
        "guest_files": guest,
        "guest_install": {name: [p, oct(m)] for name, (p, m) in GUEST_FILES.items()},
        "guest_links": GUEST_LINKS,
    }
    settings = variant.tuning
    if settings is not None:
        data["tune_settings"] = repr(settings)
        data["tune_changes"] = [vars(c) for c in tune.planned_changes(settings)]
    return data


def image_key(variant: ImageVariant) -> str:
    blob = json.dumps(recipe(variant), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def default_cache_dir() -> Path:
    """``$CONFIGDRIVE_CACHE/images``, else ``~/.cache/configdrive/images``."""
    base = os.environ.get("CONFIGDRIVE_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "configdrive"
    return root / "images"


# ---------------------------------------------------------------------------------------------
# building


def build_image(
    variant: ImageVariant,
    cache_dir: Path | None = None,
    *,
    progress: Progress | None = None,
) -> GuestImage:
    """The ``variant`` image from the cache, built first if it is not there."""
    variant = ImageVariant(variant)
    say = progress or (lambda _msg: None)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = image_key(variant)
    name = f"{variant}-{key[:16]}"
    entry = cache / name
    found = _load(entry, variant, key)
    if found is not None:
        say(f"{name}: cached at {entry}")
        return found
    tools = {t: find_tool(t) for t in ("mmdebstrap", "mkfs.ext4", "qemu-img")}
    if os.geteuid() != 0:
        raise ConfigDriveError(
            "building the guest image needs root: mmdebstrap's root mode keeps file ownership "
            "in the folder that mkfs.ext4 -d copies",
            hint="run the build as root once; later calls use the cached image",
        )
    return build_cached(
        cache, name, lambda e: _load(e, variant, key),
        lambda work: _build(work, variant, key, tools, say), say,
    )  # fmt: skip


def build_cached(
    cache: Path,
    name: str,
    load: Callable[[Path], T | None],
    make: Callable[[Path], None],
    say: Progress,
) -> T:
    """The cache's protocol for one image: under a lock, ``make`` fills a temp folder next to
    the entry, which is renamed into place once complete (``load`` returns None for anything
    incomplete); an interrupted build's folder is removed first, a failed one at once."""
    entry = cache / name
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{name}.lock", say, name):
        found = load(entry)  # another process built it while we waited
        if found is not None:
            say(f"{name}: built by another process at {entry}")
            return found
        for stale in cache.glob(f".tmp-{name}-*"):
            say(f"removing an interrupted build: {stale}")
            _remove_tree(stale)
        work = cache / f".tmp-{name}-{os.getpid()}"
        work.mkdir()
        try:
            make(work)
            if entry.exists():  # left by hand or by an older layout: not ours to trust
                _remove_tree(entry)
            os.rename(work, entry)
            _fsync_dir(cache)
        except BaseException:
            _remove_tree(work)
            raise
    image = load(entry)
    if image is None:
        raise ConfigDriveError(f"{entry}: the image just built is incomplete")
    say(f"{name}: ready at {entry}")
    return image


@contextmanager
def timed_step(title: str, timings: dict[str, float], say: Progress) -> Iterator[None]:
    """Say ``title ...``, run the block, record and say how long it took."""
    say(f"{title} ...")
    start = time.monotonic()
    yield
    timings[title] = round(time.monotonic() - start, 1)
    say(f"{title}: {timings[title]:.1f} s")


def bootstrap(
    mmdebstrap: str,
    root: Path,
    suite: str,
    mirrors: Sequence[str],
    packages: Sequence[str],
    hooks: Sequence[str],
    *,
    variant: str = "apt",
    aptopts: Sequence[str] = (),
) -> None:
    """``mmdebstrap`` in root mode into ``root``, without docs (:data:`DPKG_OPTIONS`), running
    ``hooks`` as essential hooks; refuse a result that left mounts behind."""
    argv = [mmdebstrap, "--mode=root", f"--variant={variant}", "--quiet"]
    argv += [f"--aptopt={opt}" for opt in aptopts]
    argv += [f"--include={','.join(packages)}"]
    argv += [f"--dpkgopt={opt}" for opt in DPKG_OPTIONS]
    argv += [f"--essential-hook={hook}" for hook in hooks]
    run([*argv, suite, root, *mirrors], timeout=3600)
    if _mounts_under(root):
        raise ConfigDriveError(f"mmdebstrap left mounts under {root}: {_mounts_under(root)}")


def _build(
    work: Path, variant: ImageVariant, key: str, tools: dict[str, str], say: Progress
) -> None:
    root = work / "root"
    timings: dict[str, float] = {}

    def step(title: str) -> contextlib.AbstractContextManager[None]:
        return timed_step(title, timings, say)

    with step("mmdebstrap"):
        bootstrap(tools["mmdebstrap"], root, SUITE, MIRRORS, PACKAGES, ESSENTIAL_HOOKS)
    with step("configure"):
        _configure(root, variant)
    settings = variant.tuning
    if settings is not None:
        with step("tune"):
            for change in tune.apply_to_directory(root, settings):
                log.info("tune: %s", change)
    with step("kernels"):
        kernels = _copy_kernels(root, work)
    versions = _package_versions(root, kernels)
    raw = work / "disk.raw"
    with step("mkfs.ext4"):
        run([tools["mkfs.ext4"], "-q", "-F", "-L", "root", "-d", root, raw, DISK_SIZE])
    with step("qemu-img convert"):
        run([tools["qemu-img"], "convert", "-f", "raw", "-O", "qcow2", raw, work / "disk.qcow2"])
        raw.unlink()
    with step("cleanup"):
        _remove_tree(root)
    manifest = {
        "variant": str(variant),
        "key": key,
        "qcow2": "disk.qcow2",
        **kernels,
        "cmdline": CMDLINE,
        "properties": {},
        "packages": versions,
        "build_seconds": timings,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": recipe(variant),
    }
    for path in work.iterdir():
        _fsync_file(path)
    _write_file(work / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    _fsync_dir(work)


def _guest(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)


def _configure(root: Path, variant: ImageVariant) -> None:
    """The image's own settings, written into the folder (no chroot, no mounts)."""
    _write_file(_guest(root, "/etc/fstab"), FSTAB.encode())
    _write_file(_guest(root, "/etc/hostname"), b"localhost\n")
    _write_file(_guest(root, "/etc/hosts"), HOSTS.encode())
    # cloud-init's locale module keeps a set LANG; unset, it runs locale-gen and update-locale
    # for en_US.UTF-8, which fails without the locales package
    _write_file(_guest(root, "/etc/default/locale"), b"LANG=C.UTF-8\n")
    # the host's resolver and the host keys made at install time must not ship
    with suppress(FileNotFoundError):
        _guest(root, "/etc/resolv.conf").unlink()
    for key in _guest(root, "/etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write_file(_guest(root, "/etc/machine-id"), b"")  # generated at first boot
    _lock_root(_guest(root, "/etc/shadow"))
    for name, (path, mode) in GUEST_FILES.items():
        _write_file(_guest(root, path), (GUEST_DIR / name).read_bytes(), mode)
    for link, target in GUEST_LINKS.items():
        _symlink(_guest(root, link), target)
    settings = variant.tuning
    if settings is None or not settings.disable_pollinate:  # enabled, as its postinst leaves it
        wants, unit = POLLINATE_WANTS
        if not _guest(root, unit).exists():
            raise ConfigDriveError(f"pollinate.service is not in the image ({unit})")
        _symlink(_guest(root, wants), unit)


def _lock_root(shadow: Path) -> None:
    lines = shadow.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 2:
            if not fields[1].startswith("!"):
                fields[1] = "!" + (fields[1] or "*")
            lines[i] = ":".join(fields)
    st = shadow.stat()
    _write_file(shadow, "".join(lines).encode(), st.st_mode & 0o7777)
    os.chown(shadow, st.st_uid, st.st_gid)


def _copy_kernels(root: Path, work: Path) -> dict[str, str]:
    """Copy the cloud and generic kernels and initrds out of /boot; return manifest entries."""
    boot = root / "boot"
    found: dict[str, str] = {}
    for vmlinuz in sorted(boot.glob("vmlinuz-*")):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        flavour = "cloud" if version.endswith("-cloud-amd64") else "generic"
        initrd = boot / f"initrd.img-{version}"
        if not initrd.is_file():
            raise ConfigDriveError(f"{initrd} is missing: update-initramfs did not run")
        suffix = "" if flavour == "cloud" else "_generic"
        for src, field, dest in (
            (vmlinuz, f"kernel{suffix}", f"vmlinuz-{flavour}"),
            (initrd, f"initrd{suffix}", f"initrd.img-{flavour}"),
        ):
            shutil.copyfile(src, work / dest)
            os.chmod(work / dest, 0o644)
            found[field] = dest
        found[f"kernel_version{suffix}"] = version
    missing = {"kernel", "kernel_generic"} - set(found)
    if missing:
        raise ConfigDriveError(f"no {' or '.join(sorted(missing))} found in {boot}")
    return found


def _package_versions(root: Path, kernels: dict[str, str]) -> dict[str, str]:
    wanted = {*REPORTED_PACKAGES, *(f"linux-image-{v}" for k, v in kernels.items() if "ver" in k)}
    versions: dict[str, str] = {}
    status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    for para in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in para.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") in wanted:
            versions[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(versions.items()))


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (an incomplete entry)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load(entry: Path, variant: ImageVariant, key: str) -> GuestImage | None:
    """The image in ``entry`` if it is complete and made from this recipe, else None."""
    data = read_json(entry / MANIFEST)
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    parts = ("qcow2", "kernel", "initrd", "kernel_generic", "initrd_generic")
    paths = {p: entry / str(data.get(p, "")) for p in parts}
    if not all(data.get(p) and paths[p].is_file() for p in parts):
        return None
    return GuestImage(variant=variant, cmdline=str(data["cmdline"]), key=key, **paths)


@dataclass(frozen=True)
class CacheEntry:
    """One image in the cache: its folder, its size on disk, whether the current recipes
    build it, and the instance disks that are qcow2 overlays on one of its files."""

    name: str
    path: Path
    size: int
    current: bool
    used_by: tuple[str, ...] = ()

    @property
    def prunable(self) -> bool:
        return not self.current and not self.used_by


def cache_entries(
    cache: Path, current: Collection[str], disks: Sequence[Path] = ()
) -> list[CacheEntry]:
    """The images in ``cache``; ``current`` are the entry names today's recipes build, and
    ``disks`` the instance disks to check for overlays on them."""
    users: dict[Path, list[str]] = {}
    for disk in disks:
        backing = qcow2_backing(disk)
        if backing is not None:
            users.setdefault(backing.resolve().parent, []).append(str(disk))
    entries = []
    for path in sorted(cache.iterdir()) if cache.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        size = sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())
        used = tuple(users.get(path.resolve(), ()))
        entries.append(CacheEntry(path.name, path, size, path.name in current, used))
    return entries


def prune_cache(
    cache: Path, entries: Sequence[CacheEntry], *, dry_run: bool = False
) -> list[CacheEntry]:
    """Remove the prunable entries, each under its build lock: one being built or waited for
    right now is left alone. Returns what was (with ``dry_run``: would be) removed."""
    removed = []
    for entry in entries:
        if not entry.prunable:
            continue
        if dry_run:
            removed.append(entry)
            continue
        lock = cache / f".{entry.name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: in use by a build, left alone", entry.name)
                continue
            _remove_tree(entry.path)
            lock.unlink(missing_ok=True)
            removed.append(entry)
        finally:
            os.close(fd)
    if removed and not dry_run:
        _fsync_dir(cache)
    return removed


@contextmanager
def _locked(path: Path, say: Progress, name: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{name}: waiting for another build of this image")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(path.resolve())
    found = []
    with suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])  # \040
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a build folder; unmount what an interrupted mmdebstrap left in it first, and
    never delete through a mount (that would reach /proc, /sys or /dev of the host)."""
    for point in _mounts_under(path):
        run([find_tool("umount"), "--lazy", point], check=False)
    left = _mounts_under(path)
    if left:
        raise ConfigDriveError(f"cannot remove {path}: still mounted: {', '.join(left)}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# the guest's report


def _b64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json(value: str | bytes | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def parse_check_report(console_text: str) -> dict[str, Any]:
    """Read the last ``CONFIGDRIVE-CHECK`` report in a serial console log.

    Every ``key=value`` line becomes a key. ``X_b64`` values are decoded and stored under both
    ``X_b64`` and ``X``: text as ``str``, ``meta`` as the JSON it holds. ``uptime`` and
    ``uptime_finished`` are floats, ``cloud_init_result`` and ``datasource_list`` parsed JSON,
    ``files`` maps guest path -> content bytes (None: the guest reported it MISSING),
    ``written`` maps each path cloud-config's write_files named -> (mode, content bytes), None
    for what is missing, and ``complete`` is True once ``end`` was seen. Undecodable values
    become None.
    """
    lines: list[str] = []
    for raw in console_text.splitlines():
        at = raw.find(CHECK_PREFIX)
        if at >= 0:
            lines.append(raw[at + len(CHECK_PREFIX) :].strip())
    begins = [i for i, line in enumerate(lines) if line == "begin"]
    if begins:
        lines = lines[begins[-1] + 1 :]
    files: dict[str, bytes | None] = {}
    written: dict[str, tuple[int | None, bytes | None]] = {}
    report: dict[str, Any] = {
        "complete": False,
        "begin": bool(begins),
        "files": files,
        "written": written,
    }
    for line in lines:
        if line == "end":
            report["complete"] = True
            break
        if line.startswith("file "):
            path, _, data = line[len("file ") :].rpartition(" ")
            files[path] = None if data == "MISSING" else _b64(data)
            continue
        if line.startswith("wrote "):
            mode, _, rest = line[len("wrote ") :].partition(" ")
            data, _, path = rest.partition(" ")
            octal = mode if mode.isdigit() and set(mode) <= set("01234567") else ""
            written[path] = (
                int(octal, 8) if octal else None,
                None if data == "MISSING" else _b64(data),
            )
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            continue
        decoded: Any = value
        if key.endswith("_b64"):
            blob = _b64(value)
            if key == "meta_b64":
                decoded = _json(blob)
            else:
                decoded = None if blob is None else blob.decode("utf-8", "replace")
            report[key.removesuffix("_b64")] = decoded
        elif key in ("uptime", "uptime_finished"):
            try:
                decoded = float(value)
            except ValueError:
                decoded = None
        elif key in ("cloud_init_result", "datasource_list"):
            decoded = _json(value)
        report[key] = decoded
    return report
