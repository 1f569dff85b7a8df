#!/usr/bin/env python3
"""The markdown tables docs/benchmarks.md opens with, from `configdrive bench boot --os …`'s
results.json files (one per release and firmware).

Usage: bench/cloud_table.py docs/benchmarks/cloud-debian-12-bios/results.json [more…]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _cell(stat: dict[str, float] | None, digits: int = 0) -> str:
    if not stat:
        return "–"
    if stat["n"] == 1:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"


def table(doc: dict[str, Any]) -> str:
    summary = doc["summary"]
    stock = (summary["modes"].get("stock") or {}).get("time_to_ssh_s")
    lines = [
        f"**{doc['os']}, {doc['firmware']} ({doc['machine']}), {doc['accelerator'].upper()}, "
        f"{doc['runs']} runs per mode, interleaved, {doc['date']}** — seconds from "
        "`configdrive boot` being called; median (min–max)",
        "",
        "| mode | to SSH login | to cloud-init done | metadata wait | SSH vs stock |",
        "|---|---|---|---|---|",
    ]
    for mode, row in summary["modes"].items():
        ssh = row["time_to_ssh_s"]
        ratio = f"{ssh['median'] / stock['median']:.2f}×" if ssh and stock else "–"
        lines.append(
            f"| `{mode}` | {_cell(ssh)} | {_cell(row['time_to_cloud_init_done_s'])} | "
            f"{_cell(row['metadata_wait_s'], 2)} | {ratio} |"
        )
    lines += ["", "| target | measured (median) | |", "|---|---|---|"]
    for name, target in summary["targets"].items():
        verdict = {True: "met", False: "**missed**", None: "not measured"}[target["met"]]
        lines.append(f"| {name} ≤ {target['target']} | {target['median']} | {verdict} |")
    if summary["step_savings"]:
        lines += ["", "| fast-profile step | saves to SSH (s) | saves to cloud-init done (s) |",
                  "|---|---|---|"]  # fmt: skip
        for step, saving in summary["step_savings"].items():
            lines.append(f"| `{step}` | {_cell(saving['time_to_ssh_s'], 1)} | "
                         f"{_cell(saving['time_to_cloud_init_done_s'], 1)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    print("\n\n".join(table(json.loads(Path(p).read_text())) for p in sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
