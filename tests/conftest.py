"""Shared fixtures.

Tests that need a real tool never skip: the README's test command (scripts/test) installs
every tool, so a missing one is a set-up bug and the test fails with the fix in its message.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence

import pytest


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """``tool("xorriso")`` -> absolute path, or fail loudly naming the set-up step."""

    def find(name: str) -> str:
        path = _which(name)
        if path is None:
            pytest.fail(
                f"tool {name!r} is missing: run scripts/setup --system (scripts/test does)",
                pytrace=False,
            )
        return path

    return find


@pytest.fixture(scope="session")
def sh(tool: Callable[[str], str]) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run an external tool, fail the test with its stderr if it exits non-zero."""

    def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        args = [tool(argv[0]), *argv[1:]]
        proc = subprocess.run(args, capture_output=True, check=False)
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}",
                pytrace=False,
            )
        return proc

    return run


# ---------------------------------------------------------------------------------------------
# cloud-init as the judge: Debian 12's cloud-init 22.4.2, unpacked by scripts/setup --system

import importlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLOUDINIT_PATH = Path(
    os.environ.get(
        "CONFIGDRIVE_CLOUDINIT_PATH", ROOT / ".cache/cloud-init/root/usr/lib/python3/dist-packages"
    )
)


class CloudInit:
    """cloud-init's own readers, called the way its datasources call them."""

    def __init__(self, openstack: ModuleType, configdrive: ModuleType, nocloud: ModuleType,
                 helpers: ModuleType, version: str) -> None:  # fmt: skip
        self.openstack = openstack
        self.configdrive = configdrive
        self.nocloud = nocloud
        self.helpers = helpers
        self.version = version

    def read_config_drive(self, root: Path) -> dict[str, Any]:
        """DataSourceConfigDrive.read_config_drive: read_v2, then v1 (what it does per device)."""
        result: dict[str, Any] = self.configdrive.read_config_drive(str(root))
        return result

    def read_v2(self, root: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.openstack.ConfigDriveReader(str(root)).read_v2()
        return result

    def convert_net_json(self, network_json: Any, known_macs: dict[str, str]) -> Any:
        return self.openstack.convert_net_json(network_json, known_macs=known_macs)

    def nocloud_datasource(self, seed: Path, work: Path) -> Any:
        """A whole DataSourceNoCloud reading ``seed`` as /var/lib/cloud/seed/nocloud."""
        cloud_dir = work / "cloud"
        (cloud_dir / "seed").mkdir(parents=True, exist_ok=True)
        target = cloud_dir / "seed" / "nocloud"
        if not target.exists():
            target.symlink_to(seed.resolve())
        paths = self.helpers.Paths({"cloud_dir": str(cloud_dir), "run_dir": str(work / "run")})
        ds = self.nocloud.DataSourceNoCloud({}, None, paths)
        ok = ds.get_data()
        return ds if ok else None


@pytest.fixture(scope="session")
def cloudinit() -> CloudInit:
    marker = CLOUDINIT_PATH / "cloudinit" / "sources" / "DataSourceConfigDrive.py"
    if not marker.is_file():
        pytest.fail(
            f"cloud-init's reader is missing at {CLOUDINIT_PATH}: run scripts/setup --system "
            "(scripts/test does)",
            pytrace=False,
        )
    if str(CLOUDINIT_PATH) not in sys.path:
        sys.path.append(str(CLOUDINIT_PATH))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cloud-init 22.4.2 predates some 3.11 deprecations
        openstack = importlib.import_module("cloudinit.sources.helpers.openstack")
        configdrive = importlib.import_module("cloudinit.sources.DataSourceConfigDrive")
        nocloud = importlib.import_module("cloudinit.sources.DataSourceNoCloud")
        helpers = importlib.import_module("cloudinit.helpers")
        version = importlib.import_module("cloudinit.version").version_string()
    if not version.startswith("22.4.2"):
        pytest.fail(f"expected Debian 12's cloud-init 22.4.2, found {version}", pytrace=False)
    return CloudInit(openstack, configdrive, nocloud, helpers, version)


def extract_image(
    image: Path, dest: Path, run: Callable[..., subprocess.CompletedProcess[bytes]]
) -> Path:
    """Extract a drive image with an independent tool: xorriso (ISO) or mcopy (FAT)."""
    dest.mkdir(parents=True, exist_ok=True)
    with image.open("rb") as f:
        f.seek(32768 + 1)
        iso = f.read(5) == b"CD001"
    if iso:
        run(["xorriso", "-osirrox", "on", "-indev", str(image), "-extract", "/", str(dest)])
    else:
        run(["mcopy", "-s", "-n", "-i", str(image), "::/", str(dest)])
    for p in dest.rglob("*"):  # xorriso keeps the ISO's read-only modes
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


@pytest.fixture(scope="session")
def extract(sh: Callable[..., subprocess.CompletedProcess[bytes]]) -> Callable[[Path, Path], Path]:
    return lambda image, dest: extract_image(image, dest, sh)


@pytest.fixture(scope="session")
def libvirtd() -> str:
    """A running libvirtd with the QEMU driver (started by scripts/libvirtd if needed)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "libvirtd"), "start"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"libvirtd could not be started: {proc.stderr.strip()}", pytrace=False)
    return "qemu:///system"


# ---------------------------------------------------------------------------------------------
# the project's guest images (built with mmdebstrap once, then cached by content)


def _guest_image(variant: str) -> Any:
    from configdrive.image import ImageVariant, build_image

    return build_image(
        ImageVariant(variant), progress=lambda m: print(f"image: {m}", file=sys.stderr, flush=True)
    )


@pytest.fixture(scope="session")
def tuned_image() -> Any:
    """The tuned guest image: cloud-init reads the drive first, pollinate masked."""
    return _guest_image("tuned")


@pytest.fixture(scope="session")
def untuned_image() -> Any:
    """The untuned guest image: stock datasource list, pollinate enabled."""
    return _guest_image("untuned")
