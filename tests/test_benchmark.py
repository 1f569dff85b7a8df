"""The first-boot benchmark: summary arithmetic (fast), and `configdrive bench boot --quick`
booting every mode once and writing artefacts that parse (vm)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configdrive.benchmark import STAGES, BootResult, summarize


def result(mode: str, run: int, ready: float, meta: float | None) -> BootResult:
    stages: dict[str, float | None] = {s: None for s in STAGES}
    stages.update({"ready": ready, "metadata obtained": meta, "kernel": 0.4})
    return BootResult(mode, run, "tcg", "", "no", stages, {}, {})


def test_summary_median_min_max_and_ratio_to_floor() -> None:
    results = [
        result("drive-tuned", 1, 31.0, 14.0), result("floor", 1, 30.0, None),
        result("drive-tuned", 2, 33.0, 14.4), result("floor", 2, 28.0, None),
        result("drive-tuned", 3, 32.0, 14.2), result("floor", 3, 29.0, None),
    ]  # fmt: skip
    summary = summarize(results)
    assert list(summary["stages"]) == ["drive-tuned", "floor"]  # the modes' own order
    assert summary["stages"]["drive-tuned"]["ready"] == {
        "median": 32.0,
        "min": 31.0,
        "max": 33.0,
        "n": 3,
    }
    assert summary["stages"]["floor"]["metadata obtained"] is None
    assert summary["ratio_to_floor_ready"] == {"drive-tuned": round(32.0 / 29.0, 2), "floor": 1.0}
    assert summary["service_vs_drive"] == {}  # no service mode ran


def test_summary_compares_each_service_mode_with_the_drive() -> None:
    results = [
        result("drive-tuned", 1, 30.0, 14.0), result("service", 1, 36.0, 16.0),
        result("service-loaded", 1, 60.0, 42.0), result("drive-tuned", 2, 32.0, 14.4),
        result("service", 2, 38.0, 17.0), result("service-loaded", 2, 64.0, 44.0),
    ]  # fmt: skip
    summary = summarize(results)
    versus = summary["service_vs_drive"]
    assert versus["service"] == {"metadata obtained": round(16.5 / 14.2, 2),
                                 "ready": round(37.0 / 31.0, 2)}  # fmt: skip
    assert versus["service-loaded"]["ready"] == round(62.0 / 31.0, 2)
    assert summary["metadata_wait"]["drive-tuned"] is None  # no local-stage stamp: no wait


def test_metadata_wait_counts_from_cloud_inits_local_stage() -> None:
    boots = [result("drive-tuned", i, 30.0, meta) for i, meta in enumerate((14.6, 14.5, 14.9))]
    boots.append(result("floor", 1, 29.0, None))
    for boot, local in zip(boots, (14.0, 14.1, 14.2, 13.9), strict=True):
        boot.stages["cloud-init local"] = local
    waits = summarize(boots)["metadata_wait"]
    assert waits["drive-tuned"] == {"median": 0.6, "min": 0.4, "max": 0.7, "n": 3}
    assert waits["floor"] is None


@pytest.mark.vm
def test_bench_boot_quick_writes_artefacts(tuned_image: object, tmp_path: Path) -> None:
    """The harness, on the three kinds of boot: the drive, the service over its chain, and the
    floor. (The other modes differ only in the image or the chain's latencies: pollinate's
    report is checked by test_boot's untuned guest, and a guest booted is minutes of CI.)"""
    out = tmp_path / "bench"
    modes = "drive-tuned,service,floor"
    proc = subprocess.run(
        [sys.executable, "-m", "configdrive", "bench", "boot", "--quick", "--modes", modes,
         "-o", str(out)],
        capture_output=True, text=True, check=False, timeout=2400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["runs_per_mode"] == 1 and doc["accelerator"] in ("tcg", "kvm")
    assert sorted(b["mode"] for b in doc["boots"]) == sorted(modes.split(","))
    by_mode = {b["mode"]: b for b in doc["boots"]}
    assert by_mode["drive-tuned"]["datasource"].startswith("DataSourceConfigDrive")
    assert by_mode["drive-tuned"]["stages"]["metadata obtained"] is not None
    assert by_mode["floor"]["stages"]["metadata obtained"] is None
    assert by_mode["drive-tuned"]["pollinate_ran"] == "no"
    # fetched over the chain, and counted there
    assert by_mode["service"]["datasource"].startswith("DataSourceOpenStack"), by_mode
    assert by_mode["service"]["stages"]["metadata obtained"] is not None
    assert by_mode["service"]["metadata_requests"] > 5
    assert by_mode["drive-tuned"]["metadata_requests"] is None
    assert doc["service_hops"]["service"][1] == {
        "hop": "neutron-metadata-agent", "kind": "agent", "latency_ms": 10.0}  # fmt: skip
    for boot in doc["boots"]:
        assert boot["stages"]["ready"] is not None and boot["stages"]["kernel"] is not None
    rows = list(csv.DictReader((out / "boots.csv").read_text().splitlines()))
    assert len(rows) == 3 and set(STAGES) <= set(rows[0])
    assert (out / "boot-stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ready/floor" in proc.stdout
    assert "service vs drive-tuned" in proc.stdout and "wait for metadata" in proc.stdout


@pytest.mark.vm
def test_bench_storm_quick_writes_artefacts(tuned_image: object, tmp_path: Path) -> None:
    """The storm harness on its harder mode: two guests at once, told apart through the chain
    (the drive's storm is the same harness with no chain)."""
    out = tmp_path / "storm"
    proc = subprocess.run(
        [sys.executable, "-m", "configdrive", "bench", "storm", "--quick", "--modes", "service",
         "-o", str(out)],
        capture_output=True, text=True, check=False, timeout=2400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "storm.json").read_text())
    assert doc["k"] == 2 and set(doc["boots"]) == {"service"}
    for mode, boots in doc["boots"].items():
        assert len(boots) == 2
        assert len({b["run"] for b in boots}) == 2
        for boot in boots:
            assert boot["stages"]["metadata obtained"] is not None, (mode, boot)
            assert boot["stages"]["ready"] <= doc["summary"][mode]["all ready"]
    for boot in doc["boots"]["service"]:  # both guests were told apart through the chain
        assert boot["datasource"].startswith("DataSourceOpenStack")
        assert boot["metadata_requests"] > 5
    assert (out / "storm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "all ready" in proc.stdout


def test_bench_cli_refuses_bad_input(tmp_path: Path) -> None:
    for argv in (["boot", "--modes", "warp"], ["storm", "--guests", "0"], ["storm", "--modes", ""]):
        proc = subprocess.run(
            [sys.executable, "-m", "configdrive", "bench", *argv, "-o", str(tmp_path / "x")],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and proc.stderr.startswith("error: "), (argv, proc.stderr)
        assert not (tmp_path / "x").exists()


def _qemu_work_dirs() -> dict[int, str]:
    """Running QEMU processes started by a benchmark: pid -> its work directory."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"qemu-system-x86_64"):
            continue
        for arg in argv:
            text = arg.decode(errors="replace")
            if "/var/tmp/configdrive-bench-" in text:
                start = text.index("/var/tmp/configdrive-bench-")
                found[int(entry.name)] = "/".join(text[start:].split("/")[:4])
                break
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a daemonized QEMU's parent is init, which may reap late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.vm
def test_sigterm_mid_benchmark_stops_the_guest_and_removes_the_work_dir(
    tuned_image: object, tmp_path: Path
) -> None:
    before = set(_qemu_work_dirs())
    proc = subprocess.Popen(
        [sys.executable, "-m", "configdrive", "bench", "boot", "--modes", "drive-tuned",
         "--runs", "1", "-o", str(tmp_path / "bench")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        guests: dict[int, str] = {}
        while not guests and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            guests = {p: d for p, d in _qemu_work_dirs().items() if p not in before}
        assert guests, "no guest started"
        time.sleep(2)  # the guest is booting; the benchmark waits for its report
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-2000:]
    assert err.rstrip().endswith("error: terminated"), err[-2000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(p) for p in guests):
        time.sleep(0.2)
    assert not any(_running(p) for p in guests), "the guest outlived the run"
    assert all(d.startswith("/var/tmp/configdrive-bench-") for d in guests.values()), guests
    assert not any(Path(d).exists() for d in guests.values()), "the work directory is left"
    assert not (tmp_path / "bench" / "results.json").exists()
