"""Accelerator probe: use KVM only where a real short boot proves it works, else TCG.

On some hosts ``/dev/kvm`` exists but is a nested, paravirtual flavour that fails on a guest
kernel: ``-cpu host`` aborts with "failed to set MSR 0x10a", ``-cpu host,-arch-capabilities``
starts and then dies with a KVM internal error. So the probe boots the guest kernel itself,
without a root filesystem, and counts KVM as working only when that kernel gets as far as
trying to mount its root. The verdict is cached for the host's current boot.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from configdrive.errors import ConfigDriveError
from configdrive.host import Accelerator
from configdrive.run import find_tool
from configdrive.virt.domain import check_isolated

__all__ = ["ProbeResult", "probe_accelerator", "probe_argv"]

KVM_CPUS = ("host", "host,-arch-capabilities")
KVM_FAILURES = ("KVM internal error", "emulation failure", "failed to set MSR")
REACHED_ROOT = (
    "VFS: Unable to mount root fs",
    "Cannot open root device",
    "Kernel panic - not syncing",
)


@dataclass(frozen=True)
class ProbeResult:
    accel: str  # "kvm" | "tcg"
    cpu: str | None  # the -cpu that worked with KVM
    reason: str


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_argv(qemu: str, kernel: Path, cpu: str, console: Path) -> list[str]:
    """The probe boot: the guest kernel alone under KVM, no disk, no NIC, panics at root."""
    argv = [
        qemu, "-accel", "kvm", "-cpu", cpu, "-m", "256", "-nodefaults", "-no-user-config",
        "-display", "none", "-nic", "none", "-no-reboot",
        "-chardev", f"file,id=s0,path={console}", "-device", "isa-serial,chardev=s0",
        "-kernel", str(kernel),
        "-append", "console=ttyS0 panic=-1 root=/dev/configdrive-probe rootwait=0",
    ]  # fmt: skip
    check_isolated(argv)
    return argv


def _try_kvm(qemu: str, kernel: Path, cpu: str, timeout: float) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="configdrive-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        argv = probe_argv(qemu, kernel, cpu, log)
        errlog = Path(tmp) / "stderr.log"
        with errlog.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        failed = ""
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace") if log.exists() else ""
            if any(marker in text for marker in REACHED_ROOT):
                proc.kill()
                proc.wait()
                return True, "guest kernel reached its root mount under KVM"
            errors = errlog.read_text(errors="replace")
            if any(marker in errors for marker in KVM_FAILURES):
                # QEMU pauses the guest on a KVM internal error instead of exiting
                failed = next(line for line in errors.splitlines() if line.strip())
                break
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        text = log.read_text(errors="replace") if log.exists() else ""
        if any(marker in text for marker in REACHED_ROOT):
            return True, "guest kernel reached its root mount under KVM"
        if failed:
            return False, f"-cpu {cpu}: {failed}"
        lines = errlog.read_text(errors="replace").strip().splitlines()
        detail = lines[-1] if lines else "no output"
        if proc.returncode is None or time.monotonic() >= deadline:
            detail = f"no progress within {timeout:.0f}s"
        return False, f"-cpu {cpu}: {detail}"


def probe_accelerator(
    requested: Accelerator,
    *,
    kernel: Path | None,
    qemu: str = "qemu-system-x86_64",
    cache_dir: Path | None = None,
    timeout: float = 20.0,
) -> ProbeResult:
    """Pick the accelerator: ``tcg`` as asked, or ``kvm`` once a real boot proved it."""
    if requested is Accelerator.TCG:
        return ProbeResult("tcg", None, "TCG requested")
    kvm = Path("/dev/kvm")
    if not kvm.exists() or not os.access(kvm, os.R_OK | os.W_OK):
        if requested is Accelerator.KVM:
            raise ConfigDriveError(
                "accelerator: KVM requested but /dev/kvm is missing or not accessible",
                hint="set virt_type = qemu (TCG) or auto in the host config",
            )
        return ProbeResult("tcg", None, "/dev/kvm is missing")
    if kernel is None:
        if requested is Accelerator.KVM:
            return ProbeResult("kvm", "host", "KVM requested; no guest kernel to probe with")
        return ProbeResult("tcg", None, "no guest kernel to prove KVM with")
    qemu_path = find_tool(qemu)
    cache = (cache_dir / "accel-probe.json") if cache_dir else None
    # by content: every guest image variant ships the same kernel, and one verdict serves all
    digest = hashlib.sha256(kernel.read_bytes()).hexdigest()[:16]
    key = f"{_boot_id()}:{qemu_path}:{digest}"
    entries: dict[str, Any] = {}
    if cache is not None and cache.exists():
        try:
            entries = dict(json.loads(cache.read_text()).get("entries", {}))
            if key in entries:
                return _decide(requested, ProbeResult(**entries[key]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            entries = {}
    reasons = []
    for cpu in KVM_CPUS:
        ok, reason = _try_kvm(qemu_path, kernel, cpu, timeout)
        if ok:
            result = ProbeResult("kvm", cpu, reason)
            break
        reasons.append(reason)
    else:
        result = ProbeResult("tcg", None, "KVM failed a real boot: " + "; ".join(reasons))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        entries = {k: v for k, v in entries.items() if k.startswith(_boot_id() + ":")}
        entries[key] = asdict(result)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"entries": entries}))
        os.replace(tmp, cache)
    return _decide(requested, result)


def _decide(requested: Accelerator, result: ProbeResult) -> ProbeResult:
    if requested is Accelerator.KVM and result.accel != "kvm":
        raise ConfigDriveError(
            f"accelerator: KVM requested but it does not work here ({result.reason})",
            hint="set virt_type = qemu (TCG) or auto in the host config",
        )
    return result
