"""bench/service_http.py --quick: ours vs nginx under wrk for 1 s, a 50-guest storm (tools)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_results(tmp_path: Path, tool: Callable[[str], str]) -> None:
    tool("wrk"), tool("nginx")  # fail with the set-up hint when missing
    out = tmp_path / "service_http.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/service_http.py"), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert set(report["versions"]) >= {"wrk", "nginx", "aiohttp", "python"}
    for path, by_conn in report["results"].items():
        cell = by_conn["16"]
        for server in ("ours", "ours_workers", "nginx_1", "nginx_auto"):
            assert cell[server]["rps"] > 0, (path, server)
            assert cell[server]["errors"] == 0, (path, server)
        assert cell["ratio_ours_over_nginx_1"] > 0
        assert cell["ratio_ours_workers_over_nginx_auto"] > 0
    for served in report["responses"].values():  # nginx serves the bytes ours served
        assert set(served) == {"ours", "ours_workers", "nginx_1", "nginx_auto"}
        assert len({r["bytes"] for r in served.values()}) == 1
    for key in ("ours", "ours_workers"):
        storm = report["boot_storm"][key]
        assert storm["errors"] == 0, storm["first_errors"]
        assert storm["requests"] == storm["guests"] * storm["requests_per_guest"]
    assert report["boot_storm"]["ours_workers"]["workers"] >= 2
