"""The one subprocess wrapper: runs a command, logs it, raises ToolError on failure."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from configdrive.errors import ConfigDriveError, ToolError

__all__ = ["find_tool", "run"]

log = logging.getLogger("configdrive.run")


def find_tool(name: str) -> str:
    """Return the absolute path of ``name`` on PATH (also /usr/sbin, /sbin), or raise."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise ConfigDriveError(
            f"required tool {name!r} is not installed",
            hint="run scripts/setup --system to install the Debian packages",
        )
    return found


def run(
    argv: Sequence[str | Path],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (no shell), capture output; log and raise ToolError when it fails."""
    args = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(args))
    proc = subprocess.run(
        args, input=input, capture_output=True, timeout=timeout, cwd=cwd, check=False
    )
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        log.error("command failed (%d): %s\n%s", proc.returncode, shlex.join(args), stderr)
        raise ToolError(args, proc.returncode, stderr)
    return proc
