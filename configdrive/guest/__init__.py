"""The guest side: the images guests boot, the tuning applied to them, and what runs inside.

- :mod:`~configdrive.guest.image`: the project's Debian 12 direct-kernel-boot test images
  (variants tuned, untuned, pollinate, floor, service) and the build helpers (mmdebstrap,
  the content-addressed cache) every image builder shares;
- :mod:`~configdrive.guest.cloudimage`: images shaped like Debian 12 and 13's genericcloud
  (variants stock, datasource, fast, noagent), booted by their own GRUB under BIOS or UEFI;
- :mod:`~configdrive.guest.bootdisk`: their disk (GPT, BIOS boot partition, ESP, ext4 root,
  GRUB for i386-pc and x86_64-efi), written without mounting;
- :mod:`~configdrive.guest.profile`: ``tune-image``'s profiles (datasource, fast) and their
  named steps, as data;
- :mod:`~configdrive.guest.tune`: applying them to a root folder, or offline to a raw or qcow2
  image;
- :mod:`~configdrive.guest.diskimage`: finding a root filesystem in a disk image (whole disk,
  MBR or GPT) and rewriting qcow2 images atomically;
- the in-guest check (``configdrive-check.sh`` and its unit), which reports a first boot on
  the serial console.
"""

from configdrive.guest.bootdisk import DiskLayout, GrubImages, grub_images, layout, make_disk
from configdrive.guest.cloudimage import CloudImage, CloudOS, CloudVariant, build_cloud_image
from configdrive.guest.diskimage import FilesystemInfo, ImageError
from configdrive.guest.image import GuestImage, ImageVariant, build_image, parse_check_report
from configdrive.guest.tune import (
    FAST_PROFILE,
    STEPS,
    TuneResult,
    TuneSettings,
    apply_to_directory,
    tune_image,
)

__all__ = [
    "FAST_PROFILE",
    "STEPS",
    "CloudImage",
    "CloudOS",
    "CloudVariant",
    "DiskLayout",
    "FilesystemInfo",
    "GrubImages",
    "GuestImage",
    "ImageError",
    "ImageVariant",
    "TuneResult",
    "TuneSettings",
    "apply_to_directory",
    "build_cloud_image",
    "build_image",
    "grub_images",
    "layout",
    "make_disk",
    "parse_check_report",
    "tune_image",
]
