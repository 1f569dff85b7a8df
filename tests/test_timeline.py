"""Timeline parsing: stage boundaries from stamped console lines, log events mapped by uptime."""

from __future__ import annotations

from pathlib import Path

from configdrive.timeline import ConsoleWatcher, build_timeline

CONSOLE = [
    (0.9, "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)"),
    (3.0, "[    2.000000] Run /init as init process"),
    (9.5, "[    8.400000] systemd[1]: systemd 252.33-1~deb12u1 running in system mode (+PAM)"),
    (
        20.0,
        "[   19.000000] cloud-init[301]: Cloud-init v. 22.4.2 running 'init-local' at Thu, 26 Nov 2026 20:00:19 +0000. Up 18.50 seconds.",
    ),
    (
        31.0,
        "[   30.000000] cloud-init[402]: Cloud-init v. 22.4.2 running 'init' at Thu, 26 Nov 2026 20:00:30 +0000. Up 29.80 seconds.",
    ),
    (41.0, "[   40.000000] cloud-init[502]: Cloud-init v. 22.4.2 running 'modules:config' at …"),
    (48.0, "[   47.000000] cloud-init[602]: Cloud-init v. 22.4.2 running 'modules:final' at …"),
    (
        55.0,
        "[   54.000000] cloud-init[602]: Cloud-init v. 22.4.2 finished at Thu, 26 Nov 2026 20:00:54 +0000. Datasource DataSourceConfigDrive [net,ver=2][source=/dev/sr0].  Up 54.00 seconds",
    ),
    (57.0, "CONFIGDRIVE-CHECK begin"),
    (60.0, "CONFIGDRIVE-CHECK end"),
]


def test_stages_from_console() -> None:
    tl = build_timeline(CONSOLE)
    assert tl.stages == {
        "kernel": 0.9, "initramfs": 3.0, "systemd": 9.5, "cloud-init local": 20.0,
        "cloud-init network": 31.0, "cloud-init config": 41.0, "cloud-init final": 48.0,
        "cloud-init finished": 55.0, "check report": 57.0, "ready": 60.0,
    }  # fmt: skip


def test_log_events_are_mapped_through_uptime() -> None:
    # report printed at guest uptime 56.0 s, wall clock 1000.0; host saw "begin" at 57.0 s
    report = {
        "uptime": 56.0,
        "epoch": "1000.0",
        "cloud_init_events": "1970-01-01 00:16:10,000 - found local data from DataSourceConfigDrive\n",
    }
    tl = build_timeline(CONSOLE, report)
    # event at wall 970.0 = 30 s before the report = guest uptime 26.0 = host 1.0 + 26.0
    assert tl.events == {"found local data from DataSourceConfigDrive": 27.0}


def test_console_watcher_stamps_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    assert watcher.poll() == []
    log.write_bytes(b"first line\r\nsecond ")
    first = watcher.poll()
    assert [line for _, line in first] == ["first line"]
    with log.open("ab") as f:
        f.write(b"half\nCONFIGDRIVE-CHECK end\n")
    assert watcher.wait_for("CONFIGDRIVE-CHECK end", timeout=2)
    assert [line for _, line in watcher.lines] == [
        "first line",
        "second half",
        "CONFIGDRIVE-CHECK end",
    ]
    assert all(t >= 0 for t, _ in watcher.lines)
    assert not watcher.wait_for("never", timeout=0.2)
