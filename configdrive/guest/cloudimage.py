"""Cloud-shaped Debian 12 and 13 guest images, booted by their own GRUB under BIOS or UEFI.

``build_cloud_image`` makes an image shaped like Debian's ``genericcloud`` amd64 image
(docs/guests.md, facts in the reference notes on Debian's cloud images):

- the package set of its FAI classes (SYSTEM_BOOT, CLOUD, GENERIC, AMD64), without
  Recommends, on ``minbase``; the EXTRAS class (interactive tools such as man-db, vim,
  tcpdump, none of which runs at boot) is left out to keep the build short;
- netplan.io rendering to systemd-networkd, systemd-resolved with ``/etc/resolv.conf`` linked
  to its upstream-servers file, no ifupdown;
- cloud-init as the package ships it plus Debian's one ``01_debian_cloud.cfg`` (the ``debian``
  user), so ds-identify decides the datasource;
- :mod:`configdrive.guest.bootdisk`'s disk: GPT with a BIOS boot partition, an ESP and an
  ext4 root found by PARTUUID (fstab and ``root=``), grown at first boot by
  ``cloud-initramfs-growroot`` and ``x-systemd.growfs``;
- GRUB for i386-pc and x86_64-efi from the guest's own packages: ``grub-mkimage`` runs chrooted
  in the root folder (a file-only step: no /proc or /dev needed, so nothing is mounted), which
  keeps trixie's GRUB 2.12 modules with their own mkimage.

What differs from Debian's build, on purpose: UUIDs are derived from the recipe instead of
drawn at random (a cached image is reproducible); ``grub.cfg`` is written here, with the
kernel command line ``grub-cloud-amd64`` gives, rather than by ``grub-mkconfig`` with a fake
``grub-probe``; the ESP holds GRUB itself, not shim (OVMF runs without Secure Boot here); and
the image carries the project's in-guest check (``configdrive-check.service``), which reports
the first boot on ttyS0 and changes nothing else.

Variants: ``stock`` is the image as Debian ships it; every other variant is the stock disk
copied and tuned offline by :func:`configdrive.guest.tune.tune_image` (no rebuild), which is
the same path an operator's own image takes. One disk serves both firmwares: the image
directory holds ``manifest.json`` (``"firmware": "bios"``) and ``manifest-uefi.json``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configdrive.errors import ConfigDriveError
from configdrive.guest import bootdisk, tune
from configdrive.guest.image import (  # the build helpers both image builders share
    DPKG_OPTIONS,
    GUEST_DIR,
    GUEST_FILES,
    GUEST_LINKS,
    ImageVariant,
    _fsync_dir,
    _fsync_file,
    _guest,
    _package_versions,
    _remove_tree,
    _symlink,
    _write_file,
    bootstrap,
    build_cached,
    default_cache_dir,
    image_key,
    read_json,
    timed_step,
)
from configdrive.run import find_tool, run

__all__ = [
    "DRIVERS",
    "CloudImage",
    "CloudOS",
    "CloudVariant",
    "build_cloud_image",
    "cloud_recipe",
    "current_cache_names",
    "driver_inventory",
    "noagent_changes",
    "variant_name",
]

log = logging.getLogger("configdrive.guest.cloudimage")

Progress = Callable[[str], None]

# Bump when the build steps change in a way the recipe does not show (code, not data).
RECIPE_VERSION = 1
DISK_SIZE = 3 * 1024**3  # Debian's genericcloud size since 2025-01
KERNEL_ARGS = "ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"
MANIFESTS = {"bios": "manifest.json", "uefi": "manifest-uefi.json"}
# Drivers the config drive may need, per bus and filesystem (the pre-boot check reads these)
DRIVERS = ("ahci", "ata_piix", "sr_mod", "cdrom", "sd_mod", "usb_storage", "virtio_scsi",
           "virtio_blk", "isofs", "vfat")  # fmt: skip

_SYSTEM_BOOT = (
    "sudo", "libpam-systemd", "systemd-resolved", "libnss-myhostname", "netplan.io", "polkitd",
    "unattended-upgrades", "apparmor", "zstd", "apt-utils", "init", "iptables", "iputils-ping",
    "less", "nano", "netbase", "vim-tiny", "whiptail", "systemd-timesyncd",
)  # fmt: skip
_CLOUD = ("openssh-server", "ssh-import-id", "cloud-initramfs-growroot")
_GENERIC = ("cloud-init", "cloud-guest-utils")
_TRIXIE_ADDS = ("libnss-resolve", "linux-sysctl-defaults")
_AMD64 = ("linux-image-cloud-amd64", "grub-cloud-amd64", "initramfs-tools", "e2fsprogs")


@dataclass(frozen=True)
class Release:
    suite: str
    version: str
    packages: tuple[str, ...]
    esp_fstab_options: str  # the ESP's fstab options and passno


class CloudOS(enum.StrEnum):
    DEBIAN_12 = "debian-12"
    DEBIAN_13 = "debian-13"

    @property
    def release(self) -> Release:
        return _RELEASES[self]

    @property
    def mirrors(self) -> tuple[str, ...]:
        suite = self.release.suite
        return (
            f"deb http://deb.debian.org/debian {suite} main",
            f"deb http://deb.debian.org/debian {suite}-updates main",
            f"deb http://deb.debian.org/debian-security {suite}-security main",
        )


_RELEASES = {
    # bookworm removes libnss-resolve (debian-cloud, 2024-03)
    CloudOS.DEBIAN_12: Release(
        "bookworm", "12", (*_SYSTEM_BOOT, *_CLOUD, *_GENERIC, *_AMD64), "defaults 0 0"
    ),
    CloudOS.DEBIAN_13: Release(
        "trixie",
        "13",
        (*_SYSTEM_BOOT, *_TRIXIE_ADDS, *_CLOUD, *_GENERIC, *_AMD64, "dosfstools"),
        "defaults,umask=077 0 2",
    ),
}


class CloudVariant(enum.StrEnum):
    """``stock``: as Debian ships it. The others are the stock disk copied and tuned offline:
    ``datasource`` by tune-image's default profile, ``fast`` by ``--profile fast`` (less any
    skipped steps), and ``noagent`` is the fast image with cloud-init disabled and what it
    would have done at first boot done at build time instead (the benchmark's floor)."""

    STOCK = "stock"
    DATASOURCE = "datasource"
    FAST = "fast"
    NOAGENT = "noagent"

    def tuning(self, skip: tuple[str, ...] = ()) -> tune.TuneSettings | None:
        if self is CloudVariant.STOCK:
            return None
        if self is CloudVariant.DATASOURCE:
            return tune.TuneSettings()
        return tune.TuneSettings(steps=tuple(s for s in tune.FAST_PROFILE if s not in skip))


# The no-agent image: what cloud-init would have done, done once at build time (with keys made
# then, kept in the image directory), and cloud-init itself switched off.
NOAGENT_LOGIN_KEY = "login_key"  # the private key beside the disk; .pub is root's key
NOAGENT_NETWORK = "/etc/systemd/network/90-configdrive-dhcp.network"
NOAGENT_HOST_KEYS = (("ed25519", ""), ("ecdsa", "256"), ("rsa", "3072"))  # openssh's postinst


def noagent_changes(keys: dict[str, str]) -> tuple[tune.Change, ...]:
    """The edits that make the no-agent image from the fast one; ``keys`` maps a guest path
    (host keys, root's authorized_keys) to its text (pure)."""
    changes = [
        tune.Change("write", "/etc/cloud/cloud-init.disabled",
                    "disable cloud-init (its generator then starts none of its units)",
                    content="", mode=0o644),
        tune.Change("write", NOAGENT_NETWORK, "DHCP on every Ethernet link (cloud-init would "
                    "have written the network config)",
                    content="# Written by configdrive (the no-agent image).\n[Match]\n"
                    "Name=en* eth*\n\n[Network]\nDHCP=yes\n", mode=0o644),
        tune.Change("mkdir", "/root/.ssh", "root's SSH directory", mode=0o700),
        # the project's check unit wants cloud-final.service, which would pull every
        # cloud-init unit back in
        tune.Change("remove", "/etc/systemd/system/multi-user.target.wants/"
                    "configdrive-check.service", "no in-guest check (it pulls cloud-init in)"),
    ]  # fmt: skip
    for path, text in sorted(keys.items()):
        private = path.endswith(("_key", "authorized_keys"))
        changes.append(tune.Change("write", path, "made at build time", content=text,
                                   mode=0o600 if private else 0o644))  # fmt: skip
    return tuple(changes)


def _make_noagent_keys(work: Path) -> dict[str, str]:
    """Host keys as openssh-server's postinst makes them, and a login key pair for root; the
    login key's private half stays in ``work`` (the image directory)."""
    keygen = find_tool("ssh-keygen")
    keys: dict[str, str] = {}
    tmp = work / "keys.tmp"
    tmp.mkdir()
    try:
        for kind, bits in NOAGENT_HOST_KEYS:
            path = tmp / f"ssh_host_{kind}_key"
            run([keygen, "-q", "-t", kind, *(["-b", bits] if bits else []), "-N", "",
                 "-C", "root@localhost", "-f", path])  # fmt: skip
            keys[f"/etc/ssh/{path.name}"] = path.read_text()
            keys[f"/etc/ssh/{path.name}.pub"] = path.with_name(path.name + ".pub").read_text()
    finally:
        shutil.rmtree(tmp)
    login = work / NOAGENT_LOGIN_KEY
    run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "configdrive-noagent", "-f", login])
    keys["/root/.ssh/authorized_keys"] = login.with_name(login.name + ".pub").read_text()
    return keys


@dataclass(frozen=True)
class CloudImage:
    os: CloudOS
    variant: CloudVariant
    qcow2: Path
    key: str

    @property
    def directory(self) -> Path:
        return self.qcow2.parent

    def manifest(self, firmware: str) -> Path:
        """The manifest to boot this disk with ``firmware`` (bios or uefi)."""
        return self.directory / MANIFESTS[firmware]


# ---------------------------------------------------------------------------------------------
# the recipe (pure)

DEBIAN_CLOUD_CFG = """\
# Debian's cloud images add this one file (01_debian_cloud.cfg): the default user and apt's
# mirror lists. Written by configdrive's image build, with the settings Debian's build writes.
apt:
  generate_mirrorlists: true
system_info:
  default_user:
    name: debian
    lock_passwd: True
    gecos: Debian
    groups: [adm, audio, cdrom, dialout, dip, floppy, plugdev, sudo, video]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
"""


def _layout(os_: CloudOS) -> bootdisk.DiskLayout:
    return bootdisk.layout(DISK_SIZE, f"{os_}-r{RECIPE_VERSION}")


def fstab(os_: CloudOS) -> str:
    disk = _layout(os_)
    return (
        f"PARTUUID={disk.root.uuid} / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1\n"
        f"PARTUUID={disk.esp.uuid} /boot/efi vfat {os_.release.esp_fstab_options}\n"
    )


def etc_files(os_: CloudOS) -> dict[str, str]:
    """The files the build writes into the root, by guest path."""
    return {
        "/etc/fstab": fstab(os_),
        "/etc/cloud/cloud.cfg.d/01_debian_cloud.cfg": DEBIAN_CLOUD_CFG,
        "/etc/modprobe.d/blacklist.conf": "blacklist pcspkr\nblacklist floppy\n",
        # Debian's images boot with a set locale: cloud-init 22.4 otherwise "generates" its
        # default en_US.UTF-8 with an argument Debian's locale-gen ignores, and its locale
        # module fails (canonical/cloud-init#4195)
        "/etc/default/locale": "LANG=C.UTF-8\n",
    }


def grub_cfg(os_: CloudOS, kernel_version: str) -> str:
    """/boot/grub/grub.cfg: no menu wait (Debian's CLOUD class sets the timeout to 0), the
    kernel found by the root filesystem's UUID and told its root by PARTUUID."""
    disk = _layout(os_)
    return (
        "# Written by configdrive's image build: what grub-mkconfig writes for Debian's cloud\n"
        "# images, reduced to the one entry.\n"
        "set timeout=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input console serial\n"
        "terminal_output console serial\n"
        "insmod part_gpt\n"
        "insmod ext2\n"
        f"search --no-floppy --fs-uuid --set=root {disk.root_fs_uuid}\n"
        f"menuentry 'Debian GNU/Linux {os_.release.version}' {{\n"
        "\tinsmod gzio\n"
        f"\tlinux /boot/vmlinuz-{kernel_version} root=PARTUUID={disk.root.uuid} {KERNEL_ARGS}\n"
        f"\tinitrd /boot/initrd.img-{kernel_version}\n"
        "}\n"
    )


def cloud_recipe(
    os_: CloudOS, variant: CloudVariant = CloudVariant.STOCK, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Everything the image is made from, as JSON-able data (the cache key hashes it)."""
    guest = {n: hashlib.sha256((GUEST_DIR / n).read_bytes()).hexdigest() for n in GUEST_FILES}
    data: dict[str, Any] = {
        "recipe_version": RECIPE_VERSION,
        "os": str(os_),
        "suite": os_.release.suite,
        "mirrors": list(os_.mirrors),
        "packages": list(os_.release.packages),
        "dpkg_options": list(DPKG_OPTIONS),
        "disk_size": DISK_SIZE,
        "files": etc_files(os_),
        "kernel_args": KERNEL_ARGS,
        "grub_cfg": grub_cfg(os_, "VERSION"),
        "grub_early": [bootdisk.early_config(_layout(os_).root_fs_uuid, p) for p in ("pc", "efi")],
        "guest_files": guest,
    }
    settings = variant.tuning(skip)
    if settings is not None:
        data["variant"] = str(variant)
        data["tune_changes"] = [vars(c) for c in tune.planned_changes(settings)]
    if skip:
        data["skip"] = list(skip)
    if variant is CloudVariant.NOAGENT:  # the keys are drawn at build time: their paths only
        keys = [f"/etc/ssh/ssh_host_{k}_key" for k, _ in NOAGENT_HOST_KEYS]
        paths = [*keys, *(k + ".pub" for k in keys), "/root/.ssh/authorized_keys"]
        data["noagent"] = [vars(c) for c in noagent_changes(dict.fromkeys(paths, ""))]
    return data


def variant_name(variant: CloudVariant, skip: tuple[str, ...] = ()) -> str:
    """``fast``, or ``fast-minus-STEP[-STEP…]`` when steps are skipped."""
    return f"{variant}-minus-{'-'.join(skip)}" if skip else str(variant)


def current_cache_names() -> set[str]:
    """The cache entry names today's recipes build: every test-image variant, every cloud
    image variant of each release, and the fast variant less each one step (the boot
    benchmark's ``fast-minus-STEP`` modes)."""
    names = {f"{v}-{image_key(v)[:16]}" for v in ImageVariant}
    for os_ in CloudOS:
        for variant in CloudVariant:
            skips: list[tuple[str, ...]] = [()]
            if variant is CloudVariant.FAST:
                skips += [(step,) for step in tune.STEPS]
            for skip in skips:
                key = _key(os_, variant, skip)
                names.add(f"{os_}-{variant_name(variant, skip)}-{key[:16]}")
    return names


def _key(os_: CloudOS, variant: CloudVariant, skip: tuple[str, ...] = ()) -> str:
    blob = json.dumps(cloud_recipe(os_, variant, skip), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# building


def build_cloud_image(
    os_: CloudOS,
    variant: CloudVariant = CloudVariant.STOCK,
    cache_dir: Path | None = None,
    *,
    skip: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> CloudImage:
    """The image from the cache, built first if it is not there (the stock one too, for a
    tuned variant). ``skip``: fast-profile steps to leave out (the fast variant only)."""
    os_, variant = CloudOS(os_), CloudVariant(variant)
    skip = tuple(skip)
    if skip and variant is not CloudVariant.FAST:
        raise ConfigDriveError(f"only the fast variant has steps to skip, not {variant}")
    for step in skip:
        if step not in tune.STEPS:
            raise ConfigDriveError(
                f"{step!r} is not a step of the fast profile (known: {', '.join(tune.STEPS)})"
            )
    say = progress or (lambda _msg: None)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _key(os_, variant, skip)
    name = f"{os_}-{variant_name(variant, skip)}-{key[:16]}"
    entry = cache / name
    found = _load(entry, os_, variant, key)
    if found is not None:
        say(f"{name}: cached at {entry}")
        return found
    stock = None
    if variant is not CloudVariant.STOCK:
        stock = build_cloud_image(os_, cache_dir=cache, progress=progress)
    if stock is None and os.geteuid() != 0:
        raise ConfigDriveError(
            "building a cloud image needs root: mmdebstrap's root mode keeps file ownership, "
            "and grub-mkimage runs chrooted in the root folder",
            hint="run the build as root once; later calls use the cached image",
        )

    def make(work: Path) -> None:
        if stock is None:
            manifest = _build_stock(work, os_, key, say)
        else:
            manifest = _tune_copy(work, stock, variant, skip, key, say)
        _write_manifests(work, manifest)

    return build_cached(cache, name, lambda e: _load(e, os_, variant, key), make, say)


def _build_stock(work: Path, os_: CloudOS, key: str, say: Progress) -> dict[str, Any]:
    tools = {t: find_tool(t) for t in ("mmdebstrap", "qemu-img", "chroot")}
    root = work / "root"
    timings: dict[str, float] = {}
    disk = _layout(os_)
    with timed_step("mmdebstrap", timings, say):
        hooks = (
            # before the kernel's initramfs is made: its fsck hook reads the root's type from
            # fstab, and cannot probe a PARTUUID on the build host, so it is told
            f"printf '%s' '{fstab(os_)}' > \"$1/etc/fstab\"",
            'mkdir -p "$1/etc/initramfs-tools/conf.d"'
            ' && echo FSTYPE=ext4 > "$1/etc/initramfs-tools/conf.d/configdrive-fstype"',
            # Debian's kernel-img.conf for cloud images: no /vmlinuz or /initrd.img symlinks
            "printf 'do_symlinks = no\\n' > \"$1/etc/kernel-img.conf\"",
        )
        bootstrap(tools["mmdebstrap"], root, os_.release.suite, os_.mirrors,
                  os_.release.packages, hooks, variant="minbase",
                  aptopts=('APT::Install-Recommends "false"',))  # fmt: skip
    with timed_step("configure", timings, say):
        version = _kernel_version(root)
        _configure(root, os_, version, tools["chroot"])
    with timed_step("grub", timings, say):
        grub = _grub_images(root, disk, tools["chroot"])
    inventory = driver_inventory(root, version)
    versions = _package_versions(root, {"kernel_version": version})
    raw = work / "disk.raw"
    with timed_step("disk", timings, say):
        bootdisk.make_disk(raw, disk, root, grub)
    with timed_step("qemu-img convert", timings, say):
        run([tools["qemu-img"], "convert", "-f", "raw", "-O", "qcow2", raw, work / "disk.qcow2"])
        raw.unlink()
    with timed_step("cleanup", timings, say):
        _remove_tree(root)
    return {
        "os": str(os_),
        "variant": str(CloudVariant.STOCK),
        "key": key,
        "qcow2": "disk.qcow2",
        "kernel_version": version,
        "login_user": "debian",  # 01_debian_cloud.cfg's default user
        "drivers": inventory,
        "partuuid_root": disk.root.uuid,
        "packages": versions,
        "build_seconds": timings,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": cloud_recipe(os_),
    }


def _kernel_version(root: Path) -> str:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ConfigDriveError(f"{root}/boot holds {len(kernels)} kernels, not 1: {kernels}")
    if not (root / "boot" / f"initrd.img-{kernels[0]}").is_file():
        raise ConfigDriveError(f"no initrd for kernel {kernels[0]}: update-initramfs did not run")
    return kernels[0]


def _configure(root: Path, os_: CloudOS, version: str, chroot: str) -> None:
    """Debian's build steps, as file writes (and systemctl's offline enable, chrooted)."""
    for path, text in etc_files(os_).items():
        _write_file(_guest(root, path), text.encode())
    # networkd and resolved enabled; resolv.conf -> resolved's upstream-servers file
    run([chroot, root, "systemctl", "enable", "systemd-networkd.service",
         "systemd-resolved.service"])  # fmt: skip
    resolv = _guest(root, "/etc/resolv.conf")
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.symlink_to("/run/systemd/resolve/resolv.conf")
    # sshd: Debian's 11-misc
    sshd = _guest(root, "/etc/ssh/sshd_config")
    text = sshd.read_text()
    text = text.replace("\nPasswordAuthentication yes", "\nPasswordAuthentication no")
    if "\nPasswordAuthentication no" not in text:
        text += "PasswordAuthentication no\n"
    _write_file(sshd, (text.rstrip("\n") + "\nClientAliveInterval 120\n").encode())
    # GRUB: the modules where grub-install puts them, the config it reads
    for platform in ("i386-pc", "x86_64-efi"):
        src = root / "usr/lib/grub" / platform
        shutil.copytree(src, root / "boot/grub" / platform, dirs_exist_ok=True)
    _write_file(_guest(root, "/boot/grub/grub.cfg"), grub_cfg(os_, version).encode())
    # the in-guest check; a serial getty comes from console=ttyS0 (systemd's getty generator)
    for name, (path, mode) in GUEST_FILES.items():
        _write_file(_guest(root, path), (GUEST_DIR / name).read_bytes(), mode)
    for link, target in GUEST_LINKS.items():
        if "configdrive-check" in link:
            _symlink(_guest(root, link), target)
    # Debian's LAST/10-cleanup: no host keys, machine-id or hostname ships; no apt lists
    for key in _guest(root, "/etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write_file(_guest(root, "/etc/machine-id"), b"")
    _write_file(_guest(root, "/etc/hostname"), b"")
    _guest(root, "/var/lib/dbus/machine-id").unlink(missing_ok=True)
    for lists in _guest(root, "/var/lib/apt/lists").glob("*_*"):
        lists.unlink()


def _grub_images(root: Path, disk: bootdisk.DiskLayout, chroot: str) -> bootdisk.GrubImages:
    work = root / "tmp" / "configdrive-grub"
    work.mkdir(parents=True)
    try:
        return bootdisk.grub_images(Path("/usr/lib/grub"), disk.root_fs_uuid, work, chroot=root)
    finally:
        shutil.rmtree(work)


def driver_inventory(root: Path, version: str) -> dict[str, str]:
    """For each of :data:`DRIVERS`: ``builtin`` (in the kernel), ``module`` (a loadable module
    under /lib/modules) or ``missing``, read from the guest's modules.builtin and modules.dep."""
    base = root / "lib" / "modules" / version
    if not base.is_dir():
        base = root / "usr" / "lib" / "modules" / version

    def names(path: Path) -> set[str]:
        found = set()
        for line in path.read_text().splitlines() if path.is_file() else ():
            module = line.split(":", 1)[0].rsplit("/", 1)[-1]
            found.add(module.split(".ko", 1)[0].replace("-", "_"))
        return found

    builtin, modules = names(base / "modules.builtin"), names(base / "modules.dep")
    if not modules:
        raise ConfigDriveError(f"{base}/modules.dep is missing or empty: depmod did not run")
    return {
        d: "builtin" if d in builtin else "module" if d in modules else "missing" for d in DRIVERS
    }


def _tune_copy(
    work: Path,
    stock: CloudImage,
    variant: CloudVariant,
    skip: tuple[str, ...],
    key: str,
    say: Progress,
) -> dict[str, Any]:
    settings = variant.tuning(skip)
    assert settings is not None
    extra: dict[str, Any] = {}
    if variant is CloudVariant.NOAGENT:
        settings = dataclasses.replace(settings, extra=noagent_changes(_make_noagent_keys(work)))
        extra = {"login_user": "root", "identity": NOAGENT_LOGIN_KEY, "cloud_init": "disabled"}
    timings: dict[str, float] = {}
    disk = work / "disk.qcow2"
    with timed_step("copy the stock disk", timings, say):
        run([find_tool("qemu-img"), "convert", "-f", "qcow2", "-O", "qcow2", stock.qcow2, disk])
    with timed_step("tune", timings, say):
        result = tune.tune_image(disk, settings, progress=say)
    manifest = dict(read_json(stock.manifest("bios")) or {})
    manifest.pop("firmware", None)
    manifest.update(
        variant=variant_name(variant, skip),
        key=key,
        stock_key=stock.key,
        tune_applied=[str(c) for c in result.changes],
        build_seconds=timings,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        recipe=cloud_recipe(stock.os, variant, skip),
        **extra,
    )
    return manifest


def _write_manifests(work: Path, manifest: dict[str, Any]) -> None:
    for path in work.iterdir():
        _fsync_file(path)
    for firmware, name in MANIFESTS.items():
        doc = {**manifest, "firmware": firmware}
        _write_file(work / name, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
    _fsync_dir(work)


def _load(entry: Path, os_: CloudOS, variant: CloudVariant, key: str) -> CloudImage | None:
    """The image in ``entry`` if it is complete and made from this recipe, else None."""
    docs = [read_json(entry / name) for name in MANIFESTS.values()]
    if not all(isinstance(d, dict) and d.get("key") == key for d in docs):
        return None
    qcow2 = entry / "disk.qcow2"
    if not qcow2.is_file():
        return None
    return CloudImage(os=os_, variant=variant, qcow2=qcow2, key=key)
