"""bench/build_drive.py, two drives per method and disk: every method runs, on the disk asked
for, and the two ways build the same tree (the script checks it); no timing is judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parent.parent


def test_short_run_writes_results(tmp_path: Path, tool: Callable[[str], str]) -> None:
    tool("genisoimage")
    out = tmp_path / "build_drive.json"
    disks = [tmp_path / "disk", Path("/dev/shm")]
    argv = [sys.executable, str(ROOT / "bench/build_drive.py"), "-n", "2", "--rounds", "2",
            "--dir", str(disks[0]), "--dir", str(disks[1]), "-o", str(out)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert (report["n"], report["rounds"], report["files_in_tree"]) == (2, 2, 51)
    assert [d["dir"] for d in report["disks"]] == [str(d) for d in disks]
    assert report["disks"][1]["filesystem"]["type"] == "tmpfs"
    for disk in report["disks"]:
        assert len(disk["median_ms"]) == 6 and all(v > 0 for v in disk["median_ms"].values())
        assert len(disk["parts_median_ms"]) == 4 and all(
            v > 0 for v in disk["parts_median_ms"].values()
        )
        assert all(len(v) == 2 for v in disk["round_median_ms"].values())
        for stat in disk["ratio"].values():
            assert 0 < stat["min"] <= stat["median"] <= stat["max"]
    assert not list(disks[0].iterdir())  # the work directory is removed
