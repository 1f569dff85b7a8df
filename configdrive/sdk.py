"""openstacksdk-compatible ``build``/``pack`` (``openstack.baremetal.configdrive``).

Same tree, same output (an ISO9660 ``config-2`` image, gzipped, base64 text, as Ironic's
``configdrive`` field takes it), but the ISO is written in-process: no genisoimage, mkisofs or
xorrisofs needed on the host.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from configdrive.drive.iso9660 import write_iso9660
from configdrive.errors import DriveError

__all__ = ["build", "pack", "populate_tree"]

SDK_VERSIONS = ("2012-08-10", "latest")


def populate_tree(
    metadata: Mapping[str, Any],
    user_data: str | bytes | None = None,
    versions: Sequence[str] | None = None,
    network_data: Mapping[str, Any] | None = None,
    vendor_data: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The tree openstacksdk's ``populate_directory`` writes, as a mapping."""
    tree: dict[str, bytes] = {}
    for version in versions or SDK_VERSIONS:
        base = f"openstack/{version}"
        tree[f"{base}/meta_data.json"] = json.dumps(metadata).encode("utf-8")
        if network_data:
            tree[f"{base}/network_data.json"] = json.dumps(network_data).encode("utf-8")
        if vendor_data:
            tree[f"{base}/vendor_data2.json"] = json.dumps(vendor_data).encode("utf-8")
        if user_data:
            data = user_data.encode("utf-8") if isinstance(user_data, str) else user_data
            tree[f"{base}/user_data"] = data
    return tree


def _pack_tree(tree: Mapping[str, bytes]) -> str:
    image = io.BytesIO()
    write_iso9660(tree, image, label="config-2", publisher="metalsmith")
    return base64.b64encode(gzip.compress(image.getvalue())).decode("ascii")


def pack(path: str | os.PathLike[str]) -> str:
    """Pack a directory holding a config drive tree into gzipped, base64-encoded ISO text."""
    root = Path(path)
    if not root.is_dir():
        raise DriveError(f"{root} is not a directory")
    tree = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    return _pack_tree(tree)


def build(
    metadata: Mapping[str, Any],
    user_data: str | bytes | None = None,
    versions: Sequence[str] | None = None,
    network_data: Mapping[str, Any] | None = None,
    vendor_data: Mapping[str, Any] | None = None,
) -> str:
    """openstacksdk ``build``: metadata (+ user/network/vendor data) -> packed config drive."""
    return _pack_tree(populate_tree(metadata, user_data, versions, network_data, vendor_data))
