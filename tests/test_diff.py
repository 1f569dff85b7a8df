"""`configdrive diff`: drives and specs compared per file and per JSON key (issue 13).

The expected differences come from the inputs each test chooses (a changed meta key, an
added file, new user data), never from reading back what diff printed for another case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_inspect import genisoimage, mkfs_vfat, seed_tree

from configdrive.lifecycle import Change, diff_json, diff_paths

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples/seed/instance.yaml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def build(tmp: Path, name: str, *flags: str) -> Path:
    out = tmp / name
    proc = cli("build", "--spec", str(SEED), "-o", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    return out


def spec_file(tmp: Path, filename: str, **changes: Any) -> Path:
    data = yaml.safe_load(SEED.read_text())
    data.update(changes)
    path = tmp / filename
    # the seed's file references are relative to its directory
    for key in ("user_data_file",):
        if key in data:
            data[key] = str(SEED.parent / data[key])
    for key in data.get("keys") or []:
        if "public_key_file" in key:
            key["public_key_file"] = str(SEED.parent / key["public_key_file"])
    files = data.get("files")
    if isinstance(files, dict):
        data["files"] = {
            dest: str(SEED.parent / src) if isinstance(src, str) else src
            for dest, src in files.items()
        }
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------------------
# diff_json


def test_diff_json_by_key_and_index() -> None:
    old = {"a": 1, "b": {"c": [1, 2, 3]}, "random_seed": "x", "gone": True}
    new = {"a": "1", "b": {"c": [1, 5]}, "random_seed": "y", "new": None}
    changes = {(c.key, c.change): (c.old, c.new) for c in diff_json(old, new)}
    assert changes == {
        ("a", Change.CHANGED): (1, "1"),  # a type change is a change
        ("b.c[1]", Change.CHANGED): (2, 5),
        ("b.c[2]", Change.REMOVED): (3, None),
        ("gone", Change.REMOVED): (True, None),
        ("new", Change.ADDED): (None, None),
    }
    assert diff_json({"x": [{"random_seed": 1}]}, {"x": [{"random_seed": 2}]}) == []


# ---------------------------------------------------------------------------------------------
# drives and specs


def test_two_builds_of_one_spec_are_equal_and_so_is_the_spec(tmp_path: Path) -> None:
    a, b = build(tmp_path, "a.iso"), build(tmp_path, "b.iso", "--format", "vfat")
    for left, right in ((a, b), (a, SEED), (SEED, b), (SEED, SEED)):
        proc = cli("diff", str(left), str(right))
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stdout
        assert "hold the same files (random_seed ignored)" in proc.stdout


def test_a_meta_change_is_reported_per_version_and_key(tmp_path: Path) -> None:
    a = build(tmp_path, "a.iso")
    b = build(tmp_path, "b.iso", "--meta", "role=db", "--meta", "tier=2")
    proc = cli("diff", str(a), str(b), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["equal"] is False and report["ignored_keys"] == ["random_seed"]
    changed = {f["path"]: f for f in report["files"]}
    # every OpenStack version's meta_data.json carries meta; nothing else changed
    assert set(changed) == {p for p in seed_tree() if p.endswith("/meta_data.json")}
    assert changed["openstack/latest/meta_data.json"]["keys"] == [
        {"key": "meta.role", "change": "changed", "old": "webservers", "new": "db"},
        {"key": "meta.tier", "change": "added", "new": "2"},
    ]
    text = cli("diff", str(a), str(b)).stdout
    assert 'changed  openstack/latest/meta_data.json\n  ~ meta.role: "webservers" -> "db"' in text


def test_added_files_and_opaque_changes(tmp_path: Path) -> None:
    extra = tmp_path / "motd"
    extra.write_text("hello\n")
    new_user_data = tmp_path / "ud"
    new_user_data.write_text("#cloud-config\nruncmd: [true]\n")
    a = build(tmp_path, "a.iso")
    b = build(tmp_path, "b.iso", "--file", f"/etc/motd={extra}", "--user-data", str(new_user_data))
    result = diff_paths(a, b)
    by_path = {f.path: f for f in result.files}
    assert by_path["openstack/content/0002"].change is Change.ADDED
    assert by_path["openstack/latest/user_data"].change is Change.CHANGED
    assert by_path["openstack/latest/user_data"].sizes[1] == len(new_user_data.read_bytes())
    files_key = [k for k in by_path["openstack/latest/meta_data.json"].keys if "files" in k.key]
    assert [(k.key, k.change) for k in files_key] == [("files[2]", Change.ADDED)]
    assert files_key[0].new == {"path": "/etc/motd", "content_path": "/content/0002"}
    removed = diff_paths(b, a)
    assert {f.path: f.change for f in removed.files}["openstack/content/0002"] is Change.REMOVED


@pytest.mark.tools
def test_third_party_drives_against_the_spec(tmp_path: Path, sh: Any) -> None:
    """genisoimage with nova's argv, and mkfs.vfat + mcopy, over the seed's tree: equal to
    the spec; after editing one key of the staged tree, exactly that key differs."""
    tree = seed_tree()
    assert diff_paths(genisoimage(tree, tmp_path, sh), SEED).equal
    assert diff_paths(SEED, mkfs_vfat(tree, tmp_path, sh)).equal
    md = json.loads(tree["openstack/latest/meta_data.json"])
    md["hostname"] = "renamed.novalocal"
    tree["openstack/latest/meta_data.json"] = json.dumps(md).encode()
    (tmp_path / "edited").mkdir()
    result = diff_paths(SEED, genisoimage(tree, tmp_path / "edited", sh))
    assert [(f.path, [(k.key, k.old, k.new) for k in f.keys]) for f in result.files] == [
        (
            "openstack/latest/meta_data.json",
            [("hostname", "myinstance.novalocal", "renamed.novalocal")],
        )
    ]


def test_nocloud_drives_compare_their_yaml_by_key(tmp_path: Path) -> None:
    a = build(tmp_path, "a.img", "--format", "nocloud")
    renamed = spec_file(tmp_path, "renamed.yaml", name="other")
    result = diff_paths(a, renamed)
    assert result.b.label == "cidata"  # the spec was rendered as a NoCloud seed
    by_path = {f.path: f for f in result.files}
    keys = {k.key: (k.old, k.new) for k in by_path["meta-data"].keys}
    assert keys["local-hostname"] == ("myinstance.novalocal", "other.novalocal")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.iso", str(SEED)], "error: cannot read missing.iso"),
        (["/etc/hostname", str(SEED)], "error: spec: /etc/hostname must hold a mapping"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = cli("diff", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr
