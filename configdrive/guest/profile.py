"""``tune-image``'s profiles as data: what a guest should have for a fast first boot (pure).

The ``datasource`` profile (the default) is three edits; ``fast`` adds the named steps of
:data:`STEPS`, each measured by the boot benchmark (docs/guests.md). Nothing here touches a
guest: :func:`planned_changes` lists every edit, :func:`applicable_changes` those that apply to
a guest given which of its paths exist, and :mod:`configdrive.guest.tune` makes the ones still
missing, in a root folder or offline in a disk image.

The datasource profile:

1. ``/etc/cloud/cloud.cfg.d/99_configdrive.cfg`` (0644 root:root): ``datasource_list`` on ONE
   line (ds-identify reads that key line by line) and ``datasource: {Ec2: {timeout, max_wait}}``:
   cloud-init prefers the config drive and gives up on the network metadata service fast.
2. pollinate, when its unit is installed (an HTTPS entropy fetch ordered ``Before=ssh.service``,
   ``After=network-online.target``; with no network curl waits 10 s, and it retries every boot
   until it has seeded once): mask ``pollinate.service`` (symlink to /dev/null), drop its
   ``multi-user.target.wants`` link and mark it seeded (``/var/cache/pollinate/seeded``; the
   directory is created ``pollinate:daemon`` 0755 like the package's postinst/adduser does).
3. reread-drive: a oneshot unit before ``cloud-init-local.service`` that removes cloud-init's
   cached datasource (``/var/lib/cloud/instance/obj.pkl``) when a ``config-2`` filesystem is
   attached. cloud-init's ConfigDrive datasource (22.4, 25.1, 26.x) restores that cache instead
   of reading the drive whenever the instance-id equals the DMI system-uuid, which it does on
   nova's guests and configdrive's, so an updated drive (``configdrive update``) would never
   be read. Without the cache, cloud-init reads the drive; the instance-id is unchanged, so no
   per-instance module runs again. With no drive attached the cache stays, and so does the
   instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from configdrive.errors import SpecError

__all__ = [
    "CFG_PATH",
    "EXISTENCE_SUFFICES",
    "FAST_PROFILE",
    "MASK_PATH",
    "POLLINATE_CACHE",
    "POLLINATE_UNITS",
    "REREAD_UNIT",
    "REREAD_UNIT_TEXT",
    "REREAD_WANTS",
    "SEEDED_PATH",
    "STEPS",
    "WAIT_ONLINE_UNITS",
    "WANTS_PATH",
    "Change",
    "Step",
    "TuneSettings",
    "applicable_changes",
    "cfg_content",
    "planned_changes",
]

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
EXISTENCE_SUFFICES = frozenset({SEEDED_PATH})
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
    changes, _, _ = applicable_changes(settings, lambda _path: True)  # a guest with everything
    return changes


def applicable_changes(
    settings: TuneSettings, exists: Callable[[str], bool]
) -> tuple[list[Change], list[str], bool]:
    """The edits ``settings`` asks for that apply to a guest in which ``exists(path)`` tells
    which paths are there: the edits, notes on what was left out and why, and whether
    pollinate is installed. Whether each edit is still missing is the applier's business."""
    notes: list[str] = []
    wanted = [_cfg_change(settings)]
    pollinate = any(exists(p) for p in POLLINATE_UNITS)
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
        if needs is not None and not any(exists(p) for p in needs):
            notes.append(f"step {name} skipped: the guest has none of {', '.join(needs)}")
            continue
        wanted += STEPS[name].changes
    wanted += settings.extra
    return wanted, notes, pollinate
