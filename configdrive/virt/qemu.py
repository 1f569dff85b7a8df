"""Plain-QEMU backend: start a daemonized QEMU from a pure argv, control it by pidfile."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from configdrive.errors import ConfigDriveError
from configdrive.host import BackendKind
from configdrive.run import find_tool, run
from configdrive.virt.domain import GuestSpec, config_drive_slot, domain_xml, qemu_argv

__all__ = ["QemuBackend", "pid_alive", "qmp_execute", "read_pid"]


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class QemuBackend:
    kind = BackendKind.QEMU

    def __init__(self, qemu_binary: str = "qemu-system-x86_64") -> None:
        self.qemu_binary = qemu_binary

    def check(self) -> None:
        find_tool(self.qemu_binary)

    def definition(self, spec: GuestSpec) -> str:
        # the instance directory keeps libvirt.xml either way: the same guest, as libvirt sees it
        return domain_xml(spec)

    def argv(self, spec: GuestSpec) -> list[str]:
        return qemu_argv(spec, find_tool(self.qemu_binary))

    def start(self, spec: GuestSpec) -> None:
        if spec.pidfile is None:
            raise ConfigDriveError("the plain QEMU backend needs a pidfile to track the guest")
        # in the socket's directory, which the argv's QMP socket name is relative to
        workdir = spec.qmp_socket.parent if spec.qmp_socket is not None else None
        run(self.argv(spec), timeout=60, cwd=workdir)

    def is_running(self, spec: GuestSpec) -> bool:
        pid = read_pid(spec.pidfile) if spec.pidfile else None
        return pid is not None and pid_alive(pid)

    def shutdown(self, spec: GuestSpec) -> None:
        if not self.is_running(spec):
            return
        qmp_execute(self._qmp(spec), "system_powerdown")

    def power_off(self, spec: GuestSpec) -> None:
        self.destroy(spec)  # plain QEMU keeps no definition: destroying only stops it

    def change_medium(self, spec: GuestSpec, path: Path) -> None:
        if not self.is_running(spec):
            raise ConfigDriveError(f"{spec.name} is not running: there is no medium to swap")
        if spec.config_drive is None or spec.config_drive_vfat:
            raise ConfigDriveError(f"{spec.name}'s config drive is not a CD-ROM")
        # the CD-ROM device's qdev id is its slot's target name (domain._cdrom_device); QEMU
        # opens the tray, forcing the lock a guest holds on a medium it has opened (Debian's
        # cloud image locks it after cloud-init's read), inserts the new file and closes it
        device = config_drive_slot(
            spec.machine, False, cdrom_bus=spec.cdrom_bus, disk_bus=spec.disk_bus
        ).dev
        qmp_execute(
            self._qmp(spec),
            "blockdev-change-medium",
            {
                "id": device,
                "filename": str(path),
                "format": "raw",
                "read-only-mode": "read-only",
                "force": True,
            },  # fmt: skip
        )

    @staticmethod
    def _qmp(spec: GuestSpec) -> Path:
        if spec.qmp_socket is None:
            raise ConfigDriveError(f"{spec.name} has no QMP socket to control it by")
        return spec.qmp_socket

    def destroy(self, spec: GuestSpec) -> None:
        pid = read_pid(spec.pidfile) if spec.pidfile else None
        if pid is None or not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _connect_unix(path: Path, timeout: float) -> socket.socket:
    """Connect to a unix socket however long its path: through its directory's descriptor.

    ``sun_path`` holds 108 bytes; ``/proc/self/fd/N/name`` stays short whatever the directory.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{directory}/{path.name}")
    except OSError as exc:
        sock.close()
        raise ConfigDriveError(f"cannot reach QEMU's QMP socket {path}: {exc.strerror}") from exc
    finally:
        os.close(directory)
    return sock


def qmp_execute(
    path: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Run one QMP command on a running guest and return its ``return`` value.

    Follows the protocol: read the greeting, negotiate capabilities, then send the command,
    skipping the asynchronous events QEMU may interleave with the answer.
    """
    with _connect_unix(path, timeout) as sock, sock.makefile("rwb") as stream:

        def answer() -> Any:
            while True:
                line = stream.readline()
                if not line:
                    raise ConfigDriveError(f"QEMU closed its QMP socket {path} mid-command")
                message = json.loads(line)
                if "event" in message:
                    continue
                if "error" in message:
                    error = message["error"]
                    raise ConfigDriveError(
                        f"QMP {command} failed: {error.get('class')}: {error.get('desc')}"
                    )
                if "return" in message:
                    return message["return"]

        def send(name: str, args: dict[str, Any] | None) -> Any:
            request: dict[str, Any] = {"execute": name}
            if args:
                request["arguments"] = args
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            return answer()

        greeting = json.loads(stream.readline() or b"{}")
        if "QMP" not in greeting:
            raise ConfigDriveError(f"{path} did not greet as a QMP monitor")
        send("qmp_capabilities", None)
        return send(command, arguments)
