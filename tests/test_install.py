"""A plain ``pip install configdrive`` (no extras): the drive verbs work with the base
dependencies alone, and a verb that needs an extra says which, in one line, without a traceback.

Fast tier: what ``import configdrive.cli`` pulls in, and the CLI run by an interpreter that
can import nothing but the standard library, PyYAML and this checkout (``python -I -S``), so
the optional modules are really absent. ``tools`` tier: a fresh venv, ``pip install`` of the
checkout from PyPI's build backend, and every verb run from its console script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from configdrive.cli import make_parser
from configdrive.cli._common import EXTRA_MODULES

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed" / "instance.yaml"
# one line, naming the extra and the pip command; nothing else on stderr
MISSING = re.compile(
    r"error: (?P<what>.+) needs (?P<module>\w+), from the '(?P<extra>\w+)' extra, which is not "
    r"installed \(hint: pip install 'configdrive\[(?P=extra)\]'\)\n"
)


def verbs(parser: argparse.ArgumentParser | None = None) -> Iterator[list[str]]:
    """Every verb and sub-verb of the CLI, as argv prefixes (``["bench", "boot"]``…)."""
    parser = parser or make_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [name]
                for rest in verbs(sub):
                    yield [name, *rest]


def test_the_verb_list_is_complete() -> None:
    names = {" ".join(v) for v in verbs()}
    assert {"build", "inspect", "serve", "register", "proxy-chain", "bench boot"} <= names
    assert len(names) >= 15, names


def test_importing_the_cli_imports_no_optional_dependency() -> None:
    code = (
        "import json, sys, configdrive, configdrive.cli, configdrive.service, configdrive.benchmark\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(proc.stdout))
    assert "yaml" in loaded  # the probe sees third-party imports
    assert loaded.isdisjoint(EXTRA_MODULES), loaded & set(EXTRA_MODULES)


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """sys.path entries holding this checkout and PyYAML (linked alone, not its site-packages)."""
    only = tmp_path_factory.mktemp("only-yaml")
    (only / "yaml").symlink_to(Path(yaml.__file__).resolve().parent)
    return [str(ROOT), str(only)]


def _bare(
    bare_path: list[str], args: list[str], cwd: Path, code: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The CLI (or ``code``) under ``python -I -S``: no site-packages, only ``bare_path``."""
    setup = f"import sys; sys.path[:0] = {bare_path!r}\n"
    code = code or "from configdrive.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", setup + code, *args],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=60,
        env={"PATH": os.environ["PATH"], **env},
    )  # fmt: skip


def test_the_bare_interpreter_sees_yaml_but_no_extra(bare_path: list[str], tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, json\n"
        f"print(json.dumps([u.find_spec(m) is not None for m in {['yaml', *EXTRA_MODULES]!r}]))"
    )
    proc = _bare(bare_path, [], tmp_path, code)
    assert json.loads(proc.stdout) == [True] + [False] * len(EXTRA_MODULES), proc.stderr


def test_build_and_inspect_need_only_the_base_dependencies(
    bare_path: list[str], tmp_path: Path
) -> None:
    built = _bare(bare_path, ["build", "--spec", str(SEED), "-o", "disk.config"], tmp_path)
    assert built.returncode == 0, built.stderr
    inspected = _bare(bare_path, ["inspect", "disk.config"], tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert "verdict: OK" in inspected.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["serve"], "service"),
        (["serve", "--check"], "service"),
        (
            ["proxy-chain", "--hop", "haproxy", "--hop", "agent", "--upstream", "127.0.0.1:9"],
            "service",
        ),  # fmt: skip
        (["bench", "boot", "--modes", "floor", "--quick"], "bench"),
        (["bench", "storm", "--quick"], "bench"),
    ],
)
def test_a_verb_without_its_extra_names_it_in_one_line(
    argv: list[str], extra: str, bare_path: list[str], tmp_path: Path
) -> None:
    proc = _bare(bare_path, argv, tmp_path, CONFIGDRIVE_SHARED_SECRET="s")
    assert proc.returncode == 1, proc.stderr
    match = MISSING.fullmatch(proc.stderr)
    assert match is not None, proc.stderr
    assert match["extra"] == extra
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


# ---------------------------------------------------------------------------------------------
# the real thing: pip install of this checkout into a fresh venv, no extras


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh venv holding ``pip install <checkout>`` and nothing else."""
    home = tmp_path_factory.mktemp("plain-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    py = home / "bin" / "python"
    proc = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"pip install {ROOT} failed (needs PyPI for setuptools):\n{proc.stderr}")
    listed = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, check=True).stdout.lower()  # fmt: skip
    for module in ("aiohttp", "matplotlib", "libvirt-python", "uvloop", "psycopg"):
        assert f"{module}==" not in listed, f"{module} came with a plain install"
    return home / "bin"


def _run(bin_dir: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_dir / "configdrive", *args], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
    )  # fmt: skip


@pytest.mark.tools
def test_plain_install_builds_and_inspects_every_format(
    plain_install: Path, tmp_path: Path
) -> None:
    for fmt in ("iso9660", "vfat", "nocloud", "nocloud-vfat"):
        out = f"{fmt}.img"
        built = _run(plain_install, ["build", "--spec", str(SEED), "--format", fmt, "-o", out],
                     tmp_path)  # fmt: skip
        assert built.returncode == 0, built.stderr
        inspected = _run(plain_install, ["inspect", out], tmp_path)
        assert inspected.returncode == 0, inspected.stderr
        assert "verdict: OK" in inspected.stdout


@pytest.mark.tools
def test_plain_install_prints_help_for_every_verb(plain_install: Path, tmp_path: Path) -> None:
    for verb in [[], *verbs()]:
        proc = _run(plain_install, [*verb, "--help"], tmp_path)
        assert proc.returncode == 0, (verb, proc.stderr)
        assert proc.stdout.startswith("usage: configdrive"), verb
        assert proc.stderr == "", (verb, proc.stderr)


@pytest.mark.tools
def test_plain_install_service_verbs_name_their_extra(plain_install: Path, tmp_path: Path) -> None:
    for argv in (["serve"], ["proxy-chain", "--hop", "haproxy", "--hop", "agent",
                             "--upstream", "127.0.0.1:9"]):  # fmt: skip
        proc = _run(plain_install, argv, tmp_path, CONFIGDRIVE_SHARED_SECRET="s")
        assert proc.returncode == 1, proc.stderr
        match = MISSING.fullmatch(proc.stderr)
        assert match is not None, proc.stderr
        assert (match["module"], match["extra"]) == ("aiohttp", "service")


@pytest.mark.tools
def test_plain_install_registers_without_the_service_extra(
    plain_install: Path, tmp_path: Path
) -> None:
    """register is an HTTP client (urllib): it needs no extra; here it reaches a closed port."""
    proc = _run(plain_install, ["register", "--spec", str(SEED), "--url", "http://127.0.0.1:9"],
                tmp_path, CONFIGDRIVE_ADMIN_TOKEN="t")  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach the metadata service's admin API"), (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
