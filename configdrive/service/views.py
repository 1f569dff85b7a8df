"""Pre-rendered, in-memory views of an instance's metadata, as the HTTP service serves them.

Every byte comes from :mod:`configdrive.render` (``ec2_metadata``, ``openstack_file``,
``openstack_files``, ``render_nocloud``); this module only lays that output out as URL paths,
the way nova's ``ec2_md_print`` and ``MetadataRequestHandler`` do. A view is built once when an
instance is registered, then served from memory.

``random_seed`` must be fresh on every request (nova regenerates it per lookup). The document is
rendered once with a marker seed and cut around the marker: a request joins the two halves
around ``base64(urandom(512))``, so the bytes are exactly what ``meta_data()`` returns for that
seed; the 512 bytes come from :class:`SeedPool` (``os.urandom``, buffered).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from configdrive.model import Instance
from configdrive.render import (
    EC2_VERSIONS,
    OPENSTACK_VERSIONS,
    ec2_metadata,
    openstack_file,
    openstack_files,
    render_nocloud,
    resolve_openstack_version,
)

__all__ = [
    "CT_JSON",
    "CT_OCTET",
    "CT_TEXT",
    "EC2_LISTING",
    "InstanceView",
    "Resource",
    "SeedPool",
    "Seeded",
    "ec2_md_print",
    "openstack_listing",
    "region_of",
]

CT_TEXT = "text/plain"
CT_JSON = "application/json"
CT_OCTET = "application/octet-stream"
SEED_BYTES = 512
GRIZZLY = "2013-04-04"  # the password handler appears with GRIZZLY (nova base.py)

EC2_LISTING = "\n".join((*EC2_VERSIONS, "latest")).encode()
"""``GET /``: the EC2 versions, then ``latest`` (nova: newline-joined, no final newline)."""

# nova serves these with application/json, everything else as text/plain (get_mimetype).
_OS_JSON = frozenset({"meta_data.json", "vendor_data.json", "vendor_data2.json"})


class SeedPool:
    """Random seeds cut from a buffer filled by ``os.urandom`` (the kernel's CSPRNG) 64 KiB at
    a time: one ``getrandom`` call per 128 seeds instead of one per request. No byte is handed
    out twice: a lock guards the offset, and a forked child drops the buffer it inherited."""

    FILL = 128 * SEED_BYTES

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        self._ready: list[bytes] = []
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0
        self._ready = []

    def __call__(self, n: int) -> bytes:
        with self._lock:
            if self._offset + n > len(self._buffer):
                self._buffer, self._offset = os.urandom(max(self.FILL, n)), 0
            start = self._offset
            self._offset += n
            return self._buffer[start : start + n]

    def encoded(self) -> bytes:
        """One fresh ``SEED_BYTES`` seed, base64-encoded: a request's ``random_seed``. Seeds
        are cut and encoded a buffer at a time (the per-request cost is one list pop)."""
        try:
            return self._ready.pop()
        except IndexError:
            pass
        raw = self(self.FILL)
        batch = [base64.b64encode(raw[i : i + SEED_BYTES]) for i in range(0, self.FILL, SEED_BYTES)]
        seed = batch.pop()
        self._ready = batch  # list.pop is atomic: threads never share a seed
        return seed


SEEDS = SeedPool()


@dataclass(frozen=True, slots=True)
class Seeded:
    """A document whose ``random_seed`` is drawn per request: ``head + seed + tail``."""

    head: bytes
    tail: bytes

    def fresh(self, urandom: Callable[[int], bytes] | None = None) -> bytes:
        """The document with a new seed (from ``urandom``, default :data:`SEEDS`)."""
        if urandom is None:
            return self.head + SEEDS.encoded() + self.tail
        return self.head + base64.b64encode(urandom(SEED_BYTES)) + self.tail


@dataclass(frozen=True, slots=True)
class Resource:
    """One servable path: its body (static or seeded) and content type."""

    body: bytes | Seeded
    content_type: str = CT_TEXT

    def render(self) -> bytes:
        return self.body.fresh() if isinstance(self.body, Seeded) else self.body


def _seeded(render: Callable[[Callable[[int], bytes]], bytes]) -> bytes | Seeded:
    """Call ``render(urandom)`` with a one-off marker seed and split around it."""
    marker_raw = secrets.token_bytes(SEED_BYTES)
    marker = base64.b64encode(marker_raw)
    calls = 0

    def urandom(n: int) -> bytes:
        nonlocal calls
        calls += 1
        return marker_raw[:n]

    data = render(urandom)
    if calls == 0:
        return data
    head, sep, tail = data.partition(marker)
    if not sep or calls != 1 or marker in tail:
        raise AssertionError("random_seed marker not found exactly once")  # pragma: no cover
    return Seeded(head, tail)


# --------------------------------------------------------------------------------------------
# EC2 (nova ec2_md_print + lookup)


def ec2_md_print(data: Any) -> bytes:
    """nova's ``ec2_md_print``: dict -> sorted keys (``key/`` for subtrees, ``_name`` when set),
    list -> newline-joined, anything else -> ``str()``; no final newline."""
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value["_name"]) if "_name" in value else f"{key}/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list):
        return "\n".join(str(v) for v in data).encode()
    if isinstance(data, bytes):
        return data
    return str(data).encode()


def region_of(zone: str | None) -> str | None:
    """The region of an availability zone: AWS's zones are their region plus one letter
    (``us-east-1a`` -> ``us-east-1``), which is what botocore derives (it drops the zone's
    last character). A zone not of that shape (OpenStack's ``nova``) is its own region:
    dropping a character from it would name nothing."""
    if zone is None:
        return None
    found = re.fullmatch(r"(.*\d)[a-z]", zone)
    return found.group(1) if found else zone


def _identity_document(md: Mapping[str, Any], instance: Instance) -> bytes:
    # EC2's instance-identity document shape (pretty-printed, "key" : value), filled from the
    # EC2 view render.ec2_metadata() returns; fields nova has no notion of are null.
    az = md.get("placement", {}).get("availability-zone")
    doc = {
        "accountId": instance.project_id,
        "architecture": "x86_64",
        "availabilityZone": az,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": md.get("ami-id"),
        "instanceId": md["instance-id"],
        "instanceType": md.get("instance-type"),
        "kernelId": md.get("kernel-id"),
        "pendingTime": None,
        "privateIp": md.get("local-ipv4"),
        "ramdiskId": md.get("ramdisk-id"),
        "region": region_of(az),
        "version": "2017-09-30",
    }
    return json.dumps(doc, indent=2, separators=(",", " : ")).encode()


def _flatten(node: Any, prefix: str, out: dict[str, Resource]) -> None:
    out[prefix] = Resource(ec2_md_print(node))
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "_name":
                _flatten(value, f"{prefix}/{key}" if prefix else key, out)


def _ec2_tree(instance: Instance, version: str) -> dict[str, Resource]:
    md = ec2_metadata(instance, version)
    tree: dict[str, Any] = {
        "meta-data": md,
        "dynamic": {"instance-identity": {"document": b""}},
    }
    out: dict[str, Resource] = {}
    _flatten(tree, "", out)
    out["dynamic/instance-identity/document"] = Resource(_identity_document(md, instance))
    if instance.user_data is not None:
        # listed as a leaf; served raw as application/octet-stream (EC2), 404 when absent
        out["user-data"] = Resource(instance.user_data, CT_OCTET)
        out[""] = Resource(ec2_md_print({**tree, "user-data": b""}))
    return out


# --------------------------------------------------------------------------------------------
# OpenStack


def openstack_listing(today: datetime | None = None) -> bytes:
    """``GET /openstack``: versions dated on or before today (UTC), then ``latest``."""
    day = (today or datetime.now(UTC)).strftime("%Y-%m-%d")
    return "\n".join((*(v for v in OPENSTACK_VERSIONS if v <= day), "latest")).encode()


def _os_file(instance: Instance, version: str, name: str, urandom: Callable[[int], bytes]) -> bytes:
    return openstack_file(instance, version, name, urandom=urandom)


def _openstack_tree(instance: Instance, version: str) -> dict[str, Resource]:
    names = list(openstack_files(version, instance))
    out: dict[str, Resource] = {}
    for name in names:
        body = _seeded(functools.partial(_os_file, instance, version, name))
        out[name] = Resource(body, CT_JSON if name in _OS_JSON else CT_TEXT)
    listing = names[:1]
    if instance.user_data is not None:
        out["user_data"] = Resource(openstack_file(instance, version, "user_data"))
        listing.append("user_data")
    if OPENSTACK_VERSIONS.index(resolve_openstack_version(version)) >= OPENSTACK_VERSIONS.index(
        GRIZZLY
    ):
        listing.append("password")
    listing += names[1:]
    out[""] = Resource("\n".join(listing).encode())
    return out


# --------------------------------------------------------------------------------------------


def _nocloud_tree(instance: Instance) -> dict[str, Resource]:
    marker_tree: dict[str, bytes | Seeded] = {}
    seeded = _seeded(lambda urandom: render_nocloud(instance, urandom=urandom)["meta-data"])
    marker_tree["meta-data"] = seeded
    for name, data in render_nocloud(instance).items():
        if name != "meta-data":
            marker_tree[name] = data
    out = {name: Resource(body) for name, body in marker_tree.items()}
    out[""] = Resource("\n".join(marker_tree).encode())
    return out


@dataclass
class InstanceView:
    """An instance's servable paths, keyed by section then by relative path.

    Sections: ``ec2/<version>``, ``openstack/<version>``, ``nocloud``. ``latest`` shares the
    tree of the newest version (the bytes are the same; seeds are drawn per request anyway).
    The common sections are rendered at construction; old dated versions on first use.
    """

    instance: Instance
    imds: str = "optional"  # optional | required (IMDSv2 tokens)
    generation: int = 0
    sections: dict[str, dict[str, Resource]] = field(default_factory=dict)
    # request path -> (tree, resource, password version): the service's routing, kept
    routes: dict[str, tuple[str | None, Resource | None, str | None]] = field(
        default_factory=dict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    EAGER = ("ec2/latest", "openstack/latest", "nocloud")

    def __post_init__(self) -> None:
        for name in self.EAGER:
            self.section(name)

    @property
    def uuid(self) -> str:
        return self.instance.uuid

    def section(self, name: str) -> dict[str, Resource] | None:
        """The section's path map, rendered on first use; None for an unknown section."""
        found = self.sections.get(name)
        if found is not None:
            return found
        kind, _, version = name.partition("/")
        if kind == "ec2" and version in EC2_VERSIONS:
            if version == EC2_VERSIONS[-1]:
                return self.section("ec2/latest")
            tree = _ec2_tree(self.instance, version)
        elif kind == "ec2" and version == "latest":
            tree = _ec2_tree(self.instance, "latest")
        elif kind == "openstack" and (version in OPENSTACK_VERSIONS or version == "latest"):
            if version == OPENSTACK_VERSIONS[-1]:
                return self.section("openstack/latest")
            tree = _openstack_tree(self.instance, version)
        elif name == "nocloud":
            tree = _nocloud_tree(self.instance)
        else:
            return None
        with self._lock:
            return self.sections.setdefault(name, tree)

    def content(self, index: str) -> bytes | None:
        """``/openstack/content/NNNN``: an injected file's bytes."""
        if len(index) != 4 or not index.isdigit():
            return None
        number = int(index)
        if number >= len(self.instance.files):
            return None
        return self.instance.files[number].content
