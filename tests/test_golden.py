"""Golden trees: the whole rendered tree of the seed example and of a dual-stack spec.

Randomness is replaced by a counter so ``random_seed`` is reproducible; everything else is
exactly what goes on the drive. The golden files were reviewed line by line against nova's
code and unit tests (docs/formats.md); regenerate them with CONFIGDRIVE_UPDATE_GOLDEN=1 only
after such a review. Gating rules are also checked one by one in test_render.py.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from configdrive import Layout, instance_from_mapping, load_spec, render

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


def dump_tree(tree: dict[str, bytes]) -> str:
    out = []
    for path, data in tree.items():
        out.append(f"### {path}\n{data.decode('utf-8')}\n")
    return "".join(out)


@pytest.mark.parametrize(
    ("spec", "layout", "golden"),
    [
        ("examples/seed/instance.yaml", Layout.CONFIG_DRIVE, "seed-example.config-2.txt"),
        ("examples/dual-stack.yaml", Layout.CONFIG_DRIVE, "dual-stack.config-2.txt"),
        ("examples/dual-stack.yaml", Layout.NOCLOUD, "dual-stack.nocloud.txt"),
    ],
)
def test_golden_tree(spec: str, layout: Layout, golden: str) -> None:
    data, base = load_spec(ROOT / spec)
    data.setdefault("project_id", "4d8f3c2b1a0e4f6d9c8b7a6f5e4d3c2b")
    counter = itertools.count(1)
    tree = render(
        instance_from_mapping(data, base=base),
        layout,
        urandom=lambda n: bytes([next(counter)]) * n,
    )
    text = dump_tree(tree)
    path = GOLDEN / golden
    if os.environ.get("CONFIGDRIVE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
