"""Starting and stopping an instance that exists: the guest's power, not its definition.

``boot`` creates and starts an instance; ``delete`` stops it and removes it. In between, a
guest powers off by itself (``poweroff`` in the guest; with the plain QEMU backend, which runs
QEMU with ``-no-reboot``, a guest's reboot ends its QEMU too) or is stopped with :func:`stop`,
and :func:`start` boots it again from the same instance directory: the same disk overlay, the
same UEFI variable store, and ``disk.config`` as it is now, so a drive ``update`` replaced
while the guest was stopped is what the guest reads at that boot. The previous boot's serial
console is kept as ``console.log.1``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from configdrive.compute import InstanceRecord, find_instance
from configdrive.errors import ConfigDriveError
from configdrive.host import BackendKind, HostConfig
from configdrive.virt import Backend, get_backend

__all__ = ["PowerError", "backend_of", "is_running", "start", "stop"]

Progress = Callable[[str], None]


class PowerError(ConfigDriveError):
    """A start or stop that cannot be done; the guest was left as it was."""


def backend_of(host: HostConfig, record: InstanceRecord) -> Backend:
    """The backend the instance was booted with (whatever the host config says now)."""
    return get_backend(host.with_(backend=BackendKind(record.backend)))


def is_running(host: HostConfig, record: InstanceRecord) -> bool:
    return backend_of(host, record).is_running(record.guest_spec())


def start(host: HostConfig, ref: str, *, progress: Progress | None = None) -> InstanceRecord:
    """Boot the stopped instance ``ref`` again from its instance directory."""
    say = progress or (lambda _msg: None)
    record = find_instance(host, ref)
    backend = backend_of(host, record)
    spec = record.guest_spec()
    if backend.is_running(spec):
        raise PowerError(
            f"{record.name} is already running", hint=f"configdrive stop {record.name} first"
        )
    console = record.path / "console.log"
    if console.exists():
        console.replace(record.path / "console.log.1")
    say(f"starting {record.name} ({record.backend}, {record.accel}, {record.machine})")
    backend.start(spec)
    return record


def stop(
    host: HostConfig,
    ref: str,
    *,
    timeout: float = 120,
    force: bool = False,
    progress: Progress | None = None,
) -> InstanceRecord:
    """Shut the instance ``ref`` down through ACPI and wait up to ``timeout`` seconds for its
    guest to power off; ``force`` pulls the plug once the timeout passes (or at once when
    ``timeout`` is 0). A stopped instance is left as it is."""
    say = progress or (lambda _msg: None)
    record = find_instance(host, ref)
    backend = backend_of(host, record)
    spec = record.guest_spec()
    if not backend.is_running(spec):
        say(f"{record.name} is not running")
        return record
    if timeout > 0:
        say(f"{record.name}: ACPI shutdown, waiting up to {timeout:.0f} s")
        with contextlib.suppress(ConfigDriveError):  # a monitor that went away: it is stopping
            backend.shutdown(spec)
        deadline = time.monotonic() + timeout
        while backend.is_running(spec) and time.monotonic() < deadline:
            time.sleep(0.5)
    if backend.is_running(spec):
        if not force:
            raise PowerError(
                f"{record.name} did not power off within {timeout:.0f} s of its ACPI shutdown",
                hint="its guest may ignore the power button; add --force to pull the plug",
            )
        say(f"{record.name}: stopping it by force")
        backend.power_off(spec)
    return record
