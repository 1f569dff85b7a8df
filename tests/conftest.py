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
