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
# cloud-init as the judge: Debian's cloud-init of bookworm (22.4), trixie (25.1) and sid (26.x),
# unpacked by scripts/setup-cloud-init, each run in a process of its own (tests/cloudinit_judge.py)

import base64  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLOUDINIT_CACHE = Path(os.environ.get("CONFIGDRIVE_CLOUDINIT_CACHE", ROOT / ".cache/cloud-init"))
JUDGE_SCRIPT = Path(__file__).resolve().parent / "cloudinit_judge.py"


@dataclass(frozen=True)
class CloudInitRelease:
    """One supported cloud-init: the Debian suite it comes from and the version it must be."""

    suite: str
    expect: str  # the version string's prefix: "22.4." or "26."

    @property
    def id(self) -> str:
        return "ci" + self.expect.rstrip(".")


# Debian 12 (the project's guest), Debian 13, and what comes next. Add a release here and every
# cloudinit-tier test runs against it too.
CLOUDINIT_RELEASES = (
    CloudInitRelease("bookworm", "22.4."),
    CloudInitRelease("trixie", "25.1."),
    CloudInitRelease("sid", "26."),
)


class CloudInitError(Exception):
    """An exception cloud-init raised in the judge; subclassed per cloud-init class name, so
    ``type(exc).__name__`` is cloud-init's (``BrokenMetadata``, ``NonReadable``, ...)."""

    kinds: dict[str, type[CloudInitError]] = {}

    def __init__(self, message: str, module: str, trace: str) -> None:
        super().__init__(message)
        self.module = module
        self.trace = trace

    @classmethod
    def named(cls, name: str) -> type[CloudInitError]:
        if name not in cls.kinds:
            cls.kinds[name] = type(name, (cls,), {})
        return cls.kinds[name]


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class CloudInit:
    """One cloud-init version's own code, called the way its datasources and stages call it,
    in a child process whose ``PYTHONPATH`` is that version's unpacked ``dist-packages``."""

    def __init__(self, release: CloudInitRelease, dist_packages: Path) -> None:
        self.release = release
        self.dist_packages = dist_packages
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": str(dist_packages), "PYTHONWARNINGS": "ignore"}
        self._proc = subprocess.Popen(
            [sys.executable, str(JUDGE_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        self.version: str = self.call("version")

    @property
    def root(self) -> Path:
        """The unpacked package's root (``usr/lib/cloud-init/ds-identify`` is under it)."""
        return self.dist_packages.parents[3]

    def __repr__(self) -> str:
        return f"CloudInit({self.version} from {self.release.suite})"

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def call(self, op: str, **args: Any) -> Any:
        """One request; cloud-init's exceptions come back as :class:`CloudInitError`s."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = {"op": op, **{k: str(v) if isinstance(v, Path) else v for k, v in args.items()}}
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            pytest.fail(
                f"the cloud-init {self.release.suite} judge died on {op}:\n{self._stderr_tail()}",
                pytrace=False,
            )
        answer = json.loads(line)
        if "error" in answer:
            err = answer["error"]
            raise CloudInitError.named(err["type"])(err["message"], err["module"], err["traceback"])
        return _decode(answer["ok"])

    def read_config_drive(self, root: Path) -> dict[str, Any]:
        """DataSourceConfigDrive.read_config_drive: read_v2, then v1 (what it does per device)."""
        result: dict[str, Any] = self.call("read_config_drive", path=root)
        return result

    def read_v2(self, root: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.call("read_v2", path=root)
        return result

    def convert_net_json(self, network_json: Any, known_macs: dict[str, str]) -> Any:
        return self.call("convert_net_json", network_json=network_json, known_macs=known_macs)

    def datasource(self, kind: str, work: Path, **args: Any) -> dict[str, Any]:
        """A whole datasource (ConfigDrive/NoCloud on ``seed``, OpenStack/Ec2 on ``url``)
        through ``get_data()``, and the network config ``stages.Init`` then picks with the
        guest's ``nics`` (name -> MAC): ``result["network"] = {"source", "config"}``."""
        result: dict[str, Any] = self.call("datasource", kind=kind, work=work, **args)
        return result

    def nocloud_datasource(self, seed: Path, work: Path, **args: Any) -> dict[str, Any] | None:
        """DataSourceNoCloud reading ``seed`` as /var/lib/cloud/seed/nocloud; None if refused."""
        result = self.datasource("NoCloud", work, seed=seed, **args)
        return result if result["found"] else None

    def render(
        self, network_config: Any, renderer: str, target: Path, nics: dict[str, str] | None = None
    ) -> dict[str, str]:
        """cloud-init's parser and ``renderer``'s output files (relative path -> text)."""
        files: dict[str, str] = self.call(
            "render", network_config=network_config, renderer=renderer, target=target, nics=nics
        )
        return files

    def read_conf_d(self, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.call("read_conf_d", path=path)
        return result

    def renderer_choice(self, path: Path) -> str:
        """The network renderer cloud-init selects with the cloud.cfg.d ``path``."""
        result: str = self.call("renderer_choice", path=path)
        return result

    def schema_errors(self, config: dict[str, Any]) -> list[str]:
        """cloud-init's own schema validation (strict) of a cloud-config."""
        result: list[str] = self.call("schema_errors", config=config)
        return result

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        if self._proc.poll() is None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def _installed_versions() -> dict[str, str]:
    listing = CLOUDINIT_CACHE / "versions"
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(None, 1) for line in lines if line.strip())


def _start_judge(release: CloudInitRelease) -> CloudInit:
    version = _installed_versions().get(release.suite)
    dist = CLOUDINIT_CACHE / str(version) / "root/usr/lib/python3/dist-packages"
    if version is None or not (dist / "cloudinit/sources/DataSourceConfigDrive.py").is_file():
        pytest.fail(
            f"cloud-init from Debian {release.suite} is not unpacked under {CLOUDINIT_CACHE}: "
            "run scripts/setup --system (scripts/test does), or scripts/setup-cloud-init",
            pytrace=False,
        )
    judge = CloudInit(release, dist)
    if not judge.version.startswith(release.expect):
        judge.close()
        pytest.fail(
            f"Debian {release.suite}'s cloud-init should be {release.expect}x, "
            f"found {judge.version} ({dist})",
            pytrace=False,
        )
    return judge


_JUDGES: dict[str, CloudInit] = {}


def cloudinit_judge(release: CloudInitRelease) -> CloudInit:
    """The (one, session-long) judge process of ``release``."""
    if release.suite not in _JUDGES:
        _JUDGES[release.suite] = _start_judge(release)
    return _JUDGES[release.suite]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for judge in _JUDGES.values():
        judge.close()
    _JUDGES.clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that asks for a cloud-init judge is in the ``cloudinit`` tier, marked or not.

    Files that boot guests run first (each file keeps its order): under ``pytest -n 2 --dist
    loadfile`` (scripts/test) the long guest files then start at once, in parallel, and the
    short files fill in around them instead of trailing after the last guest."""
    for item in items:
        if "cloudinit" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cloudinit)
    guests = {item.path for item in items if item.get_closest_marker("vm") is not None}
    items.sort(key=lambda item: item.path not in guests)  # stable: order kept within each


@pytest.fixture(scope="session", params=CLOUDINIT_RELEASES, ids=lambda r: r.id)
def cloudinit(request: pytest.FixtureRequest) -> CloudInit:
    """cloud-init as the judge; every test using it runs once per supported release."""
    return cloudinit_judge(request.param)


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
    from configdrive.guest.image import ImageVariant, build_image

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


_CLOUD_IMAGES: dict[tuple[str, str], Any] = {}


@pytest.fixture(scope="session")
def cloud_image() -> Any:
    """``cloud_image(os, variant="stock")``: a cloud-shaped image (configdrive.guest.cloudimage),
    built once (scripts/test builds them before pytest), then cached by content."""
    from configdrive.guest.cloudimage import CloudOS, CloudVariant, build_cloud_image

    def get(os_: str, variant: str = "stock") -> Any:
        if (os_, variant) not in _CLOUD_IMAGES:
            _CLOUD_IMAGES[os_, variant] = build_cloud_image(
                CloudOS(os_),
                CloudVariant(variant),
                progress=lambda m: print(f"image: {m}", file=sys.stderr, flush=True),
            )
        return _CLOUD_IMAGES[os_, variant]

    return get
