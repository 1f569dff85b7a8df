"""Reproducible drives: the same spec (with its uuid) and the same SOURCE_DATE_EPOCH give drives
that differ only inside the random_seed values, in every format; with a fixed urandom they are
byte-identical. Builds run in separate processes with different hash seeds, so nothing may
depend on set or dict iteration order either.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from configdrive import instance_from_mapping, load_spec, read_drive

ROOT = Path(__file__).resolve().parent.parent
SPECS = {
    "seed": ROOT / "examples" / "seed" / "instance.yaml",
    "dual-stack": ROOT / "examples" / "dual-stack.yaml",
}
FORMATS = ("iso9660", "vfat", "nocloud", "nocloud-vfat")
EPOCH = 1_914_725_107  # 2030-09-04 01:25:07 UTC: an odd second, which VFAT cannot hold
# a random_seed value as nova writes it: 512 bytes, base64 (684 characters, one "=")
SEED = re.compile(rb'"random_seed": "([A-Za-z0-9+/]{683}=)"')


def _cli(args: list[str], cwd: Path, hash_seed: str) -> None:
    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": str(EPOCH),
        "PYTHONHASHSEED": hash_seed,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run([sys.executable, "-m", "configdrive", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _seed_spans(image: bytes) -> list[tuple[int, int]]:
    spans = [m.span(1) for m in SEED.finditer(image)]
    for start, end in spans:
        assert len(base64.b64decode(image[start:end], validate=True)) == 512
    return spans


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("spec", list(SPECS))
def test_two_builds_differ_only_in_random_seed(spec: str, fmt: str, tmp_path: Path) -> None:
    for name, hash_seed in (("a.img", "1"), ("b.img", "2")):
        _cli(["build", "--spec", str(SPECS[spec]), "--format", fmt, "-o", name], tmp_path,
             hash_seed)  # fmt: skip
    a, b = (tmp_path / "a.img").read_bytes(), (tmp_path / "b.img").read_bytes()
    assert len(a) == len(b)
    # every random_seed on the drive is found in the raw image, at the same place in both
    files = read_drive(tmp_path / "a.img").files
    seeded = sum(content.count(b'"random_seed": "') for content in files.values())
    spans = _seed_spans(a)
    assert seeded > 0 and len(spans) == seeded, (seeded, len(spans))
    assert _seed_spans(b) == spans
    masked_a, masked_b = bytearray(a), bytearray(b)
    for start, end in spans:
        assert a[start:end] != b[start:end]  # each seed is fresh
        masked_a[start:end] = masked_b[start:end] = bytes(end - start)
    if masked_a != masked_b:
        outside = [i for i in range(len(a)) if masked_a[i] != masked_b[i]]
        pytest.fail(f"{len(outside)} bytes differ outside random_seed, first at {outside[0]}")


BUILD = """
import sys
from configdrive import DriveFormat, build, instance_from_mapping, load_spec
data, base = load_spec(sys.argv[1])
build(instance_from_mapping(data, base=base), sys.argv[3], DriveFormat(sys.argv[2]),
      urandom=lambda n: bytes(i % 251 for i in range(n)))
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_with_a_fixed_urandom_two_builds_are_byte_identical(fmt: str, tmp_path: Path) -> None:
    images = []
    for name, hash_seed in (("a.img", "3"), ("b.img", "4")):
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "PYTHONHASHSEED": hash_seed,
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        subprocess.run([sys.executable, "-c", BUILD, str(SPECS["dual-stack"]), fmt, name],
                       cwd=tmp_path, env=env, check=True)  # fmt: skip
        images.append((tmp_path / name).read_bytes())
    assert images[0] == images[1]
    fixed = base64.b64encode(bytes(i % 251 for i in range(512)))
    spans = _seed_spans(images[0])
    assert spans and all(images[0][start:end] == fixed for start, end in spans)


def test_a_spec_without_ids_derives_them_from_its_uuid() -> None:
    data, base = load_spec(SPECS["seed"])
    data["networks"] = [{"mac": "fa:16:3e:00:00:09", "subnets": []}] * 2
    assert "project_id" not in data and "id" not in data["networks"][0]
    one, two = (instance_from_mapping(data, base=base) for _ in range(2))
    assert one.project_id == two.project_id and re.fullmatch(r"[0-9a-f]{32}", one.project_id)
    assert [p.id for p in one.ports] == [p.id for p in two.ports]
    assert [p.network_id for p in one.ports] == [p.network_id for p in two.ports]
    assert len({one.ports[0].id, one.ports[1].id, one.ports[0].network_id}) == 3
    other = instance_from_mapping({**data, "uuid": "0b4c5f3a-1111-4222-8333-944455556666"},
                                  base=base)  # fmt: skip
    assert other.project_id != one.project_id
    assert {p.id for p in other.ports}.isdisjoint(p.id for p in one.ports)


def test_a_spec_without_uuid_is_a_new_instance_each_build() -> None:
    data, base = load_spec(SPECS["seed"])
    del data["uuid"]
    one, two = (instance_from_mapping(data, base=base) for _ in range(2))
    assert one.uuid != two.uuid and one.project_id != two.project_id


@pytest.mark.tools
def test_every_format_carries_the_one_build_time(
    tool: Callable[[str], str], tmp_path: Path
) -> None:
    """ISO9660 (volume descriptor, read by xorriso) and VFAT (entries, read by mtools) built
    with the same SOURCE_DATE_EPOCH carry that instant; VFAT holds it to 2 seconds."""
    when = datetime.fromtimestamp(EPOCH, UTC)
    env = {**os.environ, "TZ": "UTC"}
    for fmt in FORMATS:
        _cli(["build", "--spec", str(SPECS["seed"]), "--format", fmt, "-o", fmt], tmp_path, "0")
        if fmt.endswith("vfat"):
            out = tmp_path / f"{fmt}.out"
            out.mkdir()
            subprocess.run([tool("mcopy"), "-s", "-m", "-i", fmt, "::/", str(out)], cwd=tmp_path,
                           env=env, check=True, capture_output=True)  # fmt: skip
            mtimes = {p.stat().st_mtime for p in out.rglob("*")}
            assert mtimes == {EPOCH - EPOCH % 2}, (fmt, mtimes)
        else:
            info = subprocess.run([tool("xorriso"), "-indev", fmt, "-pvd_info"], cwd=tmp_path,
                                  env=env, check=True, capture_output=True).stdout.decode()  # fmt: skip
            assert f"Creation Time: {when:%Y%m%d%H%M%S}00" in info, info
