"""Property test: random valid specs -> drive -> independent extraction -> cloud-init's reader
-> the same values."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configdrive import DriveFormat, Instance, build, instance_from_mapping

pytestmark = [pytest.mark.tools, pytest.mark.cloudinit]

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
meta_key = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
# names nova's API accepts: printable characters of the BMP, no whitespace at either end
nova_names = (
    st.text(st.characters(max_codepoint=0xFFFE, categories=("L", "M", "N", "P", "S", "Zs")),
            min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)  # fmt: skip


@st.composite
def ssh_keys(draw: st.DrawFn) -> str:
    blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + draw(st.binary(min_size=32, max_size=32))
    comment = draw(st.from_regex(r"[a-z0-9@.-]{0,20}", fullmatch=True))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}".strip()


@st.composite
def ports(draw: st.DrawFn, index: int) -> dict[str, Any]:
    third = draw(st.integers(0, 255))
    host = draw(st.integers(2, 250))
    subnet: dict[str, Any] = {
        "cidr": f"10.{index}.{third}.0/24",
        "ips": [f"10.{index}.{third}.{host}"],
    }
    if draw(st.booleans()):
        subnet["gateway"] = f"10.{index}.{third}.1"
    subnet["dhcp"] = draw(st.booleans())
    subnets = [subnet]
    if draw(st.booleans()):
        subnets.append({"cidr": f"fd00:{index}::/64", "ips": [f"fd00:{index}::{host:x}"]})
    mac = ":".join(f"{b:02x}" for b in [0xFA, 0x16, 0x3E, index, third, host])
    return {"mac": mac, "subnets": subnets, "mtu": draw(st.sampled_from([None, 1400, 1500, 9000]))}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": draw(nova_names),
        "meta": draw(st.dictionaries(meta_key, text, max_size=4)),
        "launch_index": draw(st.integers(0, 100)),
        "availability_zone": draw(st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True))),
    }  # fmt: skip
    if draw(st.booleans()):
        spec["user_data_base64"] = base64.b64encode(draw(st.binary(max_size=3000))).decode()
    if draw(st.booleans()):
        spec["keys"] = [
            {
                "name": draw(st.from_regex(r"[a-zA-Z0-9_-]{1,20}", fullmatch=True)),
                "public_key": draw(ssh_keys()),
            }
        ]
    paths = draw(st.lists(st.from_regex(r"/?[a-z0-9_]{1,12}(/[a-zA-Z0-9_.]{1,12}){0,3}", fullmatch=True), max_size=5, unique=True))  # fmt: skip
    spec["files"] = {
        p: {"content_base64": base64.b64encode(draw(st.binary(max_size=2048))).decode()}
        for p in paths
    }
    spec["networks"] = [draw(ports(i)) for i in range(draw(st.integers(0, 2)))]
    return spec


def check(inst: Instance, result: dict[str, Any]) -> None:
    md = result["metadata"]
    assert md["instance-id"] == inst.uuid
    assert md["local-hostname"] == inst.fqdn
    assert md["name"] == inst.name
    assert md.get("meta", {}) == dict(inst.meta)
    assert md["launch_index"] == inst.launch_index
    assert md["availability_zone"] == (inst.availability_zone or "nova")  # the host's zone
    assert len(md["random_seed"]) == 512
    assert result["userdata"] == (inst.user_data if inst.user_data is not None else "")
    assert result["files"] == {f.path: f.content for f in inst.files}
    assert md.get("public_keys", {}) == {k.name: k.public_key for k in inst.key_pairs}
    links = result["networkdata"].get("links", [])
    assert [link["ethernet_mac_address"] for link in links] == [p.mac for p in inst.ports]


@pytest.mark.parametrize("fmt", [DriveFormat.ISO9660, DriveFormat.VFAT], ids=str)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=specs())
def test_random_specs_round_trip_through_cloud_init(
    spec: dict[str, Any], fmt: DriveFormat, cloudinit: Any, extract: Callable[[Path, Path], Path]
) -> None:  # fmt: skip
    inst = instance_from_mapping(spec)
    work = Path(tempfile.mkdtemp(prefix="cd-prop-"))
    try:
        image = work / "disk.config"
        build(inst, image, fmt)
        result = cloudinit.read_config_drive(extract(image, work / "x"))
        check(inst, result)
    finally:
        shutil.rmtree(work)
