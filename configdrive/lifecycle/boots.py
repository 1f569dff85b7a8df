"""What cloud-init applies again on every boot, and what only for a new instance.

An updated drive that keeps the instance-id (``update --instance-id keep``) reaches a guest
only through the modules that run on every boot: cloud-init runs every other module once per
instance-id. Which modules run every boot depends on the version. It is their ``frequency``
(``always``) in the module's code, or the override in the stage lists of Debian's
``/etc/cloud/cloud.cfg``. The table below holds those modules for each supported cloud-init.
``tests/test_boots.py`` derives it again from each version's own code and ``cloud.cfg``, and
fails when they part.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EVERY_BOOT", "SETTINGS", "EveryBoot", "every_boot"]


@dataclass(frozen=True)
class EveryBoot:
    """One cloud-init release: its version prefix, where it ships, and its every-boot
    modules by stage (Debian's ``cloud.cfg``)."""

    version: str  # "22.4", "25.1", "26"
    distribution: str
    init: tuple[str, ...]
    config: tuple[str, ...]
    final: tuple[str, ...]

    @property
    def modules(self) -> tuple[str, ...]:
        return self.init + self.config + self.final


EVERY_BOOT = (
    EveryBoot(
        "22.4",
        "Debian 12",
        init=("migrator", "bootcmd", "growpart", "resizefs", "update_hostname", "update_etc_hosts"),
        config=("disable_ec2_metadata",),
        final=("chef", "refresh_rmc_and_interface", "scripts_per_boot", "final_message"),
    ),
    EveryBoot(
        "25.1",
        "Debian 13",
        init=("bootcmd", "growpart", "resizefs", "update_hostname", "update_etc_hosts"),
        config=("disable_ec2_metadata",),
        final=("chef", "scripts_per_boot", "final_message"),
    ),
    EveryBoot(
        "26",
        "Debian sid",
        init=("bootcmd", "growpart", "resizefs", "update_hostname", "update_etc_hosts"),
        config=("disable_ec2_metadata",),
        final=("chef", "scripts_per_boot", "final_message"),
    ),
)

# What each every-boot module takes from the drive, in the words an operator uses.
SETTINGS = {
    "bootcmd": "user data's bootcmd",
    "growpart": "growing the root partition (growpart)",
    "resizefs": "resizing the root filesystem (resize_rootfs)",
    "update_hostname": "the hostname (meta data's hostname, unless preserve_hostname)",
    "update_etc_hosts": "/etc/hosts, when user data sets manage_etc_hosts",
    "disable_ec2_metadata": "user data's disable_ec2_metadata",
    "chef": "user data's chef",
    "scripts_per_boot": "scripts in /var/lib/cloud/scripts/per-boot",
    "final_message": "user data's final_message",
    "migrator": "cloud-init's own state migration",
    "refresh_rmc_and_interface": "IBM RMC's interface (PowerVM only)",
}


def every_boot(version: str) -> EveryBoot:
    """The table entry for a cloud-init version (``22.4.2``, ``25.1``, ``26.2``…)."""
    for entry in EVERY_BOOT:
        if version == entry.version or version.startswith(entry.version + "."):
            return entry
    known = ", ".join(e.version for e in EVERY_BOOT)
    raise KeyError(f"cloud-init {version} is not one of the supported versions ({known})")
