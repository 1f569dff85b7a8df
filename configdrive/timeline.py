"""A first boot's timeline, from the guest's own reports.

The host stamps every console line as it arrives (``ConsoleWatcher``), relative to the moment
QEMU was started. Stage boundaries are read from those lines: the kernel's first message,
systemd, cloud-init's stage banners, its ``finished`` line and the check unit's report.
Events that only cloud-init's log holds (the datasource search, the drive read) come in the
check report with guest wall-clock stamps; the report's ``epoch``/``uptime`` pair maps them
onto the same host clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["STAGES", "ConsoleWatcher", "Timeline", "build_timeline"]

# (stage, console pattern); first match wins, in console order
STAGES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kernel", re.compile(r"Linux version \d")),
    ("initramfs", re.compile(r"Run /init as init process|Loading, please wait")),
    ("systemd", re.compile(r"systemd\[1\]: systemd \d+\S* running|Welcome to .*Debian")),
    ("cloud-init local", re.compile(r"Cloud-init v\. \S+ running 'init-local'")),
    ("cloud-init network", re.compile(r"Cloud-init v\. \S+ running 'init' ")),
    ("cloud-init config", re.compile(r"Cloud-init v\. \S+ running 'modules:config'")),
    ("cloud-init final", re.compile(r"Cloud-init v\. \S+ running 'modules:final'")),
    ("cloud-init finished", re.compile(r"Cloud-init v\. \S+ finished at")),
    ("check report", re.compile(r"CONFIGDRIVE-CHECK begin")),
    ("ready", re.compile(r"CONFIGDRIVE-CHECK end")),
)


class ConsoleWatcher:
    """Follows a console log file and stamps each complete line with its arrival time."""

    def __init__(self, path: Path, t0: float | None = None) -> None:
        self.path = path
        self.t0 = time.monotonic() if t0 is None else t0
        self.lines: list[tuple[float, str]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[tuple[float, str]]:
        """Read what arrived since the last poll; return the new stamped lines."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        now = time.monotonic() - self.t0
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        new = [(now, c.decode("utf-8", "replace").rstrip("\r")) for c in chunks]
        self.lines += new
        return new

    def wait_for(
        self,
        pattern: str,
        timeout: float,
        *,
        interval: float = 0.05,
        alive: Callable[[], bool] | None = None,
    ) -> bool:
        """Poll until a line contains ``pattern``; False on timeout or when ``alive()`` fails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pattern in line for _, line in self.poll()):
                return True
            if alive is not None and not alive():
                self.poll()
                return any(pattern in line for _, line in self.lines)
            time.sleep(interval)
        return False


@dataclass
class Timeline:
    """Seconds since QEMU started, per stage (None: not seen)."""

    stages: dict[str, float | None]
    events: dict[str, float] = field(default_factory=dict)  # from cloud-init's log, mapped

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "events": self.events}


_LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (.*)$")


def _map_events(report: dict[str, Any], offset: float) -> dict[str, float]:
    """cloud-init log lines (guest wall clock) -> seconds since QEMU start."""
    epoch = report.get("epoch")
    uptime = report.get("uptime")
    log = report.get("cloud_init_events") or ""
    if epoch is None or uptime is None or not log:
        return {}
    try:
        wall_at_report = float(epoch)
    except (TypeError, ValueError):
        return {}
    events: dict[str, float] = {}
    for line in str(log).splitlines():
        match = _LOG_STAMP.match(line)
        if not match:
            continue
        stamp = (
            datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            .replace(tzinfo=UTC)
            .timestamp()
        )  # the guest logs in UTC
        guest_uptime = float(uptime) - (wall_at_report - stamp)
        label = match.group(2)
        events.setdefault(label, round(offset + guest_uptime, 3))
    return events


def build_timeline(
    lines: list[tuple[float, str]], report: dict[str, Any] | None = None
) -> Timeline:
    """Stage times from stamped console lines (and cloud-init's own events from ``report``)."""
    stages: dict[str, float | None] = {name: None for name, _ in STAGES}
    for stamp, line in lines:
        for name, pattern in STAGES:
            if stages[name] is None and pattern.search(line):
                stages[name] = round(stamp, 3)
    events: dict[str, float] = {}
    begin = stages.get("check report")
    if report and begin is not None and report.get("uptime") is not None:
        # host time of the report minus the guest's uptime then = host time of guest uptime 0
        offset = begin - float(report["uptime"])
        events = _map_events(report, offset)
    return Timeline(stages, events)
