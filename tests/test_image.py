"""The guest image (configdrive.guest.image) and the report its check unit writes.

The ``vm`` tests build the tuned image (once; later runs use the cache) and boot it under QEMU
TCG with the seed example's config drive, with no network at all (``-nic none``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from configdrive.errors import ConfigDriveError, ToolError
from configdrive.guest.image import (
    CHECK_PREFIX,
    GuestImage,
    ImageVariant,
    build_image,
    image_key,
    parse_check_report,
    recipe,
)

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed"
BOOT_TIMEOUT = 360.0


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


# ---------------------------------------------------------------------------------------------
# the report parser (fast)

KEY_B64 = _b64("ssh-ed25519 AAAA key\n")
IFACES_B64 = _b64(b"auto lo\n")
BINARY_B64 = _b64(b"\x00\xff")
BLAME_B64 = _b64("30.1s cloud-init-local.service\n")
SAMPLE = "\n".join(
    [
        "[   52.1] cloud-init[612]: Cloud-init v. 22.4.2 finished",
        f"{CHECK_PREFIX}begin",  # an earlier, interrupted report: ignored
        f"{CHECK_PREFIX}hostname=stale",
        "Debian GNU/Linux 12 myinstance ttyS0\r",
        f"{CHECK_PREFIX}begin\r",
        f"{CHECK_PREFIX}uptime=61.25\r",
        f"{CHECK_PREFIX}hostname=myinstance",
        f"{CHECK_PREFIX}fqdn=",
        f"{CHECK_PREFIX}datasource=DataSourceConfigDrive [net,ver=2][source=/dev/sr0]",
        f"{CHECK_PREFIX}cloud_init_result=[]",
        f'{CHECK_PREFIX}datasource_list=["ConfigDrive", "None"]',
        f"{CHECK_PREFIX}authorized_keys_b64={KEY_B64}",
        f"{CHECK_PREFIX}user_authorized_keys_b64=",
        f"{CHECK_PREFIX}file /etc/network/interfaces {IFACES_B64}",
        f"{CHECK_PREFIX}file /with space/x {BINARY_B64}",
        f"{CHECK_PREFIX}file /known_hosts MISSING",
        f"{CHECK_PREFIX}wrote 0660 {IFACES_B64} /etc/network/interfaces",
        f"{CHECK_PREFIX}wrote 0600 {BINARY_B64} /with space/y",
        f"{CHECK_PREFIX}wrote - MISSING /gone",
        f"{CHECK_PREFIX}meta_b64={_b64(json.dumps({'role': 'webservers'}))}",
        f"{CHECK_PREFIX}runcmd_b64=!!not base64!!",
        f"{CHECK_PREFIX}pollinate=ActiveState=inactive,Result=success,UnitFileState=masked",
        f"{CHECK_PREFIX}pollinate_ran=no",
        "[   63.0] some kernel line",
        f"{CHECK_PREFIX}blame_b64={BLAME_B64}",
        f"{CHECK_PREFIX}end",
        f"{CHECK_PREFIX}hostname=after-end",
    ]
)


def test_parse_check_report_reads_the_last_report() -> None:
    report = parse_check_report(SAMPLE)
    assert report["complete"] is True
    assert report["begin"] is True
    assert report["uptime"] == 61.25
    assert report["hostname"] == "myinstance"
    assert report["fqdn"] == ""
    assert report["datasource"] == "DataSourceConfigDrive [net,ver=2][source=/dev/sr0]"
    assert report["cloud_init_result"] == []
    assert report["datasource_list"] == ["ConfigDrive", "None"]
    assert report["authorized_keys"] == report["authorized_keys_b64"] == "ssh-ed25519 AAAA key\n"
    assert report["user_authorized_keys"] == ""
    assert report["files"] == {
        "/etc/network/interfaces": b"auto lo\n",
        "/with space/x": b"\x00\xff",
        "/known_hosts": None,
    }
    assert report["written"] == {
        "/etc/network/interfaces": (0o660, b"auto lo\n"),
        "/with space/y": (0o600, b"\x00\xff"),
        "/gone": (None, None),
    }
    assert report["meta"] == {"role": "webservers"}
    assert report["runcmd"] is None  # not base64: undecodable, not an exception
    assert report["pollinate"].endswith("UnitFileState=masked")
    assert report["pollinate_ran"] == "no"
    assert report["blame"] == "30.1s cloud-init-local.service\n"


def test_parse_check_report_incomplete_and_empty() -> None:
    cut = SAMPLE.split(f"{CHECK_PREFIX}pollinate=")[0]
    report = parse_check_report(cut)
    assert report["complete"] is False
    assert report["hostname"] == "myinstance"
    assert parse_check_report("no report here\n") == {
        "complete": False,
        "begin": False,
        "files": {},
        "written": {},
    }


# ---------------------------------------------------------------------------------------------
# recipe, key, kernel choice (fast)


def test_key_depends_on_variant_and_guest_files() -> None:
    tuned, untuned = image_key(ImageVariant.TUNED), image_key(ImageVariant.UNTUNED)
    assert tuned != untuned and len(tuned) == 64
    assert image_key(ImageVariant.TUNED) == tuned  # deterministic
    data = recipe(ImageVariant.TUNED)
    assert set(data["guest_files"]) == {"configdrive-check.sh", "configdrive-check.service"}
    assert "tune_settings" in data and "tune_settings" not in recipe(ImageVariant.UNTUNED)


def test_kernel_for_machine() -> None:
    p = Path("/img")
    image = GuestImage(
        ImageVariant.TUNED, p / "disk.qcow2", p / "k", p / "i", p / "kg", p / "ig", "x", "0" * 64
    )
    assert image.kernel_for("pc") == (p / "k", p / "i")
    assert image.kernel_for("pc-i440fx-7.2") == (p / "k", p / "i")
    assert image.kernel_for("q35") == (p / "kg", p / "ig")
    assert image.kernel_for("pc-q35-7.2") == (p / "kg", p / "ig")
    assert image.directory == p


def test_incomplete_entry_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder without its manifest (an interrupted build) is never taken for an image."""
    key = image_key(ImageVariant.TUNED)
    entry = tmp_path / f"tuned-{key[:16]}"
    entry.mkdir()
    for name in ("disk.qcow2", "vmlinuz-cloud", "initrd.img-cloud"):
        (entry / name).write_bytes(b"x")
    monkeypatch.setenv("PATH", "")  # so the build stops at the tool check
    with pytest.raises(ConfigDriveError) as err:
        build_image(ImageVariant.TUNED, tmp_path)
    assert "scripts/setup --system" in (err.value.hint or "")


def test_missing_tools_name_the_setup_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigDriveError, match="is not installed") as err:
        build_image(ImageVariant.UNTUNED, tmp_path / "cache")
    assert err.value.hint is not None and "scripts/setup --system" in err.value.hint
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------
# the real image, booted under TCG


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (inode, size, mtime_ns) of every entry of ``directory`` and the directory."""
    entries = {".": directory.stat()}
    entries.update({p.name: p.stat() for p in directory.iterdir()})
    return {name: (st.st_ino, st.st_size, st.st_mtime_ns) for name, st in entries.items()}


@pytest.mark.vm
def test_image_is_cached(tuned_image: GuestImage) -> None:
    """A second build_image of a built image runs no build step: it finds no tool (PATH is
    empty and mmdebstrap lives in /usr/bin), leaves every file of the cache entry as it was
    (inode, size, mtime) and starts no temporary build folder. How long either call takes is
    not checked here (the build's step timings are in its manifest)."""
    image = tuned_image
    before = _snapshot(image.directory)
    said: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", "")
        again = build_image(ImageVariant.TUNED, image.directory.parent, progress=said.append)
    assert again == image
    assert said == [f"{image.directory.name}: cached at {image.directory}"]
    assert _snapshot(image.directory) == before
    assert not list(image.directory.parent.glob(f".tmp-{image.directory.name}-*"))
    manifest = json.loads((image.directory / "manifest.json").read_text())
    assert manifest["key"] == image.key and manifest["variant"] == "tuned"
    assert image.directory.name == f"tuned-{image.key[:16]}"
    for path in (
        image.qcow2,
        image.kernel,
        image.initrd,
        image.kernel_generic,
        image.initrd_generic,
    ):
        assert path.is_file() and path.stat().st_size > 1_000_000, path
    assert image.kernel != image.kernel_generic


@pytest.mark.vm
def test_failed_step_raises_tool_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mmdebstrap against a mirror that refuses connections: ToolError with its argv, and no
    image folder or temp folder left behind."""
    import configdrive.guest.image as image_mod

    monkeypatch.setattr(image_mod, "MIRRORS", ("deb http://127.0.0.1:9/debian bookworm main",))
    with pytest.raises(ToolError) as err:
        build_image(ImageVariant.UNTUNED, tmp_path)
    assert Path(err.value.argv[0]).name == "mmdebstrap"
    assert "deb http://127.0.0.1:9/debian bookworm main" in err.value.argv
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
