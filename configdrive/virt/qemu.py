"""Plain-QEMU backend: start a daemonized QEMU from a pure argv, control it by pidfile."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from configdrive.errors import ConfigDriveError
from configdrive.host import BackendKind
from configdrive.run import find_tool, run
from configdrive.virt.domain import GuestSpec, domain_xml, qemu_argv

__all__ = ["QemuBackend", "pid_alive", "read_pid"]


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
        run(self.argv(spec), timeout=60)

    def is_running(self, spec: GuestSpec) -> bool:
        pid = read_pid(spec.pidfile) if spec.pidfile else None
        return pid is not None and pid_alive(pid)

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
