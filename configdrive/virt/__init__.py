"""Virtualisation backends: define, start, stop and list guests.

Two backends behind one interface: ``libvirt`` (libvirt-python against a real libvirtd with the
QEMU driver) and ``qemu`` (plain QEMU, argv built as pure lists, for hosts without libvirt).
The pure builders live in :mod:`configdrive.virt.domain`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from configdrive.host import BackendKind, HostConfig
from configdrive.virt.domain import GuestSpec

__all__ = ["Backend", "get_backend"]


class Backend(Protocol):
    """What ``configdrive boot/list/delete`` need from a hypervisor."""

    kind: BackendKind

    def check(self) -> None:
        """Raise ConfigDriveError (with a hint) when the backend cannot be used."""

    def definition(self, spec: GuestSpec) -> str:
        """The text stored as the instance's definition (libvirt.xml)."""

    def start(self, spec: GuestSpec) -> None:
        """Define (where applicable) and start the guest."""

    def is_running(self, spec: GuestSpec) -> bool: ...

    def shutdown(self, spec: GuestSpec) -> None:
        """Press the guest's ACPI power button (the guest shuts itself down)."""

    def power_off(self, spec: GuestSpec) -> None:
        """Stop the guest at once (pull the plug), keeping its definition."""

    def change_medium(self, spec: GuestSpec, path: Path) -> None:
        """Swap the running guest's config-drive CD-ROM medium for ``path``."""

    def destroy(self, spec: GuestSpec) -> None:
        """Stop the guest (if running) and forget its definition. Never raises if absent."""


def get_backend(host: HostConfig) -> Backend:
    if host.backend is BackendKind.LIBVIRT:
        from configdrive.virt.libvirt import LibvirtBackend

        return LibvirtBackend(host.libvirt_uri)
    from configdrive.virt.qemu import QemuBackend

    return QemuBackend(host.qemu_binary)
