"""The library verbs: build a drive from an instance, inspect a drive.

``build`` = render (pure) + write (atomic); ``inspect`` = read + judge. The CLI is a thin
layer over these two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from configdrive.drive import DriveFormat, read_drive, write_drive
from configdrive.inspection import Inspection, inspect_contents
from configdrive.model import Instance
from configdrive.render import Layout, RenderOptions, Tree, Urandom, render

__all__ = ["BuildResult", "build", "inspect", "render_for"]

PUBLISHER = "configdrive"


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` wrote."""

    path: Path
    format: DriveFormat
    size: int
    tree: Tree


def render_for(
    instance: Instance,
    fmt: DriveFormat,
    options: RenderOptions | None = None,
    *,
    urandom: Urandom = os.urandom,
) -> Tree:
    """Render the tree that a ``fmt`` drive carries."""
    layout = Layout.NOCLOUD if fmt.nocloud else Layout.CONFIG_DRIVE
    return render(instance, layout, options, urandom=urandom)


def build(
    instance: Instance,
    output: str | os.PathLike[str],
    fmt: DriveFormat = DriveFormat.ISO9660,
    *,
    options: RenderOptions | None = None,
    force: bool = False,
    vfat_size: int | None = None,
    timestamp: datetime | None = None,
    urandom: Urandom = os.urandom,
) -> BuildResult:
    """Render ``instance`` and write it atomically as a ``fmt`` drive at ``output``.

    Everything on the drive is dated ``timestamp`` (default: ``SOURCE_DATE_EPOCH`` or now);
    the ``random_seed`` values come from ``urandom``: with both fixed, equal instances give
    byte-identical drives."""
    tree = render_for(instance, fmt, options, urandom=urandom)
    size = write_drive(
        tree,
        output,
        fmt,
        force=force,
        vfat_size=vfat_size,
        publisher=PUBLISHER,
        timestamp=timestamp,
    )
    return BuildResult(Path(output), fmt, size, tree)


def inspect(path: str | os.PathLike[str]) -> Inspection:
    """Read any config drive or NoCloud image and judge it as cloud-init would."""
    return inspect_contents(read_drive(path))
