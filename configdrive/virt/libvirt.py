"""libvirt backend: libvirt-python against a running libvirtd with the QEMU driver."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from configdrive.errors import ConfigDriveError
from configdrive.host import BackendKind
from configdrive.virt.domain import GuestSpec, domain_xml

__all__ = ["LibvirtBackend"]


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise ConfigDriveError(
            "libvirt-python is not installed",
            hint="scripts/setup --system installs it, or use backend = qemu",
        ) from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions
    return libvirt


class LibvirtBackend:
    kind = BackendKind.LIBVIRT

    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self._conn: Any = None

    def _connect(self) -> Any:
        if self._conn is None:
            libvirt = _libvirt()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise ConfigDriveError(
                    f"cannot connect to libvirtd at {self.uri}: {exc.get_error_message()}",
                    hint="start libvirtd (scripts/libvirtd start), or set backend = qemu",
                ) from None
        return self._conn

    def check(self) -> None:
        self._connect()

    def definition(self, spec: GuestSpec) -> str:
        return domain_xml(spec)

    def start(self, spec: GuestSpec) -> None:
        libvirt = _libvirt()
        conn = self._connect()
        try:
            dom = conn.defineXML(domain_xml(spec))
            dom.create()
        except libvirt.libvirtError as exc:
            self.destroy(spec)
            raise ConfigDriveError(
                f"libvirt could not start {spec.name}: {exc.get_error_message()}"
            ) from None

    def _lookup(self, spec: GuestSpec) -> Any:
        libvirt = _libvirt()
        try:
            return self._connect().lookupByUUIDString(spec.uuid)
        except libvirt.libvirtError:
            return None

    def is_running(self, spec: GuestSpec) -> bool:
        dom = self._lookup(spec)
        return bool(dom is not None and dom.isActive())

    def destroy(self, spec: GuestSpec) -> None:
        libvirt = _libvirt()
        dom = self._lookup(spec)
        if dom is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()

    def shutdown(self, spec: GuestSpec) -> None:
        libvirt = _libvirt()
        dom = self._lookup(spec)
        if dom is None or not dom.isActive():
            return
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            raise ConfigDriveError(
                f"libvirt could not shut {spec.name} down: {exc.get_error_message()}"
            ) from None

    def power_off(self, spec: GuestSpec) -> None:
        libvirt = _libvirt()
        dom = self._lookup(spec)
        with contextlib.suppress(libvirt.libvirtError):
            if dom is not None and dom.isActive():
                dom.destroy()  # libvirt's word for pulling the plug; the definition stays

    def change_medium(self, spec: GuestSpec, path: Path) -> None:
        libvirt = _libvirt()
        dom = self._lookup(spec)
        if dom is None or not dom.isActive():
            raise ConfigDriveError(f"{spec.name} is not running: there is no medium to swap")
        # the CD-ROM's own <disk> element from the definition, with the new source
        cdroms = [d for d in ET.fromstring(domain_xml(spec)).iter("disk")
                  if d.get("device") == "cdrom"]  # fmt: skip
        if not cdroms:
            raise ConfigDriveError(f"{spec.name}'s config drive is not a CD-ROM")
        cdrom = cdroms[0]
        source = cdrom.find("source")
        assert source is not None
        # libvirt leaves a medium whose path is unchanged alone, and the new drive has the old
        # one's path: eject first (forced, as a guest locks the tray of a medium it has
        # opened), then insert the new file
        cdrom.remove(source)
        ejected = ET.tostring(cdrom, encoding="unicode")
        source.set("file", str(path))
        cdrom.insert(1, source)
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE
        try:
            dom.updateDeviceFlags(ejected, live | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)
            dom.updateDeviceFlags(
                ET.tostring(cdrom, encoding="unicode"), live | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            )
        except libvirt.libvirtError as exc:
            raise ConfigDriveError(
                f"libvirt could not swap {spec.name}'s CD-ROM medium: {exc.get_error_message()}"
            ) from None
