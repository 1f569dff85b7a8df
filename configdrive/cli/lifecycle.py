"""`configdrive diff`: compare two drives, two specs, or a drive and a spec."""

from __future__ import annotations

import argparse
import json
from typing import Any

from configdrive.cli._common import EXIT_FAIL, EXIT_OK, UsageError

__all__ = ["register"]


def _diff(args: argparse.Namespace) -> int:
    from configdrive.lifecycle import DiffInputError, diff_paths

    label = {"config-drive": "config-2", "nocloud": "cidata", None: None}[args.format]
    try:
        result = diff_paths(args.a, args.b, label=label)
    except DiffInputError as exc:  # bad input: exit 2, as diff(1) does
        raise UsageError(str(exc), hint="give a drive image (ISO9660/VFAT) or a spec") from None
    print(json.dumps(result.to_json(), indent=2) if args.json else result.text())
    return EXIT_OK if result.equal else EXIT_FAIL


def register(sub: Any) -> None:
    """Add the `diff` verb to the top-level subparsers."""
    d = sub.add_parser(
        "diff",
        help="compare two drives, two specs, or a drive and a spec",
        description=(
            "Report every file added, removed or changed between A and B, and inside JSON "
            "(and NoCloud YAML) files every key. Each side is a drive image (ISO9660 or "
            "VFAT, anyone's) or an instance spec, rendered as the other side's kind of drive "
            "would hold it. random_seed is ignored. Exit 0: equal, 1: different, 2: bad input."
        ),
    )
    d.add_argument("a", metavar="A", help="drive image or spec file")
    d.add_argument("b", metavar="B", help="drive image or spec file")
    d.add_argument(
        "--format",
        choices=["config-drive", "nocloud"],
        help="the drive kind two specs are rendered as (default: config-drive; with a drive "
        "on either side, that drive's kind)",
    )
    d.add_argument("--json", action="store_true", help="print the diff as JSON")
    d.set_defaults(handler=_diff)
