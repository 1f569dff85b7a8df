"""The guest side: what runs or is laid down inside the guest.

So far: :mod:`configdrive.guest.bootdisk`, the cloud-shaped boot disk (GPT, BIOS boot
partition, ESP, ext4 root, GRUB for BIOS and UEFI), and the files of the in-guest check
(``configdrive-check.sh`` and its unit), which :mod:`configdrive.image` installs.
"""

from configdrive.guest.bootdisk import DiskLayout, GrubImages, grub_images, layout, make_disk

__all__ = ["DiskLayout", "GrubImages", "grub_images", "layout", "make_disk"]
